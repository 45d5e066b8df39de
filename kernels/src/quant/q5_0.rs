//! Q5_0: 32 weights as 5-bit signed levels times one f16 scale (22 bytes).

use super::kquant::{importance_weights, make_qx_quants, row_sigma2};
use super::{QuantType, VecDot};
use crate::fp::{f16_to_f32, f32_to_f16, trunc_i8};
use crate::ggml_block;
use crate::types::GgmlType;
use half::f16;

pub const QK5_0: usize = 32;

#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct BlockQ5_0 {
    /// Scale; value = (q - 16) * d.
    pub d: f16,
    /// Fifth bits, little-endian u32: bit j for element j.
    pub qh: [u8; 4],
    /// Low four bits: low nibbles elements 0..16, high nibbles 16..32.
    pub qs: [u8; QK5_0 / 2],
}
ggml_block!(BlockQ5_0, GgmlType::Q5_0);

/// Packs 5-bit levels into the nibble array and the high-bit word.
pub(super) fn pack5(levels: impl Fn(usize) -> u8, qs: &mut [u8; 16], qh: &mut [u8; 4]) {
    let mut h = 0u32;
    for j in 0..16 {
        let (a, b) = (levels(j), levels(j + 16));
        qs[j] = (a & 0x0f) | ((b & 0x0f) << 4);
        h |= (((a & 0x10) >> 4) as u32) << j;
        h |= (((b & 0x10) >> 4) as u32) << (j + 16);
    }
    *qh = h.to_le_bytes();
}

/// The 5-bit levels of element j and j + 16.
#[inline]
pub(super) fn unpack5(qs: &[u8; 16], qh: u32, j: usize) -> (u8, u8) {
    let h0 = (((qh >> j) << 4) & 0x10) as u8;
    let h1 = ((qh >> (j + 12)) & 0x10) as u8;
    ((qs[j] & 0x0f) | h0, (qs[j] >> 4) | h1)
}

pub struct Q5_0;

impl QuantType for Q5_0 {
    const TYPE: GgmlType = GgmlType::Q5_0;
    const VEC_DOT_TYPE: GgmlType = GgmlType::Q8_0;
    type Block = BlockQ5_0;

    fn quantize_ref(x: &[f32], y: &mut [BlockQ5_0]) {
        for (xb, yb) in x.chunks_exact(QK5_0).zip(y.iter_mut()) {
            let (mut amax, mut max) = (0.0f32, 0.0f32);
            for &v in xb {
                if amax < v.abs() {
                    amax = v.abs();
                    max = v;
                }
            }
            let d = max / -16.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            yb.d = f32_to_f16(d);
            let level = |j: usize| (trunc_i8(xb[j] * id + 16.5) as u8).min(31);
            pack5(level, &mut yb.qs, &mut yb.qh);
        }
    }

    const WEIGHTED: bool = true;

    fn quantize_row_weighted(x: &[f32], qw: &[f32], y: &mut [BlockQ5_0]) {
        let sigma2 = row_sigma2(x);
        let (mut weight, mut levels) = ([0.0f32; QK5_0], [0i8; QK5_0]);
        for (i, (xb, yb)) in x.chunks_exact(QK5_0).zip(y.iter_mut()).enumerate() {
            importance_weights(xb, &qw[QK5_0 * i..QK5_0 * (i + 1)], sigma2, &mut weight);
            yb.d = f32_to_f16(make_qx_quants(16, xb, &mut levels, Some(&weight)));
            pack5(|j| levels[j] as u8, &mut yb.qs, &mut yb.qh);
        }
    }

    fn dequantize(x: &[BlockQ5_0], y: &mut [f32]) {
        for (xb, yb) in x.iter().zip(y.chunks_exact_mut(QK5_0)) {
            let d = f16_to_f32(xb.d);
            let qh = u32::from_le_bytes(xb.qh);
            for j in 0..QK5_0 / 2 {
                let (a, b) = unpack5(&xb.qs, qh, j);
                yb[j] = (a as i32 - 16) as f32 * d;
                yb[j + QK5_0 / 2] = (b as i32 - 16) as f32 * d;
            }
        }
    }
}

impl VecDot for Q5_0 {
    type Act = super::Q8_0;
    fn vec_dot(w: &[BlockQ5_0], x: &[super::BlockQ8_0]) -> f32 {
        let mut acc = super::Lanes8::default();
        for (a, b) in w.iter().zip(x) {
            let qh = u32::from_le_bytes(a.qh);
            let mut q = [0i32; 32];
            for j in 0..QK5_0 / 2 {
                let (lo, hi) = unpack5(&a.qs, qh, j);
                (q[j], q[j + 16]) = (lo as i32 - 16, hi as i32 - 16);
            }
            acc.add_block(f16_to_f32(a.d) * f16_to_f32(b.d), |i| q[i] * b.qs[i] as i32);
        }
        acc.sum()
    }
}
