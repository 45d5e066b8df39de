//! Q4_K: super-blocks of 256 weights in 8 sub-blocks of 32, each with a
//! 6-bit scale and 6-bit minimum, 4-bit levels (144 bytes).

use super::kquant::{
    get_scale_min_k4, quantize_scales_k4, quantize_scales_k4_weighted, requantize_k4,
};
use super::{QuantType, VecDot, QK_K};
use crate::fp::{f16_to_f32, f32_to_f16};
use crate::ggml_block;
use crate::types::GgmlType;
use half::f16;

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BlockQ4K {
    /// Super-block scale for the sub-block scales.
    pub d: f16,
    /// Super-block scale for the sub-block minimums.
    pub dmin: f16,
    /// Eight 6-bit scales and eight 6-bit minimums, packed.
    pub scales: [u8; 12],
    /// 4-bit levels: each 32 bytes hold two sub-blocks (low, high nibbles).
    pub qs: [u8; QK_K / 2],
}
ggml_block!(BlockQ4K, GgmlType::Q4K);

impl Default for BlockQ4K {
    fn default() -> Self {
        BlockQ4K {
            d: f16::ZERO,
            dmin: f16::ZERO,
            scales: [0; 12],
            qs: [0; QK_K / 2],
        }
    }
}

/// ggml's Q4_K quantizer: the reference scale search, or with
/// importance weights `qw` (one per value of the row) ggml's weighted one.
fn quantize(x: &[f32], qw: Option<&[f32]>, y: &mut [BlockQ4K]) {
    let mut levels = [0u8; QK_K];
    for (i, (xb, yb)) in x.chunks_exact(QK_K).zip(y.iter_mut()).enumerate() {
        let (d, dmin, scales) = match qw {
            None => quantize_scales_k4(xb, 15, -1.0, 20, &mut levels),
            Some(w) => quantize_scales_k4_weighted(
                xb,
                &w[QK_K * i..QK_K * (i + 1)],
                15,
                false,
                &mut levels,
            ),
        };
        yb.d = f32_to_f16(d);
        yb.dmin = f32_to_f16(dmin);
        yb.scales = scales;
        requantize_k4(
            xb,
            f16_to_f32(yb.d),
            f16_to_f32(yb.dmin),
            &scales,
            15,
            &mut levels,
        );
        for (chunk, q) in yb.qs.chunks_exact_mut(32).enumerate() {
            let l = &levels[64 * chunk..64 * chunk + 64];
            for i in 0..32 {
                q[i] = l[i] | (l[i + 32] << 4);
            }
        }
    }
}

pub struct Q4K;

impl QuantType for Q4K {
    const TYPE: GgmlType = GgmlType::Q4K;
    const VEC_DOT_TYPE: GgmlType = GgmlType::Q8K;
    type Block = BlockQ4K;

    fn quantize_ref(x: &[f32], y: &mut [BlockQ4K]) {
        quantize(x, None, y)
    }

    const WEIGHTED: bool = true;

    fn quantize_row_weighted(x: &[f32], qw: &[f32], y: &mut [BlockQ4K]) {
        quantize(x, Some(qw), y)
    }
    fn dequantize(x: &[BlockQ4K], y: &mut [f32]) {
        for (xb, yb) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
            let d = f16_to_f32(xb.d);
            let min = f16_to_f32(xb.dmin);
            for (chunk, q) in xb.qs.chunks_exact(32).enumerate() {
                let (sc1, m1) = get_scale_min_k4(2 * chunk, &xb.scales);
                let (sc2, m2) = get_scale_min_k4(2 * chunk + 1, &xb.scales);
                let (d1, m1) = (d * sc1 as f32, min * m1 as f32);
                let (d2, m2) = (d * sc2 as f32, min * m2 as f32);
                let out = &mut yb[64 * chunk..64 * chunk + 64];
                for i in 0..32 {
                    out[i] = d1 * (q[i] & 0x0f) as f32 - m1;
                    out[i + 32] = d2 * (q[i] >> 4) as f32 - m2;
                }
            }
        }
    }
}

impl VecDot for Q4K {
    type Act = super::Q8K;
    /// The k-quant dot order (ours, fixed; the SIMD levels and the packed
    /// layouts follow it bit for bit): per super-block the exact integer
    /// sums, then `sum += d_x * (d * sumi - dmin * summ)` in f32, super-blocks in order. ggml sums in
    /// eight f32 lanes instead; the two agree within f32 rounding
    /// (tests/ggml_golden.rs).
    fn vec_dot(w: &[BlockQ4K], x: &[super::BlockQ8K]) -> f32 {
        let mut sum = 0.0f32;
        for (a, b) in w.iter().zip(x) {
            let (mut sumi, mut summ) = (0i32, 0i32);
            for (chunk, q) in a.qs.chunks_exact(32).enumerate() {
                let (sc1, m1) = get_scale_min_k4(2 * chunk, &a.scales);
                let (sc2, m2) = get_scale_min_k4(2 * chunk + 1, &a.scales);
                let y = &b.qs[64 * chunk..64 * chunk + 64];
                let (mut s1, mut s2) = (0i32, 0i32);
                for i in 0..32 {
                    s1 += (q[i] & 0x0f) as i32 * y[i] as i32;
                    s2 += (q[i] >> 4) as i32 * y[i + 32] as i32;
                }
                sumi += sc1 as i32 * s1 + sc2 as i32 * s2;
                let bs1 = b.bsums[4 * chunk] as i32 + b.bsums[4 * chunk + 1] as i32;
                let bs2 = b.bsums[4 * chunk + 2] as i32 + b.bsums[4 * chunk + 3] as i32;
                summ += m1 as i32 * bs1 + m2 as i32 * bs2;
            }
            sum += b.d * (f16_to_f32(a.d) * sumi as f32 - f16_to_f32(a.dmin) * summ as f32);
        }
        sum
    }
}
