//! F16: IEEE half precision, rounded to nearest even.

use super::QuantType;
use crate::fp;
use crate::types::GgmlType;

pub struct F16;

impl QuantType for F16 {
    const TYPE: GgmlType = GgmlType::F16;
    const VEC_DOT_TYPE: GgmlType = GgmlType::F16;
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
