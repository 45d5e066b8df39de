//! aarch64 NEON dots for Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 and the k-quants
//! Q4_K, Q5_K, Q6_K, each equal to its scalar twin bit for bit.
//!
//! The 32-element block types follow [`crate::quant::Lanes8`]: eight f32
//! lanes (two 4-lane registers), lane l holding the exact integer sum of
//! products 4l..4l+4 of each block, accumulated as `fma(scale, lane, acc)`
//! block by block, then reduced as ((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7)).
//! So results equal the scalar twins (and ggml's x86 order) bit for bit.
//!
//! The k-quants follow their scalar twins' order (see `Q4K::vec_dot`): the
//! integer sums of a super-block are exact whatever the order, so only the
//! one f32 step per super-block has to be the same, and it is.
//!
//! Integer lanes come from widening multiplies (`smull`, i8 x i8 -> i16,
//! exact) and two pairwise widening adds, so any aarch64 CPU runs them (no
//! `dotprod` needed).

#![cfg(target_arch = "aarch64")]

use std::arch::aarch64::*;

use crate::cpu::Level;
use crate::fp::f16_to_f32;
use crate::quant::DotTiles;
use crate::types::GgmlType;

/// The NEON tiles for `ty` at `level`, where this file has them.
pub(crate) fn kernels(ty: GgmlType, level: Level) -> Option<DotTiles> {
    if level < Level::Neon {
        return None;
    }
    macro_rules! tiles {
        ($d:expr) => {
            Some(DotTiles {
                t1x1: |w, x, out| tile::<1, 1>($d, w, x, out),
                t4x1: |w, x, out| tile::<4, 1>($d, w, x, out),
                t2x4: |w, x, out| tile::<2, 4>($d, w, x, out),
            })
        };
    }
    match ty {
        GgmlType::Q4_0 => tiles!(Dot::Blocks(Kind::Q4_0)),
        GgmlType::Q4_1 => tiles!(Dot::Blocks(Kind::Q4_1)),
        GgmlType::Q5_0 => tiles!(Dot::Blocks(Kind::Q5_0)),
        GgmlType::Q5_1 => tiles!(Dot::Blocks(Kind::Q5_1)),
        GgmlType::Q8_0 => tiles!(Dot::Blocks(Kind::Q8_0)),
        GgmlType::Q4K => tiles!(Dot::Q4K),
        GgmlType::Q5K => tiles!(Dot::Q5K),
        GgmlType::Q6K => tiles!(Dot::Q6K),
        _ => None,
    }
}

/// The 32-element block types, which share [`dot`].
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
}

/// Which dot a tile runs: [`dot`] over 32-element blocks, or a k-quant's
/// own over super-blocks.
#[derive(Clone, Copy)]
enum Dot {
    Blocks(Kind),
    Q4K,
    Q5K,
    Q6K,
}

impl Dot {
    /// Bytes of a weight block and of an activation block.
    fn sizes(self) -> (usize, usize) {
        match self {
            Dot::Blocks(Kind::Q4_0) => (18, 34),
            Dot::Blocks(Kind::Q4_1) => (20, 36),
            Dot::Blocks(Kind::Q5_0) => (22, 34),
            Dot::Blocks(Kind::Q5_1) => (24, 36),
            Dot::Blocks(Kind::Q8_0) => (34, 34),
            Dot::Q4K => (144, 292),
            Dot::Q5K => (176, 292),
            Dot::Q6K => (210, 292),
        }
    }
}

fn tile<const R: usize, const C: usize>(
    d: Dot,
    w: &[&[u8]; R],
    x: &[&[u8]; C],
    out: &mut [[f32; C]; R],
) {
    let (wb, xb) = d.sizes();
    for r in 0..R {
        let nb = w[r].len() / wb;
        for c in 0..C {
            assert!(w[r].len() == nb * wb && x[c].len() >= nb * xb, "row sizes");
            // SAFETY: NEON is part of every aarch64 CPU (the `neon` target
            // feature is on by default there); the assert proves every
            // block read is in bounds (all loads unaligned).
            let (wp, xp) = (w[r].as_ptr(), x[c].as_ptr());
            out[r][c] = unsafe {
                match d {
                    Dot::Blocks(kind) => dot(kind, nb, wp, xp),
                    Dot::Q4K => dot_k4::<false>(nb, wp, xp),
                    Dot::Q5K => dot_k4::<true>(nb, wp, xp),
                    Dot::Q6K => dot_q6k(nb, wp, xp),
                }
            };
        }
    }
}

/// The four exact sums of four consecutive products of `a` and `b`.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn sum4(a: int8x16_t, b: int8x16_t) -> int32x4_t {
    let lo = vpaddlq_s16(vmull_s8(vget_low_s8(a), vget_low_s8(b)));
    let hi = vpaddlq_s16(vmull_high_s8(a, b));
    vpaddq_s32(lo, hi)
}

#[inline]
unsafe fn f16_at(p: *const u8) -> f32 {
    f16_to_f32(half::f16::from_bits(p.cast::<u16>().read_unaligned()))
}

