//! AVX2 kernels over the 16-row groups (no VNNI): a 256-bit register holds
//! eight rows' four bytes of a step, `vpmaddubsw` with the broadcast
//! activation word gives each row's pair sums, `vpmaddwd` by one the four-
//! product sums. The integers are exact (no saturation for the level ranges
//! noted per type), so every output equals the scalar twin's bit for bit:
//! `acc = fma(d_w * d_x, isum, acc)` per block, one accumulator per row.

use super::{packed_scalar, GgmlType, Q4K_GROUP, Q50_GROUP, Q51_GROUP, Q5K_GROUP, Q6K_GROUP, ROWS};
use std::arch::x86_64::*;

/// Types with AVX2 kernels here (the others take the scalar twin).
pub(super) fn has(ty: GgmlType) -> bool {
    matches!(
        ty,
        GgmlType::Q4_0
            | GgmlType::Q5_0
            | GgmlType::Q8_0
            | GgmlType::Q4_1
            | GgmlType::Q5_1
            | GgmlType::Q4K
            | GgmlType::Q5K
            | GgmlType::Q6K
    )
}

/// [`super::kernels`] at AVX2.
pub(super) fn packed<const C: usize>(
    ty: GgmlType,
    w: &[u8],
    x: &[&[u8]; C],
    ys: &[&[i32]; C],
    out: &mut [[f32; C]; ROWS],
) {
    if !has(ty) {
        return packed_scalar::<C>(ty, w, x, ys, out);
    }
    let gbb = super::group_block_bytes(ty).expect("a packed type");
    let nb = w.len() / gbb;
    let kq = matches!(ty, GgmlType::Q4K | GgmlType::Q5K | GgmlType::Q6K);
    // Q4_1 and Q5_1 take Q8_1 activations (36-byte blocks with their sums)
    let q41 = matches!(ty, GgmlType::Q4_1 | GgmlType::Q5_1);
    let xb = match (kq, q41) {
        (true, _) => 292,
        (_, true) => 36,
        _ => 34,
    };
    let ok = w.len() == nb * gbb
        && x.iter().all(|r| r.len() >= nb * xb)
        && (kq || q41 || ys.iter().all(|s| s.len() >= nb));
    assert!(ok, "row sizes");
    assert!(crate::cpu::detected() >= crate::cpu::Level::Avx2);
    let one = std::array::from_mut(out);
    let (w1, xp) = ([w.as_ptr()], x.map(<[u8]>::as_ptr));
    // SAFETY: the CPU has AVX2, FMA and F16C (asserted); the asserts prove
    // every block the kernel reads is in bounds (all loads unaligned).
    // Four columns take the eight rows of one half per pass, so the
    // accumulators stay in registers.
    unsafe {
        match (ty, C) {
            (GgmlType::Q4_0, 1) => q4_0::<C, 1, 2, false, false>(nb, w1, &xp, ys, one),
            (GgmlType::Q4_0, _) => q4_0::<C, 1, 1, false, false>(nb, w1, &xp, ys, one),
            (GgmlType::Q5_0, 1) => q4_0::<C, 1, 2, true, false>(nb, w1, &xp, ys, one),
            (GgmlType::Q5_0, _) => q4_0::<C, 1, 1, true, false>(nb, w1, &xp, ys, one),
            (GgmlType::Q5_1, 1) => q4_0::<C, 1, 2, true, true>(nb, w1, &xp, ys, one),
            (GgmlType::Q5_1, _) => q4_0::<C, 1, 1, true, true>(nb, w1, &xp, ys, one),
            (GgmlType::Q4_1, 1) => q4_1::<C, 8, 2>(nb, w.as_ptr(), &xp, &mut one[0], 0),
            (GgmlType::Q4_1, _) => {
                q4_1::<C, 2, 1>(nb, w.as_ptr(), &xp, &mut one[0], 0);
                q4_1::<C, 2, 1>(nb, w.as_ptr(), &xp, &mut one[0], 1)
            }
            (GgmlType::Q4K, 1) => q4_k::<C, 1, 2, false>(nb, w1, &xp, one),
            (GgmlType::Q4K, _) => q4_k::<C, 1, 1, false>(nb, w1, &xp, one),
            (GgmlType::Q5K, 1) => q4_k::<C, 1, 2, true>(nb, w1, &xp, one),
            (GgmlType::Q5K, _) => q4_k::<C, 1, 1, true>(nb, w1, &xp, one),
            (GgmlType::Q6K, 1) => q6_k::<C, 1, 2>(nb, w1, &xp, one),
            (GgmlType::Q6K, _) => q6_k::<C, 1, 1>(nb, w1, &xp, one),
            (_, 1) => q8_0::<C, 1, 2>(nb, w1, &xp, one),
            _ => q8_0::<C, 1, 1>(nb, w1, &xp, one),
        }
    }
}

