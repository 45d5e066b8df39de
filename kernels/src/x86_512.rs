//! AVX-512 (VNNI) tiles for the 32-element block types: two weight rows
//! share one 512-bit register, row r in lanes 0..8 and row r+1 in lanes
//! 8..16, so each row still has its own eight f32 lanes accumulated block
//! by block in ggml's order (see `x86.rs`), and the results equal the
//! scalar twins bit for bit, with half the vector instructions per row.
//!
//! zmm has no `vpsignb`, so signed levels go through the unsigned form of
//! `vpdpbusd` exactly: with u = q + o (o = 8 for Q4_0's nibbles, 128 for
//! Q8_0's bytes), each lane's sum of q*y equals sum(u*y) - o*sum(y), all
//! exact in i32; sum(y) per lane is computed once per activation block.

#![cfg(target_arch = "x86_64")]

use std::arch::x86_64::*;

/// Lane sums of four consecutive y bytes, times `o` (a power of two).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512dq,avx2,fma,f16c")]
unsafe fn ysum(y: __m512i, shift: u32) -> __m512i {
    let s = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_set1_epi8(1), y);
    _mm512_sllv_epi32(s, _mm512_set1_epi32(shift as i32))
}

/// 32 activation bytes, in both halves.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512dq,avx2,fma,f16c")]
unsafe fn y2(p: *const u8) -> __m512i {
    _mm512_broadcast_i64x4(_mm256_loadu_si256(p.cast()))
}

/// The nibbles of 16 bytes at `a` (row r) and `b` (row r+1), each row as
/// its 16 low nibbles then its 16 high nibbles.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512dq,avx2,fma,f16c")]
unsafe fn nibbles_2x32(a: *const u8, b: *const u8) -> __m512i {
    let ta = _mm256_broadcastsi128_si256(_mm_loadu_si128(a.cast()));
    let tb = _mm256_broadcastsi128_si256(_mm_loadu_si128(b.cast()));
    let t = _mm512_inserti64x4(_mm512_castsi256_si512(ta), tb, 1);
    // shift the second copy of each row's bytes by 4 (16-bit lanes 8..16 of
    // every 256-bit half), then keep the low nibble of every byte
    let sh = _mm512_set_epi16(
        4, 4, 4, 4, 4, 4, 4, 4, 0, 0, 0, 0, 0, 0, 0, 0, 4, 4, 4, 4, 4, 4, 4, 4, 0, 0, 0, 0, 0, 0,
        0, 0,
    );
    _mm512_and_si512(_mm512_srlv_epi16(t, sh), _mm512_set1_epi8(0x0f))
}

/// Two f16 values (at `a` and `b`) as f32 lanes 0 and 1... of a 4-lane
/// vector holding [a0, a1, b0, b1] for the 32-bit words at `a` and `b`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512dq,avx2,fma,f16c")]
unsafe fn f16x2_pair(a: *const u8, b: *const u8) -> __m128 {
    let wa = a.cast::<i32>().read_unaligned();
    let wb = b.cast::<i32>().read_unaligned();
    _mm_cvtph_ps(_mm_insert_epi32::<1>(_mm_cvtsi32_si128(wa), wb))
}

/// [s0 x 8, s1 x 8] from lanes `i` and `j` of `v`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512dq,avx2,fma,f16c")]
unsafe fn spread(v: __m128, idx: __m512i) -> __m512 {
    _mm512_permutexvar_ps(idx, _mm512_castps128_ps512(v))
}

/// ggml's `hsum_float_8` of each half.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512dq,avx2,fma,f16c")]
pub(crate) unsafe fn hsum_halves(x: __m512) -> (f32, f32) {
    let h = |v: __m256| {
        let r = _mm_add_ps(_mm256_extractf128_ps(v, 1), _mm256_castps256_ps128(v));
        let r = _mm_add_ps(r, _mm_movehl_ps(r, r));
        _mm_cvtss_f32(_mm_add_ss(r, _mm_movehdup_ps(r)))
    };
    (
        h(_mm512_castps512_ps256(x)),
        h(_mm512_extractf32x8_ps::<1>(x)),
    )
}

/// The block types this file handles.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Q4_0,
    Q4_1,
    Q8_0,
}

