//! Q5_K: like Q4_K with a fifth bit per weight (176 bytes per 256).

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
pub struct BlockQ5K {
    pub d: f16,
    pub dmin: f16,
    /// Eight 6-bit scales and eight 6-bit minimums, packed as in Q4_K.
    pub scales: [u8; 12],
    /// Fifth bits: byte i, bit 2c (2c+1) for element i of sub-block 2c (2c+1).
    pub qh: [u8; QK_K / 8],
    /// Low four bits, laid out as Q4_K's levels.
    pub qs: [u8; QK_K / 2],
}
ggml_block!(BlockQ5K, GgmlType::Q5K);

impl Default for BlockQ5K {
    fn default() -> Self {
        BlockQ5K {
            d: f16::ZERO,
            dmin: f16::ZERO,
            scales: [0; 12],
            qh: [0; QK_K / 8],
            qs: [0; QK_K / 2],
        }
    }
}

/// ggml's Q5_K quantizer: the reference scale search, or with
/// importance weights `qw` (one per value of the row) ggml's weighted one.
fn quantize(x: &[f32], qw: Option<&[f32]>, y: &mut [BlockQ5K]) {
    let mut levels = [0u8; QK_K];
    for (i, (xb, yb)) in x.chunks_exact(QK_K).zip(y.iter_mut()).enumerate() {
        let (d, dmin, scales) = match qw {
            None => quantize_scales_k4(xb, 31, -0.5, 15, &mut levels),
            Some(w) => {
                quantize_scales_k4_weighted(xb, &w[QK_K * i..QK_K * (i + 1)], 31, true, &mut levels)
            }
        };
        yb.d = f32_to_f16(d);
        yb.dmin = f32_to_f16(dmin);
        yb.scales = scales;
        requantize_k4(
            xb,
            f16_to_f32(yb.d),
            f16_to_f32(yb.dmin),
            &scales,
            31,
            &mut levels,
        );
        yb.qh = [0; QK_K / 8];
        for (chunk, q) in yb.qs.chunks_exact_mut(32).enumerate() {
            let l = &levels[64 * chunk..64 * chunk + 64];
            let (m1, m2) = (1u8 << (2 * chunk), 2u8 << (2 * chunk));
            for i in 0..32 {
                let (mut a, mut b) = (l[i], l[i + 32]);
                if a > 15 {
                    a -= 16;
                    yb.qh[i] |= m1;
                }
                if b > 15 {
                    b -= 16;
                    yb.qh[i] |= m2;
                }
                q[i] = a | (b << 4);
            }
        }
    }
}

pub struct Q5K;

impl QuantType for Q5K {
    const TYPE: GgmlType = GgmlType::Q5K;
    const VEC_DOT_TYPE: GgmlType = GgmlType::Q8K;
    type Block = BlockQ5K;

    fn quantize_ref(x: &[f32], y: &mut [BlockQ5K]) {
        quantize(x, None, y)
    }

    const WEIGHTED: bool = true;

    fn quantize_row_weighted(x: &[f32], qw: &[f32], y: &mut [BlockQ5K]) {
        quantize(x, Some(qw), y)
    }
    fn dequantize(x: &[BlockQ5K], y: &mut [f32]) {
        for (xb, yb) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
            let d = f16_to_f32(xb.d);
            let min = f16_to_f32(xb.dmin);
            for (chunk, q) in xb.qs.chunks_exact(32).enumerate() {
                let (sc1, m1) = get_scale_min_k4(2 * chunk, &xb.scales);
                let (sc2, m2) = get_scale_min_k4(2 * chunk + 1, &xb.scales);
                let (d1, m1) = (d * sc1 as f32, min * m1 as f32);
                let (d2, m2) = (d * sc2 as f32, min * m2 as f32);
                let (u1, u2) = (1u8 << (2 * chunk), 2u8 << (2 * chunk));
                let out = &mut yb[64 * chunk..64 * chunk + 64];
                for i in 0..32 {
                    let h1 = if xb.qh[i] & u1 != 0 { 16 } else { 0 };
                    let h2 = if xb.qh[i] & u2 != 0 { 16 } else { 0 };
                    out[i] = d1 * ((q[i] & 0x0f) + h1) as f32 - m1;
                    out[i + 32] = d2 * ((q[i] >> 4) + h2) as f32 - m2;
                }
            }
        }
    }
}

impl VecDot for Q5K {
    type Act = super::Q8K;
    /// The k-quant dot order (ours, fixed; the SIMD levels and the packed
    /// layouts follow it bit for bit): per super-block the exact integer
    /// sums, then `sum += d_x * (d * sumi - dmin * summ)` in f32, super-blocks in order. ggml sums in
    /// eight f32 lanes instead; the two agree within f32 rounding
    /// (tests/ggml_golden.rs).
    fn vec_dot(w: &[BlockQ5K], x: &[super::BlockQ8K]) -> f32 {
        let mut sum = 0.0f32;
        for (a, b) in w.iter().zip(x) {
            let (mut sumi, mut summ) = (0i32, 0i32);
            for (chunk, q) in a.qs.chunks_exact(32).enumerate() {
                let (sc1, m1) = get_scale_min_k4(2 * chunk, &a.scales);
                let (sc2, m2) = get_scale_min_k4(2 * chunk + 1, &a.scales);
                let (u1, u2) = (1u8 << (2 * chunk), 2u8 << (2 * chunk));
                let y = &b.qs[64 * chunk..64 * chunk + 64];
                let (mut s1, mut s2) = (0i32, 0i32);
                for i in 0..32 {
                    let h1 = if a.qh[i] & u1 != 0 { 16 } else { 0 };
                    let h2 = if a.qh[i] & u2 != 0 { 16 } else { 0 };
                    s1 += ((q[i] & 0x0f) as i32 + h1) * y[i] as i32;
                    s2 += ((q[i] >> 4) as i32 + h2) * y[i + 32] as i32;
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