/// [`super::packed_groups`] at AVX2: one column over `G` groups in
/// lockstep.
///
/// # Safety
/// The CPU has AVX2, FMA and F16C; `ty` is one [`has`] takes, not Q4_1
/// or Q5_1 (whose one-column kernels need their registers for one group,
/// so they have no lockstep form); every group
/// holds `nb` blocks of `ty` and `x` (with `ys`) `nb` Q8_0 blocks.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn groups<const G: usize>(
    ty: GgmlType,
    nb: usize,
    w: [*const u8; G],
    x: *const u8,
    ys: &[i32],
    out: &mut [[[f32; 1]; ROWS]; G],
) {
    let x = [x];
    match ty {
        GgmlType::Q4_0 => q4_0::<1, G, 2, false, false>(nb, w, &x, &[ys], out),
        GgmlType::Q5_0 => q4_0::<1, G, 2, true, false>(nb, w, &x, &[ys], out),
        GgmlType::Q4K => q4_k::<1, G, 2, false>(nb, w, &x, out),
        GgmlType::Q5K => q4_k::<1, G, 2, true>(nb, w, &x, out),
        GgmlType::Q6K => q6_k::<1, G, 2>(nb, w, &x, out),
        _ => q8_0::<1, G, 2>(nb, w, &x, out),
    }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn bcast(p: *const u8) -> __m256i {
    _mm256_set1_epi32(p.cast::<i32>().read_unaligned())
}

/// The f16 at `p` as f32, in all eight lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn bcast_f16(p: *const u8) -> __m256 {
    let h = _mm_set1_epi16(p.cast::<i16>().read_unaligned());
    _mm256_set1_ps(_mm_cvtss_f32(_mm_cvtph_ps(h)))
}

/// Prefetches the block group `ahead` groups after the one at `g` (`gb`
/// bytes each; see [`super::prefetch_blocks`]); only a hint (`wrapping_add`,
/// never dereferenced). Non-temporal: decode reads each weight once per
/// token, so its lines need not displace the activations and the KV cache
/// from the outer caches (on the Zen 3 it measured no worse than `T0`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn prefetch_ahead(g: *const u8, gb: usize, ahead: usize) {
    let p = g.wrapping_add(ahead.wrapping_mul(gb));
    for l in (0..gb).step_by(64) {
        _mm_prefetch::<_MM_HINT_NTA>(p.wrapping_add(l).cast());
    }
}

/// Bit `k` of every byte of `h` moved to bit 4, masked to it.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn fifth(h: __m256i, k: usize) -> __m256i {
    let b = match k {
        0 => _mm256_slli_epi16(h, 4),
        1 => _mm256_slli_epi16(h, 3),
        2 => _mm256_slli_epi16(h, 2),
        3 => _mm256_slli_epi16(h, 1),
        4 => h,
        5 => _mm256_srli_epi16(h, 1),
        6 => _mm256_srli_epi16(h, 2),
        _ => _mm256_srli_epi16(h, 3),
    };
    _mm256_and_si256(b, _mm256_set1_epi8(0x10))
}

/// Stores the eight lanes of `acc` as rows `8h..8h + 8` of column `c`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn store_half<const C: usize>(acc: __m256, h: usize, c: usize, out: &mut [[f32; C]; ROWS]) {
    let mut v = [0.0f32; 8];
    _mm256_storeu_ps(v.as_mut_ptr(), acc);
    for (l, &x) in v.iter().enumerate() {
        out[8 * h + l][c] = x;
    }
}