/// `out[r][c]` for `R` (even) weight rows and `C` activation rows over
/// `nb` blocks of `kind`.
///
/// # Safety
/// The CPU must have the enabled features; every row must hold `nb` blocks.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512dq,avx2,fma,f16c")]
pub(crate) unsafe fn tile<const R: usize, const C: usize, const P: usize>(
    kind: Kind,
    nb: usize,
    w: &[*const u8; R],
    x: &[*const u8; C],
    out: &mut [[f32; C]; R],
) {
    debug_assert_eq!(2 * P, R);
    let (wb, xb) = match kind {
        Kind::Q4_0 => (18, 34),
        Kind::Q4_1 => (20, 36),
        Kind::Q8_0 => (34, 34),
    };
    let idx02 = _mm512_set_epi32(2, 2, 2, 2, 2, 2, 2, 2, 0, 0, 0, 0, 0, 0, 0, 0);
    let mut acc = [[_mm512_setzero_ps(); C]; P];
    let mut summs = [[_mm_setzero_ps(); C]; P];
    for i in 0..nb {
        // per column: its bytes in both halves, the offset correction, and
        // its scales as multipliers [d, 0, d, 0] and [0, s, 0, s]
        let mut y = [_mm512_setzero_si512(); C];
        let mut corr = [_mm512_setzero_si512(); C];
        let mut xdm = [_mm_setzero_ps(); C];
        let mut xsm = [_mm_setzero_ps(); C];
        for c in 0..C {
            let p = x[c].add(i * xb);
            match kind {
                Kind::Q4_1 => {
                    y[c] = y2(p.add(4));
                    let ds = _mm_cvtph_ps(_mm_cvtsi32_si128(p.cast::<i32>().read_unaligned()));
                    // [d, s, d, s] -> [d, 0, d, 0] and [0, s, 0, s]
                    let dsds = _mm_movelh_ps(ds, ds);
                    xdm[c] = _mm_blend_ps::<0b1010>(dsds, _mm_setzero_ps());
                    xsm[c] = _mm_blend_ps::<0b0101>(dsds, _mm_setzero_ps());
                }
                _ => {
                    y[c] = y2(p.add(2));
                    let shift = if kind == Kind::Q4_0 { 3 } else { 7 };
                    corr[c] = ysum(y[c], shift);
                    let d = _mm_cvtph_ps(_mm_set1_epi16(p.cast::<i16>().read_unaligned()));
                    xdm[c] = _mm_shuffle_ps::<0>(d, d);
                }
            }
        }
        for pp in 0..P {
            let (a, b) = (w[2 * pp].add(i * wb), w[2 * pp + 1].add(i * wb));
            let (q, wd) = match kind {
                Kind::Q4_0 => {
                    // [da, db, ., .] from the first f16 of each block
                    let v = f16x2_pair(a, b);
                    (
                        nibbles_2x32(a.add(2), b.add(2)),
                        _mm_shuffle_ps::<0b10_00_10_00>(v, v),
                    )
                }
                Kind::Q4_1 => (nibbles_2x32(a.add(4), b.add(4)), f16x2_pair(a, b)),
                Kind::Q8_0 => {
                    let v = f16x2_pair(a, b);
                    let t = _mm512_inserti64x4(
                        _mm512_castsi256_si512(_mm256_loadu_si256(a.add(2).cast())),
                        _mm256_loadu_si256(b.add(2).cast()),
                        1,
                    );
                    (
                        _mm512_xor_si512(t, _mm512_set1_epi8(-128)),
                        _mm_shuffle_ps::<0b10_00_10_00>(v, v),
                    )
                }
            };
            for c in 0..C {
                let mut s = _mm512_dpbusd_epi32(_mm512_setzero_si512(), q, y[c]);
                let scale = match kind {
                    Kind::Q4_1 => {
                        summs[pp][c] = _mm_fmadd_ps(wd, xsm[c], summs[pp][c]);
                        spread(_mm_mul_ps(wd, xdm[c]), idx02)
                    }
                    _ => {
                        s = _mm512_sub_epi32(s, corr[c]);
                        // wd = [da, db, da, db]: lanes 0 and 2 are da and db
                        let p = _mm_mul_ps(_mm_unpacklo_ps(wd, wd), xdm[c]);
                        spread(p, idx02)
                    }
                };
                acc[pp][c] = _mm512_fmadd_ps(scale, _mm512_cvtepi32_ps(s), acc[pp][c]);
            }
        }
    }
    for pp in 0..P {
        for c in 0..C {
            let (lo, hi) = hsum_halves(acc[pp][c]);
            let (ma, mb) = if kind == Kind::Q4_1 {
                let s = summs[pp][c];
                (
                    _mm_cvtss_f32(_mm_shuffle_ps::<1>(s, s)),
                    _mm_cvtss_f32(_mm_shuffle_ps::<3>(s, s)),
                )
            } else {
                (0.0, 0.0)
            };
            if kind == Kind::Q4_1 {
                out[2 * pp][c] = lo + ma;
                out[2 * pp + 1][c] = hi + mb;
            } else {
                out[2 * pp][c] = lo;
                out[2 * pp + 1][c] = hi;
            }
        }
    }
}
