//! BF16: the top half of an f32, rounded to nearest even as ggml does.

use super::QuantType;
use crate::fp;
use crate::types::GgmlType;

pub struct Bf16;

impl QuantType for Bf16 {
    const TYPE: GgmlType = GgmlType::BF16;
    const VEC_DOT_TYPE: GgmlType = GgmlType::BF16;
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