/// Q4_0 (or, with `Q5`, Q5_0; with `Q5` and `M`, Q5_1) groups times `C`
/// Q8_0 (for Q5_1, Q8_1) columns; `HB` halves of a group (eight rows each)
/// per pass over the blocks. Pair sums of `vpmaddubsw` stay within i16
/// summed over a block for Q4_0 (8 x 2 x 15 x 128 < 2^15) and over half a
/// block for Q5_0 and Q5_1 (4 x 2 x 31 x 128). Q5_1's levels need no
/// offset correction; its minimums' terms `fma(m_w, s_x, summ)` go block
/// by block beside the scaled sums and are added last, as in the twin.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4_0<const C: usize, const G: usize, const HB: usize, const Q5: bool, const M: bool>(
    nb: usize,
    w: [*const u8; G],
    x: &[*const u8; C],
    ys: &[&[i32]; C],
    out: &mut [[[f32; C]; ROWS]; G],
) {
    let pf = super::prefetch_blocks(if Q5 { 0 } else { super::AVX2_PREFETCH_AHEAD });
    let m4 = _mm256_set1_epi8(0x0f);
    let ones = _mm256_set1_epi16(1);
    let (gb, off) = match (Q5, M) {
        (_, true) => (Q51_GROUP, 0),
        (true, _) => (Q50_GROUP, 16),
        _ => (18 * ROWS, 8),
    };
    // where the nibbles start (after the scales, and Q5_1's minimums), and
    // an activation block's bytes and where its levels start
    let qs = if M { 4 * ROWS } else { 2 * ROWS };
    let (xbb, xq) = if M { (36, 4) } else { (34, 2) };
    for h0 in (0..2).step_by(HB) {
        let mut acc = [[[_mm256_setzero_ps(); C]; HB]; G];
        let mut summ = [[[_mm256_setzero_ps(); C]; HB]; G];
        for i in 0..nb {
            for k in 0..G {
                let g = w[k].add(i * gb);
                if C == 1 && h0 == 0 && pf > 0 {
                    prefetch_ahead(g, gb, pf);
                }
                for hh in 0..HB {
                    let h = h0 + hh;
                    let wd = _mm256_cvtph_ps(_mm_loadu_si128(g.add(16 * h).cast()));
                    // Q5_1's minimums, after the sixteen scales
                    let wm = if M {
                        _mm256_cvtph_ps(_mm_loadu_si128(g.add(32 + 16 * h).cast()))
                    } else {
                        _mm256_setzero_ps()
                    };
                    let hq = if Q5 {
                        _mm256_loadu_si256(g.add(qs + 16 * ROWS + 32 * h).cast())
                    } else {
                        _mm256_setzero_si256()
                    };
                    let mut s32 = [_mm256_setzero_si256(); C];
                    let mut s16 = [_mm256_setzero_si256(); C];
                    for s in 0..4 {
                        let v = _mm256_loadu_si256(g.add(qs + 4 * ROWS * s + 32 * h).cast());
                        let mut lo = _mm256_and_si256(v, m4);
                        let mut hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
                        if Q5 {
                            lo = _mm256_or_si256(lo, fifth(hq, 2 * s));
                            hi = _mm256_or_si256(hi, fifth(hq, 2 * s + 1));
                        }
                        for c in 0..C {
                            let y = x[c].add(i * xbb + xq);
                            let a = _mm256_maddubs_epi16(lo, bcast(y.add(4 * s)));
                            let b = _mm256_maddubs_epi16(hi, bcast(y.add(16 + 4 * s)));
                            s16[c] = _mm256_add_epi16(s16[c], _mm256_add_epi16(a, b));
                        }
                        if (Q5 && s % 2 == 1) || s == 3 {
                            for c in 0..C {
                                s32[c] = _mm256_add_epi32(s32[c], _mm256_madd_epi16(s16[c], ones));
                                s16[c] = _mm256_setzero_si256();
                            }
                        }
                    }
                    for c in 0..C {
                        let xb = x[c].add(i * xbb);
                        let is = if M {
                            s32[c]
                        } else {
                            let corr = _mm256_set1_epi32(off * *ys[c].get_unchecked(i));
                            _mm256_sub_epi32(s32[c], corr)
                        };
                        let scale = _mm256_mul_ps(wd, bcast_f16(xb));
                        acc[k][hh][c] =
                            _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(is), acc[k][hh][c]);
                        if M {
                            summ[k][hh][c] =
                                _mm256_fmadd_ps(wm, bcast_f16(xb.add(2)), summ[k][hh][c]);
                        }
                    }
                }
            }
        }
        for k in 0..G {
            for hh in 0..HB {
                for c in 0..C {
                    let v = if M {
                        _mm256_add_ps(acc[k][hh][c], summ[k][hh][c])
                    } else {
                        acc[k][hh][c]
                    };
                    store_half(v, h0 + hh, c, &mut out[k]);
                }
            }
        }
    }
}

