//! Q4_1: 32 weights as 4-bit levels with an f16 scale and f16 minimum (20 bytes).

use super::kquant::weighted_asymmetric_blocks;
use super::{QuantType, VecDot};
use crate::fp::{f16_to_f32, f32_to_f16, trunc_i8};
use crate::ggml_block;
use crate::types::GgmlType;
use half::f16;

pub const QK4_1: usize = 32;

#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct BlockQ4_1 {
    /// Scale.
    pub d: f16,
    /// Minimum; value = q * d + m.
    pub m: f16,
    /// Low nibbles hold elements 0..16, high nibbles 16..32.
    pub qs: [u8; QK4_1 / 2],
}
ggml_block!(BlockQ4_1, GgmlType::Q4_1);

pub struct Q4_1;

impl QuantType for Q4_1 {
    const TYPE: GgmlType = GgmlType::Q4_1;
    const VEC_DOT_TYPE: GgmlType = GgmlType::Q8_1;
    type Block = BlockQ4_1;

    fn quantize_ref(x: &[f32], y: &mut [BlockQ4_1]) {
        for (xb, yb) in x.chunks_exact(QK4_1).zip(y.iter_mut()) {
            let (mut min, mut max) = (f32::MAX, -f32::MAX);
            for &v in xb {
                if v < min {
                    min = v;
                }
                if v > max {
                    max = v;
                }
            }
            let d = (max - min) / 15.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            yb.d = f32_to_f16(d);
            yb.m = f32_to_f16(min);
            for j in 0..QK4_1 / 2 {
                let lo = (trunc_i8((xb[j] - min) * id + 0.5) as u8).min(15);
                let hi = (trunc_i8((xb[j + QK4_1 / 2] - min) * id + 0.5) as u8).min(15);
                yb.qs[j] = lo | (hi << 4);
            }
        }
    }

    const WEIGHTED: bool = true;

    fn quantize_row_weighted(x: &[f32], qw: &[f32], y: &mut [BlockQ4_1]) {
        weighted_asymmetric_blocks(x, qw, 15, |i, d, m, levels| {
            let yb = &mut y[i];
            yb.d = f32_to_f16(d);
            yb.m = f32_to_f16(m);
            for j in 0..16 {
                yb.qs[j] = levels[j] | (levels[j + 16] << 4);
            }
        });
    }

    fn dequantize(x: &[BlockQ4_1], y: &mut [f32]) {
        for (xb, yb) in x.iter().zip(y.chunks_exact_mut(QK4_1)) {
            let d = f16_to_f32(xb.d);
            let m = f16_to_f32(xb.m);
            for j in 0..QK4_1 / 2 {
                yb[j] = (xb.qs[j] & 0x0f) as f32 * d + m;
                yb[j + QK4_1 / 2] = (xb.qs[j] >> 4) as f32 * d + m;
            }
        }
    }
}

impl VecDot for Q4_1 {
    type Act = super::Q8_1;
    fn vec_dot(w: &[BlockQ4_1], x: &[super::BlockQ8_1]) -> f32 {
        let mut acc = super::Lanes8::default();
        let mut summs = 0.0f32;
        for (a, b) in w.iter().zip(x) {
            summs = f16_to_f32(a.m).mul_add(f16_to_f32(b.s), summs);
            let q = |i: usize| {
                if i < 16 {
                    (a.qs[i] & 0x0f) as i32
                } else {
                    (a.qs[i - 16] >> 4) as i32
                }
            };
            acc.add_block(f16_to_f32(a.d) * f16_to_f32(b.d), |i| q(i) * b.qs[i] as i32);
        }
        acc.sum() + summs
    }
}
