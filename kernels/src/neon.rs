//! aarch64 NEON dots for the 32-element block types Q4_0, Q4_1 and Q8_0,
//! in the order of their scalar twins ([`crate::quant::Lanes8`]): eight f32
//! lanes (two 4-lane registers), lane l holding the exact integer sum of
//! products 4l..4l+4 of each block, accumulated as `fma(scale, lane, acc)`
//! block by block, then reduced as ((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7)).
//! So results equal the scalar twins (and ggml's x86 order) bit for bit.
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
        ($k:ident) => {
            Some(DotTiles {
                t1x1: |w, x, out| tile::<1, 1>(Kind::$k, w, x, out),
                t4x1: |w, x, out| tile::<4, 1>(Kind::$k, w, x, out),
                t2x4: |w, x, out| tile::<2, 4>(Kind::$k, w, x, out),
            })
        };
    }
    match ty {
        GgmlType::Q4_0 => tiles!(Q4_0),
        GgmlType::Q4_1 => tiles!(Q4_1),
        GgmlType::Q8_0 => tiles!(Q8_0),
        _ => None,
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Q4_0,
    Q4_1,
    Q8_0,
}

impl Kind {
    /// Bytes of a weight block and of an activation block.
    fn sizes(self) -> (usize, usize) {
        match self {
            Kind::Q4_0 => (18, 34),
            Kind::Q4_1 => (20, 36),
            Kind::Q8_0 => (34, 34),
        }
    }
}

fn tile<const R: usize, const C: usize>(
    kind: Kind,
    w: &[&[u8]; R],
    x: &[&[u8]; C],
    out: &mut [[f32; C]; R],
) {
    let (wb, xb) = kind.sizes();
    for r in 0..R {
        let nb = w[r].len() / wb;
        for c in 0..C {
            assert!(w[r].len() == nb * wb && x[c].len() >= nb * xb, "row sizes");
            // SAFETY: NEON is part of every aarch64 CPU (the `neon` target
            // feature is on by default there); the assert proves every
            // block read is in bounds (all loads unaligned).
            out[r][c] = unsafe { dot(kind, nb, w[r].as_ptr(), x[c].as_ptr()) };
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
    let (wb, xb) = kind.sizes();
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
            Kind::Q8_0 => (
                vld1q_s8(a.add(2).cast()),
                vld1q_s8(a.add(18).cast()),
                b.add(2),
            ),
        };
        let scale = f16_at(a) * f16_at(b);
        if kind == Kind::Q4_1 {
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
    if kind == Kind::Q4_1 {
        sum + summs
    } else {
        sum
    }
}