/// Q8_0 groups times `C` Q8_0 columns, `HB` halves per pass. The levels
/// are stored offset by 128; flipping the top bit gives the signed level
/// w, and `vpmaddubsw(|w|, sign(y, w))` sums pairs of at most 2 x 128 x
/// 127 (activations from our quantizer lie in -127..=127), so the block's
/// integer is the exact `sum(w * y)`, the twin's `isum` with no offset
/// correction to subtract.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q8_0<const C: usize, const G: usize, const HB: usize>(
    nb: usize,
    w: [*const u8; G],
    x: &[*const u8; C],
    out: &mut [[[f32; C]; ROWS]; G],
) {
    let pf = super::prefetch_blocks(0);
    let ones = _mm256_set1_epi16(1);
    let top = _mm256_set1_epi8(-128);
    let gb = 34 * ROWS;
    for h0 in (0..2).step_by(HB) {
        let mut acc = [[[_mm256_setzero_ps(); C]; HB]; G];
        for i in 0..nb {
            for k in 0..G {
                let g = w[k].add(i * gb);
                if C == 1 && h0 == 0 && pf > 0 {
                    prefetch_ahead(g, gb, pf);
                }
                for hh in 0..HB {
                    let h = h0 + hh;
                    let wd = _mm256_cvtph_ps(_mm_loadu_si128(g.add(16 * h).cast()));
                    let mut s32 = [_mm256_setzero_si256(); C];
                    for s in 0..8 {
                        let v = _mm256_loadu_si256(g.add(2 * ROWS + 4 * ROWS * s + 32 * h).cast());
                        let q = _mm256_xor_si256(v, top);
                        let aq = _mm256_sign_epi8(q, q);
                        for c in 0..C {
                            let y = bcast(x[c].add(i * 34 + 2 + 4 * s));
                            let p = _mm256_maddubs_epi16(aq, _mm256_sign_epi8(y, q));
                            s32[c] = _mm256_add_epi32(s32[c], _mm256_madd_epi16(p, ones));
                        }
                    }
                    for c in 0..C {
                        let scale = _mm256_mul_ps(wd, bcast_f16(x[c].add(i * 34)));
                        acc[k][hh][c] =
                            _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(s32[c]), acc[k][hh][c]);
                    }
                }
            }
        }
        for k in 0..G {
            for hh in 0..HB {
                for c in 0..C {
                    store_half(acc[k][hh][c], h0 + hh, c, &mut out[k]);
                }
            }
        }
    }
}

