//! BF16: the top half of an f32, rounded to nearest even as ggml does.

use super::{QuantType, VecDot};
use crate::fp;
use crate::types::GgmlType;

pub struct Bf16;

impl QuantType for Bf16 {
    const TYPE: GgmlType = GgmlType::BF16;
    const VEC_DOT_TYPE: GgmlType = GgmlType::F32;
    type Block = half::bf16;

    fn quantize_ref(x: &[f32], y: &mut [half::bf16]) {
        for (o, &v) in y.iter_mut().zip(x) {
            *o = fp::f32_to_bf16(v);
        }
    }

    fn dequantize(x: &[half::bf16], y: &mut [f32]) {
        for (o, &v) in y.iter_mut().zip(x) {
            *o = fp::bf16_to_f32(v);
        }
    }
}

impl VecDot for Bf16 {
    type Act = super::F32;
    fn vec_dot(w: &[half::bf16], x: &[f32]) -> f32 {
        let mut acc = [0.0f32; 8];
        for (wc, xc) in w.chunks(8).zip(x.chunks(8)) {
            for i in 0..wc.len() {
                acc[i] = fp::bf16_to_f32(wc[i]).mul_add(xc[i], acc[i]);
            }
        }
        acc.iter().sum()
    }
}