#[target_feature(enable = "neon")]
unsafe fn dot(kind: Kind, nb: usize, w: *const u8, x: *const u8) -> f32 {
    let (wb, xb) = Dot::Blocks(kind).sizes();
    let (mut lo, mut hi) = (vdupq_n_f32(0.0), vdupq_n_f32(0.0));
    let mut summs = 0.0f32;
    let m4 = vdupq_n_u8(0x0f);
    for i in 0..nb {
        let (a, b) = (w.add(i * wb), x.add(i * xb));
        let (w0, w1, y) = match kind {
            Kind::Q4_0 | Kind::Q4_1 => {
                let off = if kind == Kind::Q4_0 { 2 } else { 4 };
                let qs = vld1q_u8(a.add(off));
                let mut l = vreinterpretq_s8_u8(vandq_u8(qs, m4));
                let mut h = vreinterpretq_s8_u8(vshrq_n_u8::<4>(qs));
                if kind == Kind::Q4_0 {
                    l = vsubq_s8(l, vdupq_n_s8(8));
                    h = vsubq_s8(h, vdupq_n_s8(8));
                }
                (l, h, b.add(off))
            }
            Kind::Q5_0 | Kind::Q5_1 => {
                // d, (m,) the 32 fifth bits, then the nibbles
                let (qh_at, qs_at) = if kind == Kind::Q5_0 { (2, 6) } else { (4, 8) };
                let qh = u32::from_le_bytes(a.add(qh_at).cast::<[u8; 4]>().read_unaligned());
                let qs = vld1q_u8(a.add(qs_at));
                let mut l = vreinterpretq_s8_u8(vorrq_u8(vandq_u8(qs, m4), fifth16(qh as u16)));
                let mut h =
                    vreinterpretq_s8_u8(vorrq_u8(vshrq_n_u8::<4>(qs), fifth16((qh >> 16) as u16)));
                if kind == Kind::Q5_0 {
                    l = vsubq_s8(l, vdupq_n_s8(16));
                    h = vsubq_s8(h, vdupq_n_s8(16));
                }
                (l, h, b.add(if kind == Kind::Q5_0 { 2 } else { 4 }))
            }
            Kind::Q8_0 => (
                vld1q_s8(a.add(2).cast()),
                vld1q_s8(a.add(18).cast()),
                b.add(2),
            ),
        };
        let scale = f16_at(a) * f16_at(b);
        if matches!(kind, Kind::Q4_1 | Kind::Q5_1) {
            summs = f16_at(a.add(2)).mul_add(f16_at(b.add(2)), summs);
        }
        let s0 = vcvtq_f32_s32(sum4(w0, vld1q_s8(y.cast())));
        let s1 = vcvtq_f32_s32(sum4(w1, vld1q_s8(y.add(16).cast())));
        lo = vfmaq_n_f32(lo, s0, scale);
        hi = vfmaq_n_f32(hi, s1, scale);
    }
    let r = vaddq_f32(lo, hi);
    let (r0, r1, r2, r3) = (
        vgetq_lane_f32::<0>(r),
        vgetq_lane_f32::<1>(r),
        vgetq_lane_f32::<2>(r),
        vgetq_lane_f32::<3>(r),
    );
    let sum = (r0 + r2) + (r1 + r3);
    if matches!(kind, Kind::Q4_1 | Kind::Q5_1) {
        sum + summs
    } else {
        sum
    }
}

/// 0x10 in lane j where bit j of `bits` is set, else 0: the fifth bits of
/// sixteen Q5_0/Q5_1 elements, moved into place above their nibbles.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn fifth16(bits: u16) -> uint8x16_t {
    const SEL: [u8; 16] = [1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128];
    let [b0, b1] = bits.to_le_bytes();
    let b = vcombine_u8(vdup_n_u8(b0), vdup_n_u8(b1));
    vandq_u8(vtstq_u8(b, vld1q_u8(SEL.as_ptr())), vdupq_n_u8(0x10))
}

/// The exact sum of the 32 products of `a0 a1` and `b0 b1`.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn sum32(a0: int8x16_t, a1: int8x16_t, b: *const i8) -> i32 {
    let s = vaddq_s32(sum4(a0, vld1q_s8(b)), sum4(a1, vld1q_s8(b.add(16))));
    vaddvq_s32(s)
}