/// Q4_K (or, with `Q5`, Q5_K) groups times `C` Q8_K columns, `HB` halves
/// of a group (eight rows each) per pass: the canonical dot's exact
/// integers (pair sums within i16 over a sub-block for Q4_K, 8 x 2 x 15 x
/// 128, and over half of one for Q5_K; `vpmaddwd` by each row's scale,
/// then by its minimums against the activation's sub-block sums) and its
/// f32 expression per super-block. The halves of a pass go innermost: a
/// step reads each 64-byte line of levels whole (both halves' 32 bytes)
/// against one broadcast of the activation, so a decode (one column, both
/// halves) streams the group's lines once, in address order.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4_k<const C: usize, const G: usize, const HB: usize, const Q5: bool>(
    nb: usize,
    w: [*const u8; G],
    x: &[*const u8; C],
    out: &mut [[[f32; C]; ROWS]; G],
) {
    let pf = super::prefetch_blocks(0);
    let m4 = _mm256_set1_epi8(0x0f);
    let gb = if Q5 { Q5K_GROUP } else { Q4K_GROUP };
    // a row's u8 at p + r, r = 0..8, in both i16 halves of its i32 lane
    let per_row = |p: *const u8| {
        let t = _mm256_cvtepu8_epi32(_mm_loadl_epi64(p.cast()));
        _mm256_or_si256(t, _mm256_slli_epi32::<16>(t))
    };
    for h0 in (0..2).step_by(HB) {
        let mut acc = [[[_mm256_setzero_ps(); C]; HB]; G];
        for i in 0..nb {
            // per column the i16 pairs of sub-block sums (B_2p, B_2p+1),
            // B_j the sum of sub-block j's 32 levels (below 2^13)
            let mut pairs = [[_mm256_setzero_si256(); 4]; C];
            for c in 0..C {
                let bs = x[c].add(i * 292 + 260).cast::<i16>();
                let b = |j: usize| {
                    bs.add(2 * j).read_unaligned() as i32
                        + bs.add(2 * j + 1).read_unaligned() as i32
                };
                for (p, pp) in pairs[c].iter_mut().enumerate() {
                    let word = (b(2 * p) as u16 as u32) | ((b(2 * p + 1) as u16 as u32) << 16);
                    *pp = _mm256_set1_epi32(word as i32);
                }
            }
            for k in 0..G {
                let g = w[k].add(i * gb);
                if C == 1 && h0 == 0 && pf > 0 {
                    prefetch_ahead(g, gb, pf);
                }
                let mut sumi = [[_mm256_setzero_si256(); C]; HB];
                for c2 in 0..4 {
                    let mut lo_s = [[_mm256_setzero_si256(); C]; HB];
                    let mut hi_s = [[_mm256_setzero_si256(); C]; HB];
                    for s in 0..8 {
                        let mut lo = [_mm256_setzero_si256(); HB];
                        let mut hi = [_mm256_setzero_si256(); HB];
                        for hh in 0..HB {
                            let h = h0 + hh;
                            let v =
                                _mm256_loadu_si256(g.add(320 + 64 * (8 * c2 + s) + 32 * h).cast());
                            lo[hh] = _mm256_and_si256(v, m4);
                            hi[hh] = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
                            if Q5 {
                                let hq =
                                    _mm256_loadu_si256(g.add(Q4K_GROUP + 64 * s + 32 * h).cast());
                                lo[hh] = _mm256_or_si256(lo[hh], fifth(hq, 2 * c2));
                                hi[hh] = _mm256_or_si256(hi[hh], fifth(hq, 2 * c2 + 1));
                            }
                        }
                        for c in 0..C {
                            let y = x[c].add(i * 292 + 4 + 64 * c2 + 4 * s);
                            let (ylo, yhi) = (bcast(y), bcast(y.add(32)));
                            for hh in 0..HB {
                                lo_s[hh][c] = _mm256_add_epi16(
                                    lo_s[hh][c],
                                    _mm256_maddubs_epi16(lo[hh], ylo),
                                );
                                hi_s[hh][c] = _mm256_add_epi16(
                                    hi_s[hh][c],
                                    _mm256_maddubs_epi16(hi[hh], yhi),
                                );
                            }
                        }
                        if (Q5 && s == 3) || s == 7 {
                            for hh in 0..HB {
                                let h = h0 + hh;
                                let sc_lo = per_row(g.add(64 + 16 * (2 * c2) + 8 * h));
                                let sc_hi = per_row(g.add(64 + 16 * (2 * c2 + 1) + 8 * h));
                                for c in 0..C {
                                    let t = _mm256_add_epi32(
                                        _mm256_madd_epi16(lo_s[hh][c], sc_lo),
                                        _mm256_madd_epi16(hi_s[hh][c], sc_hi),
                                    );
                                    sumi[hh][c] = _mm256_add_epi32(sumi[hh][c], t);
                                    lo_s[hh][c] = _mm256_setzero_si256();
                                    hi_s[hh][c] = _mm256_setzero_si256();
                                }
                            }
                        }
                    }
                }
                for hh in 0..HB {
                    let h = h0 + hh;
                    let d = _mm256_cvtph_ps(_mm_loadu_si128(g.add(16 * h).cast()));
                    let dmin = _mm256_cvtph_ps(_mm_loadu_si128(g.add(32 + 16 * h).cast()));
                    // the minimums' term: per pair of sub-blocks the (min, min)
                    // i16 pairs of the eight rows against (B_2p, B_2p+1)
                    let mnp: [__m256i; 4] = std::array::from_fn(|p| {
                        _mm256_cvtepu8_epi16(_mm_loadu_si128(g.add(192 + 32 * p + 16 * h).cast()))
                    });
                    for c in 0..C {
                        let mut summ = _mm256_setzero_si256();
                        for p in 0..4 {
                            summ = _mm256_add_epi32(summ, _mm256_madd_epi16(mnp[p], pairs[c][p]));
                        }
                        let yd = _mm256_set1_ps(x[c].add(i * 292).cast::<f32>().read_unaligned());
                        let t = _mm256_mul_ps(d, _mm256_cvtepi32_ps(sumi[hh][c]));
                        let u = _mm256_mul_ps(dmin, _mm256_cvtepi32_ps(summ));
                        acc[k][hh][c] =
                            _mm256_add_ps(acc[k][hh][c], _mm256_mul_ps(yd, _mm256_sub_ps(t, u)));
                    }
                }
            }
        }
        for k in 0..G {
            for hh in 0..HB {
                for c in 0..C {
                    store_half(acc[k][hh][c], h0 + hh, c, &mut out[k]);
                }
            }
        }
    }
}

