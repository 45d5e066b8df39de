//! Q6_K: super-blocks of 256 weights in 16 sub-blocks of 16 with int8
//! scales, 6-bit signed levels (210 bytes).

use super::kquant::{make_qx_quants, GROUP_MAX_EPS};
use super::{QuantType, VecDot, QK_K};
use crate::fp::{f16_to_f32, f32_to_f16, nearest_int};
use crate::ggml_block;
use crate::types::GgmlType;
use half::f16;

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BlockQ6K {
    /// Low four bits of the levels.
    pub ql: [u8; QK_K / 2],
    /// High two bits of the levels.
    pub qh: [u8; QK_K / 4],
    /// Sub-block scales.
    pub scales: [i8; QK_K / 16],
    /// Super-block scale.
    pub d: f16,
}
ggml_block!(BlockQ6K, GgmlType::Q6K);

impl Default for BlockQ6K {
    fn default() -> Self {
        BlockQ6K {
            ql: [0; QK_K / 2],
            qh: [0; QK_K / 4],
            scales: [0; QK_K / 16],
            d: f16::ZERO,
        }
    }
}

/// The signed levels of elements l, l+32, l+64 and l+96 of a 128-element half.
#[inline]
fn levels(ql: &[u8], qh: &[u8], l: usize) -> [i32; 4] {
    [
        ((ql[l] & 0x0f) | ((qh[l] & 3) << 4)) as i32 - 32,
        ((ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32,
        ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32,
        ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32,
    ]
}

/// ggml's Q6_K quantizer: per 16 values the scale search weighted by x²
/// (the reference) or by the importance weights `qw` of the row.
fn quantize(x: &[f32], qw: Option<&[f32]>, y: &mut [BlockQ6K]) {
    let mut levels = [0i8; QK_K];
    let mut scales = [0.0f32; QK_K / 16];
    for (i, (xb, yb)) in x.chunks_exact(QK_K).zip(y.iter_mut()).enumerate() {
        let (mut max_scale, mut max_abs_scale) = (0.0f32, 0.0f32);
        for ib in 0..QK_K / 16 {
            let s = make_qx_quants(
                32,
                &xb[16 * ib..16 * ib + 16],
                &mut levels[16 * ib..16 * ib + 16],
                qw.map(|w| &w[QK_K * i + 16 * ib..QK_K * i + 16 * ib + 16]),
            );
            scales[ib] = s;
            if s.abs() > max_abs_scale {
                max_abs_scale = s.abs();
                max_scale = s;
            }
        }
        if max_abs_scale < GROUP_MAX_EPS {
            *yb = BlockQ6K::default();
            continue;
        }
        let iscale = -128.0f32 / max_scale;
        yb.d = f32_to_f16(1.0 / iscale);
        for (o, &s) in yb.scales.iter_mut().zip(&scales) {
            *o = nearest_int(iscale * s).min(127) as i8;
        }
        let d = f16_to_f32(yb.d);
        for j in 0..QK_K / 16 {
            let dj = d * yb.scales[j] as f32;
            if dj == 0.0 {
                continue;
            }
            for ii in 0..16 {
                let l = nearest_int(xb[16 * j + ii] / dj).clamp(-32, 31);
                levels[16 * j + ii] = (l + 32) as i8;
            }
        }
        let lv = |i: usize| levels[i] as u8;
        for half in 0..2 {
            let (ql, qh) = (
                &mut yb.ql[64 * half..64 * half + 64],
                &mut yb.qh[32 * half..32 * half + 32],
            );
            let j = 128 * half;
            for l in 0..32 {
                let (a, b, c, e) = (lv(j + l), lv(j + l + 32), lv(j + l + 64), lv(j + l + 96));
                ql[l] = (a & 0x0f) | ((c & 0x0f) << 4);
                ql[l + 32] = (b & 0x0f) | ((e & 0x0f) << 4);
                qh[l] = (a >> 4) | ((b >> 4) << 2) | ((c >> 4) << 4) | ((e >> 4) << 6);
            }
        }
    }
}

pub struct Q6K;

impl QuantType for Q6K {
    const TYPE: GgmlType = GgmlType::Q6K;
    const VEC_DOT_TYPE: GgmlType = GgmlType::Q8K;
    type Block = BlockQ6K;

    fn quantize_ref(x: &[f32], y: &mut [BlockQ6K]) {
        quantize(x, None, y)
    }

    const WEIGHTED: bool = true;

    fn quantize_row_weighted(x: &[f32], qw: &[f32], y: &mut [BlockQ6K]) {
        quantize(x, Some(qw), y)
    }

    fn dequantize(x: &[BlockQ6K], y: &mut [f32]) {
        for (xb, yb) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
            let d = f16_to_f32(xb.d);
            for half in 0..2 {
                let ql = &xb.ql[64 * half..64 * half + 64];
                let qh = &xb.qh[32 * half..32 * half + 32];
                let sc = &xb.scales[8 * half..8 * half + 8];
                let out = &mut yb[128 * half..128 * half + 128];
                for l in 0..32 {
                    let is = l / 16;
                    let [q1, q2, q3, q4] = levels(ql, qh, l);
                    out[l] = d * sc[is] as f32 * q1 as f32;
                    out[l + 32] = d * sc[is + 2] as f32 * q2 as f32;
                    out[l + 64] = d * sc[is + 4] as f32 * q3 as f32;
                    out[l + 96] = d * sc[is + 6] as f32 * q4 as f32;
                }
            }
        }
    }
}

impl VecDot for Q6K {
    type Act = super::Q8K;
    /// The k-quant dot order (ours, fixed; the SIMD levels and the packed
    /// layouts follow it bit for bit): per super-block the exact integer
    /// sums, then `sum += d * d_x * sumi` in f32, super-blocks in order. ggml sums in
    /// eight f32 lanes instead; the two agree within f32 rounding
    /// (tests/ggml_golden.rs).
    fn vec_dot(w: &[BlockQ6K], x: &[super::BlockQ8K]) -> f32 {
        let mut sum = 0.0f32;
        for (a, b) in w.iter().zip(x) {
            let mut sumi = 0i32;
            for half in 0..2 {
                let ql = &a.ql[64 * half..64 * half + 64];
                let qh = &a.qh[32 * half..32 * half + 32];
                let sc = &a.scales[8 * half..8 * half + 8];
                let y = &b.qs[128 * half..128 * half + 128];
                let mut s = [0i32; 8];
                for l in 0..32 {
                    let is = l / 16;
                    let [q1, q2, q3, q4] = levels(ql, qh, l);
                    s[is] += q1 * y[l] as i32;
                    s[is + 2] += q2 * y[l + 32] as i32;
                    s[is + 4] += q3 * y[l + 64] as i32;
                    s[is + 6] += q4 * y[l + 96] as i32;
                }
                for k in 0..8 {
                    sumi += sc[k] as i32 * s[k];
                }
            }
            sum += f16_to_f32(a.d) * b.d * sumi as f32;
        }
        sum
    }
}
