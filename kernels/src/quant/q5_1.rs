//! Q5_1: 32 weights as 5-bit levels with an f16 scale and minimum (24 bytes).

use super::kquant::weighted_asymmetric_blocks;
use super::q5_0::{pack5, unpack5};
use super::{QuantType, VecDot};
use crate::fp::{f16_to_f32, f32_to_f16};
use crate::ggml_block;
use crate::types::GgmlType;
use half::f16;

pub const QK5_1: usize = 32;

#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct BlockQ5_1 {
    /// Scale.
    pub d: f16,
    /// Minimum; value = q * d + m.
    pub m: f16,
    /// Fifth bits, little-endian u32: bit j for element j.
    pub qh: [u8; 4],
    /// Low four bits: low nibbles elements 0..16, high nibbles 16..32.
    pub qs: [u8; QK5_1 / 2],
}
ggml_block!(BlockQ5_1, GgmlType::Q5_1);

pub struct Q5_1;

impl QuantType for Q5_1 {
    const TYPE: GgmlType = GgmlType::Q5_1;
    const VEC_DOT_TYPE: GgmlType = GgmlType::Q8_1;
    type Block = BlockQ5_1;

    fn quantize_ref(x: &[f32], y: &mut [BlockQ5_1]) {
        for (xb, yb) in x.chunks_exact(QK5_1).zip(y.iter_mut()) {
            let (mut min, mut max) = (f32::MAX, -f32::MAX);
            for &v in xb {
                if v < min {
                    min = v;
                }
                if v > max {
                    max = v;
                }
            }
            let d = (max - min) / 31.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            yb.d = f32_to_f16(d);
            yb.m = f32_to_f16(min);
            // ggml converts straight to uint8 here (no clamp to 31)
            let level = |j: usize| ((xb[j] - min) * id + 0.5) as u8;
            pack5(level, &mut yb.qs, &mut yb.qh);
        }
    }

    const WEIGHTED: bool = true;

    fn quantize_row_weighted(x: &[f32], qw: &[f32], y: &mut [BlockQ5_1]) {
        weighted_asymmetric_blocks(x, qw, 31, |i, d, m, levels| {
            let yb = &mut y[i];
            yb.d = f32_to_f16(d);
            yb.m = f32_to_f16(m);
            pack5(|j| levels[j], &mut yb.qs, &mut yb.qh);
        });
    }

    fn dequantize(x: &[BlockQ5_1], y: &mut [f32]) {
        for (xb, yb) in x.iter().zip(y.chunks_exact_mut(QK5_1)) {
            let d = f16_to_f32(xb.d);
            let m = f16_to_f32(xb.m);
            let qh = u32::from_le_bytes(xb.qh);
            for j in 0..QK5_1 / 2 {
                let (a, b) = unpack5(&xb.qs, qh, j);
                yb[j] = a as f32 * d + m;
                yb[j + QK5_1 / 2] = b as f32 * d + m;
            }
        }
    }
}

impl VecDot for Q5_1 {
    type Act = super::Q8_1;
    fn vec_dot(w: &[BlockQ5_1], x: &[super::BlockQ8_1]) -> f32 {
        let mut acc = super::Lanes8::default();
        let mut summs = 0.0f32;
        for (a, b) in w.iter().zip(x) {
            summs = f16_to_f32(a.m).mul_add(f16_to_f32(b.s), summs);
            let qh = u32::from_le_bytes(a.qh);
            let mut q = [0i32; 32];
            for j in 0..QK5_1 / 2 {
                let (lo, hi) = unpack5(&a.qs, qh, j);
                (q[j], q[j + 16]) = (lo as i32, hi as i32);
            }
            acc.add_block(f16_to_f32(a.d) * f16_to_f32(b.d), |i| q[i] * b.qs[i] as i32);
        }
        acc.sum() + summs
    }
}