/// Q6_K groups times `C` Q8_K columns, `HB` halves of a group (eight rows
/// each) per pass: the canonical dot's exact integer per super-block,
/// `sum_j sc_j * (sum(u * y) - 32 * B_j)` with u the unsigned levels
/// (0..64, so a `vpmaddubsw` pair is at most 2 x 63 x 128) and B_j the
/// activation's 16-element sums, then its f32 expression. As in [`q4_k`],
/// the halves go innermost, so each line of levels is read whole.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q6_k<const C: usize, const G: usize, const HB: usize>(
    nb: usize,
    w: [*const u8; G],
    x: &[*const u8; C],
    out: &mut [[[f32; C]; ROWS]; G],
) {
    let pf = super::prefetch_blocks(0);
    let (m4, m30) = (_mm256_set1_epi8(0x0f), _mm256_set1_epi8(0x30));
    let lo16 = _mm256_set1_epi32(0xffff);
    for h0 in (0..2).step_by(HB) {
        let mut acc = [[[_mm256_setzero_ps(); C]; HB]; G];
        for i in 0..nb {
            for k in 0..G {
                let g = w[k].add(i * Q6K_GROUP);
                if C == 1 && h0 == 0 && pf > 0 {
                    prefetch_ahead(g, Q6K_GROUP, pf);
                }
                // row scale of sub-block j (signed) in both i16 halves
                let sc = |j: usize, half: usize| {
                    let t =
                        _mm256_cvtepi8_epi32(_mm_loadl_epi64(g.add(32 + 16 * j + 8 * half).cast()));
                    _mm256_or_si256(_mm256_and_si256(t, lo16), _mm256_slli_epi32::<16>(t))
                };
                let mut sumi = [[_mm256_setzero_si256(); C]; HB];
                for h in 0..2 {
                    for quarter in 0..2 {
                        // steps 4 * quarter.. feed sub-blocks 8h + 2t + quarter
                        let sct: [[__m256i; 4]; HB] = std::array::from_fn(|hh| {
                            std::array::from_fn(|t| sc(8 * h + 2 * t + quarter, h0 + hh))
                        });
                        for s in 4 * quarter..4 * quarter + 4 {
                            let q: [[__m256i; 4]; HB] = std::array::from_fn(|hh| {
                                let base = g.add(288 + 192 * (8 * h + s) + 32 * (h0 + hh));
                                let a = _mm256_loadu_si256(base.cast());
                                let b = _mm256_loadu_si256(base.add(64).cast());
                                let hb = _mm256_loadu_si256(base.add(128).cast());
                                // bits sh, sh + 1 of each byte moved to bits 4, 5
                                // (a 16-bit shift, then the mask drops what
                                // crossed between the bytes)
                                let hi = |sh: u32| -> __m256i {
                                    let v = match sh {
                                        0 => _mm256_slli_epi16(hb, 4),
                                        2 => _mm256_slli_epi16(hb, 2),
                                        4 => hb,
                                        _ => _mm256_srli_epi16(hb, 2),
                                    };
                                    _mm256_and_si256(v, m30)
                                };
                                [
                                    _mm256_or_si256(_mm256_and_si256(a, m4), hi(0)),
                                    _mm256_or_si256(_mm256_and_si256(b, m4), hi(2)),
                                    _mm256_or_si256(
                                        _mm256_and_si256(_mm256_srli_epi16(a, 4), m4),
                                        hi(4),
                                    ),
                                    _mm256_or_si256(
                                        _mm256_and_si256(_mm256_srli_epi16(b, 4), m4),
                                        hi(6),
                                    ),
                                ]
                            });
                            for c in 0..C {
                                let y = x[c].add(i * 292 + 4 + 128 * h + 4 * s);
                                for t in 0..4 {
                                    let yt = bcast(y.add(32 * t));
                                    for hh in 0..HB {
                                        let p = _mm256_maddubs_epi16(q[hh][t], yt);
                                        sumi[hh][c] = _mm256_add_epi32(
                                            sumi[hh][c],
                                            _mm256_madd_epi16(p, sct[hh][t]),
                                        );
                                    }
                                }
                            }
                        }
                    }
                }
                for hh in 0..HB {
                    let half = h0 + hh;
                    let d = _mm256_cvtph_ps(_mm_loadu_si128(g.add(16 * half).cast()));
                    // the offset term: per pair of sub-blocks the rows' (sc, sc)
                    // i16 pairs against (B_2p, B_2p+1), times 32
                    let scp: [__m256i; 8] = std::array::from_fn(|p| {
                        let a = _mm_loadl_epi64(g.add(32 + 16 * (2 * p) + 8 * half).cast());
                        let b = _mm_loadl_epi64(g.add(32 + 16 * (2 * p + 1) + 8 * half).cast());
                        _mm256_cvtepi8_epi16(_mm_unpacklo_epi8(a, b))
                    });
                    for c in 0..C {
                        let bs = x[c].add(i * 292 + 260).cast::<u32>();
                        let mut corr = _mm256_setzero_si256();
                        for (p, sp) in scp.iter().enumerate() {
                            let pair = _mm256_set1_epi32(bs.add(p).read_unaligned() as i32);
                            corr = _mm256_add_epi32(corr, _mm256_madd_epi16(*sp, pair));
                        }
                        let isum = _mm256_sub_epi32(sumi[hh][c], _mm256_slli_epi32::<5>(corr));
                        let yd = _mm256_set1_ps(x[c].add(i * 292).cast::<f32>().read_unaligned());
                        let p = _mm256_mul_ps(_mm256_mul_ps(d, yd), _mm256_cvtepi32_ps(isum));
                        acc[k][hh][c] = _mm256_add_ps(acc[k][hh][c], p);
                    }
                }
            }
        }
        for k in 0..G {
            for hh in 0..HB {
                for c in 0..C {
                    store_half(acc[k][hh][c], h0 + hh, c, &mut out[k]);
                }
            }
        }
    }
}