/// Q4_K (or, with `Q5`, Q5_K) x Q8_K over `nb` super-blocks: per
/// super-block the exact integer sums, then
/// `sum += d_x * (d * sumi - dmin * summ)`, as the scalar twin.
#[target_feature(enable = "neon")]
unsafe fn dot_k4<const Q5: bool>(nb: usize, w: *const u8, x: *const u8) -> f32 {
    let (wb, qs_at) = if Q5 { (176, 48) } else { (144, 16) };
    let m4 = vdupq_n_u8(0x0f);
    let ten = vdupq_n_u8(0x10);
    let mut sum = 0.0f32;
    for i in 0..nb {
        let (a, b) = (w.add(i * wb), x.add(i * 292));
        let scales = a.add(4).cast::<[u8; 12]>().read_unaligned();
        let y = b.add(4).cast::<i8>();
        let bsums = b.add(260).cast::<i16>();
        let (qh0, qh1) = if Q5 {
            (vld1q_u8(a.add(16)), vld1q_u8(a.add(32)))
        } else {
            (vdupq_n_u8(0), vdupq_n_u8(0))
        };
        let (mut sumi, mut summ) = (0i32, 0i32);
        for chunk in 0..4 {
            let (sc1, m1) = crate::quant::kquant_scale_min(2 * chunk, &scales);
            let (sc2, m2) = crate::quant::kquant_scale_min(2 * chunk + 1, &scales);
            let q = a.add(qs_at + 32 * chunk);
            let (q0, q1) = (vld1q_u8(q), vld1q_u8(q.add(16)));
            let (mut l0, mut l1) = (vandq_u8(q0, m4), vandq_u8(q1, m4));
            let (mut h0, mut h1) = (vshrq_n_u8::<4>(q0), vshrq_n_u8::<4>(q1));
            if Q5 {
                // bit 2 chunk of qh[l] tops the low nibble of byte l, bit
                // 2 chunk + 1 the high one
                let (u1, u2) = (vdupq_n_u8(1 << (2 * chunk)), vdupq_n_u8(2 << (2 * chunk)));
                l0 = vorrq_u8(l0, vandq_u8(vtstq_u8(qh0, u1), ten));
                l1 = vorrq_u8(l1, vandq_u8(vtstq_u8(qh1, u1), ten));
                h0 = vorrq_u8(h0, vandq_u8(vtstq_u8(qh0, u2), ten));
                h1 = vorrq_u8(h1, vandq_u8(vtstq_u8(qh1, u2), ten));
            }
            let yc = y.add(64 * chunk);
            let s1 = sum32(vreinterpretq_s8_u8(l0), vreinterpretq_s8_u8(l1), yc);
            let s2 = sum32(vreinterpretq_s8_u8(h0), vreinterpretq_s8_u8(h1), yc.add(32));
            sumi += sc1 as i32 * s1 + sc2 as i32 * s2;
            let bs = |k: usize| bsums.add(k).read_unaligned() as i32;
            let bs1 = bs(4 * chunk) + bs(4 * chunk + 1);
            let bs2 = bs(4 * chunk + 2) + bs(4 * chunk + 3);
            summ += m1 as i32 * bs1 + m2 as i32 * bs2;
        }
        let (d, dmin) = (f16_at(a), f16_at(a.add(2)));
        let dx = b.cast::<f32>().read_unaligned();
        sum += dx * (d * sumi as f32 - dmin * summ as f32);
    }
    sum
}

/// Q6_K x Q8_K over `nb` super-blocks: per super-block the exact integer
/// sum of every 16 products times its scale, then `sum += d * d_x * sumi`,
/// as the scalar twin.
#[target_feature(enable = "neon")]
unsafe fn dot_q6k(nb: usize, w: *const u8, x: *const u8) -> f32 {
    let m4 = vdupq_n_u8(0x0f);
    let m3 = vdupq_n_u8(0x03);
    let off = vdupq_n_s8(32);
    // the 6-bit level (low four bits from `l`'s nibble, two high bits) less 32
    let level = |lo4: uint8x16_t, hi2: uint8x16_t| -> int8x16_t {
        vsubq_s8(
            vreinterpretq_s8_u8(vorrq_u8(lo4, vshlq_n_u8::<4>(hi2))),
            off,
        )
    };
    let mut sum = 0.0f32;
    for i in 0..nb {
        let (a, b) = (w.add(i * 210), x.add(i * 292));
        let y = b.add(4).cast::<i8>();
        let mut sumi = 0i32;
        for half in 0..2 {
            let ql = a.add(64 * half);
            let qh = a.add(128 + 32 * half);
            let sc = a.add(192 + 8 * half).cast::<i8>();
            let yh = y.add(128 * half);
            // elements l (0..32) of each quarter: q1 at l, q2 at 32 + l, q3
            // at 64 + l, q4 at 96 + l; every 16 share one scale
            for part in 0..2 {
                let l0 = vld1q_u8(ql.add(16 * part));
                let l32 = vld1q_u8(ql.add(32 + 16 * part));
                let h = vld1q_u8(qh.add(16 * part));
                let q = [
                    level(vandq_u8(l0, m4), vandq_u8(h, m3)),
                    level(vandq_u8(l32, m4), vandq_u8(vshrq_n_u8::<2>(h), m3)),
                    level(vshrq_n_u8::<4>(l0), vandq_u8(vshrq_n_u8::<4>(h), m3)),
                    level(vshrq_n_u8::<4>(l32), vshrq_n_u8::<6>(h)),
                ];
                for (k, qk) in q.into_iter().enumerate() {
                    let e = 32 * k + 16 * part;
                    let s = vaddvq_s32(sum4(qk, vld1q_s8(yh.add(e))));
                    sumi += sc.add(2 * k + part).read() as i32 * s;
                }
            }
        }
        sum += f16_at(a.add(208)) * b.cast::<f32>().read_unaligned() * sumi as f32;
    }
    sum
}
