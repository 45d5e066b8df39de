//! Q8_1: the activation type paired with Q4_1/Q5_1: int8 values, an f16
//! scale and the f16 of `d * sum(q)` (36 bytes).

use super::q8_0::{q8_act, q8_scale};
use super::QuantType;
use crate::fp::{f16_to_f32, f32_to_f16, round_away};
use crate::ggml_block;
use crate::types::GgmlType;
use half::f16;

pub const QK8_1: usize = 32;

#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct BlockQ8_1 {
    /// Scale; value = q * d.
    pub d: f16,
    /// d * sum(qs).
    pub s: f16,
    pub qs: [i8; QK8_1],
}
ggml_block!(BlockQ8_1, GgmlType::Q8_1);

pub struct Q8_1;

impl QuantType for Q8_1 {
    const TYPE: GgmlType = GgmlType::Q8_1;
    const VEC_DOT_TYPE: GgmlType = GgmlType::Q8_1;
    type Block = BlockQ8_1;

    fn quantize_ref(x: &[f32], y: &mut [BlockQ8_1]) {
        for (xb, yb) in x.chunks_exact(QK8_1).zip(y.iter_mut()) {
            let (d, id) = q8_scale(xb);
            yb.d = f32_to_f16(d);
            let mut sum = 0i32;
            for (q, &v) in yb.qs.iter_mut().zip(xb) {
                *q = round_away(v * id) as i8;
                sum += *q as i32;
            }
            yb.s = f32_to_f16(sum as f32 * d);
        }
    }

    #[inline(always)]
    fn quantize_act(x: &[f32], y: &mut [BlockQ8_1]) {
        for (xb, yb) in x.chunks_exact(QK8_1).zip(y.iter_mut()) {
            let d = q8_act(xb, &mut yb.qs);
            yb.d = f32_to_f16(d);
            let sum: i32 = yb.qs.iter().map(|&q| q as i32).sum();
            yb.s = f32_to_f16(d * sum as f32);
        }
    }

    fn dequantize(x: &[BlockQ8_1], y: &mut [f32]) {
        for (xb, yb) in x.iter().zip(y.chunks_exact_mut(QK8_1)) {
            let d = f16_to_f32(xb.d);
            for (o, &q) in yb.iter_mut().zip(&xb.qs) {
                *o = q as f32 * d;
            }
        }
    }
}