/// ggml's `hsum_float_8`: ((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7)).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn hsum_f32_8(x: __m256) -> f32 {
    let r = _mm_add_ps(_mm256_extractf128_ps(x, 1), _mm256_castps256_ps128(x));
    let r = _mm_add_ps(r, _mm_movehl_ps(r, r));
    let r = _mm_add_ss(r, _mm_movehdup_ps(r));
    _mm_cvtss_f32(r)
}

/// Q4_1 groups times `C` Q8_1 columns, the halves `h0..h0 + HS` of the
/// group (rows `8h..8h + 8` each) in passes of `NR` rows: ggml's own order
/// (see the module docs), each row one register of eight lanes, lane l
/// summing elements 4l..4l + 4 of each block as `vpmaddubsw` then
/// `vpmaddwd` by one (15 x 127 x 2 fits i16). The products `d_w * d_x` and
/// the minimums' terms `fma(m_w, s_x, summ)` are taken eight rows to a
/// register: lane by lane the same f32 operations as the scalar
/// expression, so the result is bit for bit. Every half of a call takes
/// each pair of blocks before the next pair: with both halves (decode)
/// the group's lines are read once, in address order (a half at a time
/// over the whole group reads each pair's lines in two interleaved
/// strides, which the prefetchers follow poorly); a row's blocks
/// accumulate in the same order either way.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4_1<const C: usize, const NR: usize, const HS: usize>(
    nb: usize,
    w: *const u8,
    x: &[*const u8; C],
    out: &mut [[f32; C]; ROWS],
    h0: usize,
) {
    let pf = super::prefetch_blocks(super::AVX2_PREFETCH_AHEAD);
    use super::Q41_GROUP;
    let chunk = 2 * Q41_GROUP;
    // the minimums' sums of each half's eight rows, made in the first pass
    let mut sm = [[[0.0f32; 8]; C]; HS];
    for p0 in (0..8).step_by(NR) {
        let mut acc = [[[_mm256_setzero_ps(); C]; NR]; HS];
        let mut summ = [[_mm256_setzero_ps(); C]; HS];
        let mut i = 0;
        while i + 2 <= nb {
            let g = w.add(i / 2 * chunk);
            if C == 1 && h0 == 0 && pf > 0 {
                prefetch_ahead(g, chunk, pf);
            }
            for (hh, (acc, summ)) in acc.iter_mut().zip(&mut summ).enumerate() {
                let h = h0 + hh;
                // block i in the low nibbles, block i + 1 in the high
                for b in 0..2 {
                    q4_1_block::<C, NR>(
                        g.add(32 * b + 16 * h),
                        g.add(64 + 32 * b + 16 * h),
                        x.map(|r| r.add((i + b) * 36)),
                        |rr| {
                            let r = 8 * h + p0 + rr;
                            (g.add(128 + 64 * (r / 2) + 32 * (r % 2)), b == 1)
                        },
                        p0,
                        acc,
                        (p0 == 0).then_some(&mut *summ),
                    );
                }
            }
            i += 2;
        }
        if i < nb {
            // an odd last block: a pair's two rows share its bytes
            let g = w.add(i / 2 * chunk);
            for (hh, (acc, summ)) in acc.iter_mut().zip(&mut summ).enumerate() {
                let h = h0 + hh;
                q4_1_block::<C, NR>(
                    g.add(16 * h),
                    g.add(32 + 16 * h),
                    x.map(|r| r.add(i * 36)),
                    |rr| {
                        let r = 8 * h + p0 + rr;
                        (g.add(64 + 32 * (r / 2)), r % 2 == 1)
                    },
                    p0,
                    acc,
                    (p0 == 0).then_some(&mut *summ),
                );
            }
        }
        for hh in 0..HS {
            let h = h0 + hh;
            if p0 == 0 {
                for c in 0..C {
                    _mm256_storeu_ps(sm[hh][c].as_mut_ptr(), summ[hh][c]);
                }
            }
            for rr in 0..NR {
                for c in 0..C {
                    out[8 * h + p0 + rr][c] = hsum_f32_8(acc[hh][rr][c]) + sm[hh][c][p0 + rr];
                }
            }
        }
    }
}

