//! Q4_0: 32 weights as 4-bit signed levels times one f16 scale (18 bytes).

use super::kquant::{importance_weights, make_qx_quants, row_sigma2};
use super::{QuantType, VecDot};
use crate::fp::{f16_to_f32, f32_to_f16, trunc_i8};
use crate::ggml_block;
use crate::types::GgmlType;
use half::f16;

pub const QK4_0: usize = 32;

#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct BlockQ4_0 {
    /// Scale.
    pub d: f16,
    /// Low nibbles hold elements 0..16, high nibbles 16..32; value = (q - 8) * d.
    pub qs: [u8; QK4_0 / 2],
}
ggml_block!(BlockQ4_0, GgmlType::Q4_0);

pub struct Q4_0;

impl QuantType for Q4_0 {
    const TYPE: GgmlType = GgmlType::Q4_0;
    const VEC_DOT_TYPE: GgmlType = GgmlType::Q8_0;
    type Block = BlockQ4_0;

    fn quantize_ref(x: &[f32], y: &mut [BlockQ4_0]) {
        for (xb, yb) in x.chunks_exact(QK4_0).zip(y.iter_mut()) {
            // the value of largest magnitude, keeping its sign (first wins ties)
            let (mut amax, mut max) = (0.0f32, 0.0f32);
            for &v in xb {
                if amax < v.abs() {
                    amax = v.abs();
                    max = v;
                }
            }
            let d = max / -8.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            yb.d = f32_to_f16(d);
            for j in 0..QK4_0 / 2 {
                let lo = (trunc_i8(xb[j] * id + 8.5) as u8).min(15);
                let hi = (trunc_i8(xb[j + QK4_0 / 2] * id + 8.5) as u8).min(15);
                yb.qs[j] = lo | (hi << 4);
            }
        }
    }

    const WEIGHTED: bool = true;

    fn quantize_row_weighted(x: &[f32], qw: &[f32], y: &mut [BlockQ4_0]) {
        let sigma2 = row_sigma2(x);
        let (mut weight, mut levels) = ([0.0f32; QK4_0], [0i8; QK4_0]);
        for (i, (xb, yb)) in x.chunks_exact(QK4_0).zip(y.iter_mut()).enumerate() {
            importance_weights(xb, &qw[QK4_0 * i..QK4_0 * (i + 1)], sigma2, &mut weight);
            yb.d = f32_to_f16(make_qx_quants(8, xb, &mut levels, Some(&weight)));
            for j in 0..QK4_0 / 2 {
                yb.qs[j] = levels[j] as u8 | ((levels[j + QK4_0 / 2] as u8) << 4);
            }
        }
    }

    fn dequantize(x: &[BlockQ4_0], y: &mut [f32]) {
        for (xb, yb) in x.iter().zip(y.chunks_exact_mut(QK4_0)) {
            let d = f16_to_f32(xb.d);
            for j in 0..QK4_0 / 2 {
                yb[j] = ((xb.qs[j] & 0x0f) as i32 - 8) as f32 * d;
                yb[j + QK4_0 / 2] = ((xb.qs[j] >> 4) as i32 - 8) as f32 * d;
            }
        }
    }
}

impl VecDot for Q4_0 {
    type Act = super::Q8_0;
    fn vec_dot(w: &[BlockQ4_0], x: &[super::BlockQ8_0]) -> f32 {
        let mut acc = super::Lanes8::default();
        for (a, b) in w.iter().zip(x) {
            let q = |i: usize| {
                if i < 16 {
                    (a.qs[i] & 0x0f) as i32 - 8
                } else {
                    (a.qs[i - 16] >> 4) as i32 - 8
                }
            };
            acc.add_block(f16_to_f32(a.d) * f16_to_f32(b.d), |i| q(i) * b.qs[i] as i32);
        }
        acc.sum()
    }
}
