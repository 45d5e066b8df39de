//! Q8_K: the activation type of the k-quant dot products: int8 values, an
//! f32 scale and per-16 sums (292 bytes per 256).

use super::{QuantType, QK_K};
use crate::fp::nearest_int;
use crate::ggml_block;
use crate::types::GgmlType;

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BlockQ8K {
    /// Scale; value = q * d.
    pub d: f32,
    pub qs: [i8; QK_K],
    /// Sums of each 16 consecutive values of `qs`.
    pub bsums: [i16; QK_K / 16],
}
ggml_block!(BlockQ8K, GgmlType::Q8K);

impl Default for BlockQ8K {
    fn default() -> Self {
        BlockQ8K {
            d: 0.0,
            qs: [0; QK_K],
            bsums: [0; QK_K / 16],
        }
    }
}

pub struct Q8K;

impl QuantType for Q8K {
    const TYPE: GgmlType = GgmlType::Q8K;
    const VEC_DOT_TYPE: GgmlType = GgmlType::Q8K;
    type Block = BlockQ8K;

    #[inline(always)]
    fn quantize_ref(x: &[f32], y: &mut [BlockQ8K]) {
        for (xb, yb) in x.chunks_exact(QK_K).zip(y.iter_mut()) {
            let (mut max, mut amax) = (0.0f32, 0.0f32);
            for &v in xb {
                if v.abs() > amax {
                    amax = v.abs();
                    max = v;
                }
            }
            if amax == 0.0 {
                // ggml leaves bsums untouched here; zero is what they sum to.
                *yb = BlockQ8K::default();
                continue;
            }
            let iscale = -127.0f32 / max;
            for (q, &v) in yb.qs.iter_mut().zip(xb) {
                *q = nearest_int(iscale * v).min(127) as i8;
            }
            for (s, q) in yb.bsums.iter_mut().zip(yb.qs.chunks_exact(16)) {
                *s = q.iter().map(|&v| v as i16).sum();
            }
            yb.d = 1.0 / iscale;
        }
    }

    fn dequantize(x: &[BlockQ8K], y: &mut [f32]) {
        for (xb, yb) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
            for (o, &q) in yb.iter_mut().zip(&xb.qs) {
                *o = xb.d * q as f32;
            }
        }
    }
}
