//! F16: IEEE half precision, rounded to nearest even.

use super::{QuantType, VecDot};
use crate::fp;
use crate::types::GgmlType;

pub struct F16;

impl QuantType for F16 {
    const TYPE: GgmlType = GgmlType::F16;
    const VEC_DOT_TYPE: GgmlType = GgmlType::F32;
    type Block = half::f16;

    fn quantize_ref(x: &[f32], y: &mut [half::f16]) {
        for (o, &v) in y.iter_mut().zip(x) {
            *o = fp::f32_to_f16(v);
        }
    }

    fn dequantize(x: &[half::f16], y: &mut [f32]) {
        for (o, &v) in y.iter_mut().zip(x) {
            *o = fp::f16_to_f32(v);
        }
    }
}

/// The order of the float types' dot (F16, BF16), which the SIMD twins
/// keep: eight lanes, lane i taking elements i, i + 8, ... by fused
/// multiply-add, then the lanes summed in order.
impl VecDot for F16 {
    // ggml rounds activations to f16 here; we keep them in f32 (more accurate)
    type Act = super::F32;
    fn vec_dot(w: &[half::f16], x: &[f32]) -> f32 {
        let mut acc = [0.0f32; 8];
        for (wc, xc) in w.chunks(8).zip(x.chunks(8)) {
            for i in 0..wc.len() {
                acc[i] = fp::f16_to_f32(wc[i]).mul_add(xc[i], acc[i]);
            }
        }
        acc.iter().sum()
    }
}
