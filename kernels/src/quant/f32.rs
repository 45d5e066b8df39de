//! F32: plain single precision.

use super::{QuantType, VecDot};
use crate::types::GgmlType;

pub struct F32;

impl QuantType for F32 {
    const TYPE: GgmlType = GgmlType::F32;
    const VEC_DOT_TYPE: GgmlType = GgmlType::F32;
    type Block = f32;

    fn quantize_ref(x: &[f32], y: &mut [f32]) {
        y.copy_from_slice(x);
    }

    fn dequantize(x: &[f32], y: &mut [f32]) {
        y.copy_from_slice(x);
    }
}

impl VecDot for F32 {
    type Act = F32;
    fn vec_dot(w: &[f32], x: &[f32]) -> f32 {
        crate::fp::dot_f32(w, x)
    }
}