/// One Q4_1 block of rows `p0..p0 + NR` of a half against the Q8_1 blocks
/// `xb`: the half's eight f16 scales at `wd` and minimums at `wm`; row
/// `rr`'s levels are the low (or, where `levels(rr).1`, high) nibbles of
/// the 32 bytes at `levels(rr).0`. `summ`, where given, takes the
/// minimums' terms of all eight rows.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4_1_block<const C: usize, const NR: usize>(
    wd: *const u8,
    wm: *const u8,
    xb: [*const u8; C],
    levels: impl Fn(usize) -> (*const u8, bool),
    p0: usize,
    acc: &mut [[__m256; C]; NR],
    summ: Option<&mut [__m256; C]>,
) {
    let m4 = _mm256_set1_epi8(0x0f);
    let ones = _mm256_set1_epi16(1);
    let d = _mm256_cvtph_ps(_mm_loadu_si128(wd.cast()));
    let mut sc = [[0.0f32; 8]; C];
    for c in 0..C {
        _mm256_storeu_ps(sc[c].as_mut_ptr(), _mm256_mul_ps(d, bcast_f16(xb[c])));
    }
    if let Some(summ) = summ {
        let m = _mm256_cvtph_ps(_mm_loadu_si128(wm.cast()));
        for c in 0..C {
            summ[c] = _mm256_fmadd_ps(m, bcast_f16(xb[c].add(2)), summ[c]);
        }
    }
    for rr in 0..NR {
        let (p, hi) = levels(rr);
        let v = _mm256_loadu_si256(p.cast());
        let q = if hi {
            _mm256_and_si256(_mm256_srli_epi16(v, 4), m4)
        } else {
            _mm256_and_si256(v, m4)
        };
        for c in 0..C {
            let y = _mm256_loadu_si256(xb[c].add(4).cast());
            let s = _mm256_madd_epi16(_mm256_maddubs_epi16(q, y), ones);
            let scale = _mm256_broadcast_ss(&sc[c][p0 + rr]);
            acc[rr][c] = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(s), acc[rr][c]);
        }
    }
}
