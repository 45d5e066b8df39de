//! x86-64 SIMD dot products of weight rows with quantized activation rows.
//!
//! Each kernel computes exactly what its scalar twin in `quant/` computes,
//! bit for bit:
//! - 32-element block types (Q4_0, Q4_1, Q8_0) keep ggml's x86 order
//!   ([`crate::quant`]'s `Lanes8`): eight f32 lanes, each fed per block with
//!   `fma(scale, exact sum of 4 consecutive products, lane)`, reduced as
//!   ((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7)).
//! - k-quants (Q4_K, Q6_K) sum each super-block's products as exact
//!   integers (any order gives the same integer), then combine them in one
//!   fixed f32 expression per super-block, accumulated in order.
//!
//! Two instantiations of each body: AVX2 (`vpmaddubsw` + `vpmaddwd` for the
//! four-product sums) and AVX-512 VNNI (`vpdpbusd`, one instruction). The
//! integer results are identical: the products of these types never
//! saturate `vpmaddubsw` (|u8 x i8| pairs stay below 2^15 for the level
//! ranges used here and for activations from our quantizers).

#![cfg(target_arch = "x86_64")]

use std::arch::x86_64::*;

use crate::cpu::Level;
use crate::quant::DotTiles;
use crate::types::GgmlType;
use crate::x86_512::Kind;

/// f16 bits at `p` (unaligned) as f32, exactly.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn f16_at(p: *const u8) -> f32 {
    // a broadcast load: `_mm_cvtsi32_si128` becomes a `vpinsrw` merging
    // into whatever register is free, often an accumulator, which chains
    // every block's scale load to the previous block's FMA
    let bits = p.cast::<i16>().read_unaligned();
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_set1_epi16(bits)))
}

/// ggml's `hsum_float_8`: ((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7)).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn hsum_f32_8(x: __m256) -> f32 {
    let r = _mm_add_ps(_mm256_extractf128_ps(x, 1), _mm256_castps256_ps128(x));
    let r = _mm_add_ps(r, _mm_movehl_ps(r, r));
    let r = _mm_add_ss(r, _mm_movehdup_ps(r));
    _mm_cvtss_f32(r)
}

/// Sum of eight i32 lanes (exact while it fits, as here).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn hsum_i32_8(x: __m256i) -> i32 {
    let r = _mm_add_epi32(_mm256_extracti128_si256(x, 1), _mm256_castsi256_si128(x));
    let r = _mm_add_epi32(r, _mm_shuffle_epi32(r, 0b01_00_11_10));
    let r = _mm_add_epi32(r, _mm_shuffle_epi32(r, 0b10_11_00_01));
    _mm_cvtsi128_si32(r)
}

/// Lane k = a[4k]*b[4k] + ... + a[4k+3]*b[4k+3] (a unsigned, b signed).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot4_avx2(a: __m256i, b: __m256i) -> __m256i {
    _mm256_madd_epi16(_mm256_maddubs_epi16(a, b), _mm256_set1_epi16(1))
}

/// The same with one VNNI instruction.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn dot4_vnni(a: __m256i, b: __m256i) -> __m256i {
    _mm256_dpbusd_epi32(_mm256_setzero_si256(), a, b)
}

/// 32 nibbles of 16 bytes: low nibbles first (elements 0..16), then high.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn nibbles_32(p: *const u8) -> __m256i {
    let t = _mm_loadu_si128(p.cast());
    let m4 = _mm_set1_epi8(0x0f);
    let lo = _mm_and_si128(t, m4);
    let hi = _mm_and_si128(_mm_srli_epi16(t, 4), m4);
    _mm256_set_m128i(hi, lo)
}

/// Byte j = 0x10 where bit j of `qh` is set: the fifth bits of a Q5_0 or
/// Q5_1 block, ready to be or-ed onto its nibbles.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn fifth_bits_32(qh: u32) -> __m256i {
    let v = _mm256_set1_epi32(qh as i32);
    let shuf = _mm256_setr_epi8(
        0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3,
        3, 3,
    );
    let b = _mm256_shuffle_epi8(v, shuf);
    let m = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
    let set = _mm256_cmpeq_epi8(_mm256_and_si256(b, m), m);
    _mm256_and_si256(set, _mm256_set1_epi8(0x10))
}

/// The 6-bit scales and minimums of a Q4_K/Q5_K super-block.
#[inline]
fn scales_mins_k4(q: &[u8; 12]) -> ([i32; 8], [i32; 8]) {
    let (mut sc, mut m) = ([0i32; 8], [0i32; 8]);
    for j in 0..8 {
        let (s, mm) = crate::quant::kquant_scale_min(j, q);
        sc[j] = s as i32;
        m[j] = mm as i32;
    }
    (sc, m)
}

macro_rules! dots {
    ($level:ident, $feat:literal, $dot4:ident) => {
        mod $level {
            use super::*;

            /// Q4_0 x Q8_0: `R` weight rows times `C` activation rows, `nb`
            /// blocks each; every output in its scalar twin's order.
            #[target_feature(enable = $feat)]
            pub unsafe fn q4_0<const R: usize, const C: usize>(
                nb: usize,
                w: &[*const u8; R],
                x: &[*const u8; C],
                out: &mut [[f32; C]; R],
            ) {
                symmetric::<R, C, false>(nb, w, x, out)
            }

            /// Q5_0 x Q8_0, as `q4_0` (levels -16..15).
            #[target_feature(enable = $feat)]
            pub unsafe fn q5_0<const R: usize, const C: usize>(
                nb: usize,
                w: &[*const u8; R],
                x: &[*const u8; C],
                out: &mut [[f32; C]; R],
            ) {
                symmetric::<R, C, true>(nb, w, x, out)
            }

            /// Q4_0 (or, with `Q5`, Q5_0) x Q8_0.
            #[inline]
            #[target_feature(enable = $feat)]
            unsafe fn symmetric<const R: usize, const C: usize, const Q5: bool>(
                nb: usize,
                w: &[*const u8; R],
                x: &[*const u8; C],
                out: &mut [[f32; C]; R],
            ) {
                let mut acc = [[_mm256_setzero_ps(); C]; R];
                let (bb, off) = if Q5 {
                    (22, _mm256_set1_epi8(16))
                } else {
                    (18, _mm256_set1_epi8(8))
                };
                for i in 0..nb {
                    let mut xd = [0.0f32; C];
                    let mut qy = [_mm256_setzero_si256(); C];
                    for c in 0..C {
                        let xb = x[c].add(i * 34);
                        xd[c] = f16_at(xb);
                        qy[c] = _mm256_loadu_si256(xb.add(2).cast());
                    }
                    for r in 0..R {
                        let wb = w[r].add(i * bb);
                        let wd = f16_at(wb);
                        let q = if Q5 {
                            let qh = wb.add(2).cast::<u32>().read_unaligned();
                            _mm256_or_si256(nibbles_32(wb.add(6)), fifth_bits_32(qh))
                        } else {
                            nibbles_32(wb.add(2))
                        };
                        let qx = _mm256_sub_epi8(q, off);
                        let ax = _mm256_sign_epi8(qx, qx);
                        for c in 0..C {
                            let s = $dot4(ax, _mm256_sign_epi8(qy[c], qx));
                            acc[r][c] = _mm256_fmadd_ps(
                                _mm256_set1_ps(wd * xd[c]),
                                _mm256_cvtepi32_ps(s),
                                acc[r][c],
                            );
                        }
                    }
                }
                for r in 0..R {
                    for c in 0..C {
                        out[r][c] = hsum_f32_8(acc[r][c]);
                    }
                }
            }

            /// F16 x F32 over `n` elements: eight lanes of fused
            /// multiply-adds, the tail and the lane sum as the scalar twin.
            #[target_feature(enable = $feat)]
            pub unsafe fn f16<const R: usize, const C: usize>(
                n: usize,
                w: &[*const u8; R],
                x: &[*const u8; C],
                out: &mut [[f32; C]; R],
            ) {
                floats::<R, C, false>(n, w, x, out)
            }

            /// BF16 x F32, as `f16`.
            #[target_feature(enable = $feat)]
            pub unsafe fn bf16<const R: usize, const C: usize>(
                n: usize,
                w: &[*const u8; R],
                x: &[*const u8; C],
                out: &mut [[f32; C]; R],
            ) {
                floats::<R, C, true>(n, w, x, out)
            }

            #[inline]
            #[target_feature(enable = $feat)]
            unsafe fn floats<const R: usize, const C: usize, const BF: bool>(
                n: usize,
                w: &[*const u8; R],
                x: &[*const u8; C],
                out: &mut [[f32; C]; R],
            ) {
                let mut acc = [[_mm256_setzero_ps(); C]; R];
                let full = n / 8;
                for i in 0..full {
                    let mut xv = [_mm256_setzero_ps(); C];
                    for c in 0..C {
                        xv[c] = _mm256_loadu_ps(x[c].add(32 * i).cast());
                    }
                    for r in 0..R {
                        let h = _mm_loadu_si128(w[r].add(16 * i).cast());
                        let wv = if BF {
                            _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16))
                        } else {
                            _mm256_cvtph_ps(h)
                        };
                        for c in 0..C {
                            acc[r][c] = _mm256_fmadd_ps(wv, xv[c], acc[r][c]);
                        }
                    }
                }
                for r in 0..R {
                    for c in 0..C {
                        let mut lanes = [0.0f32; 8];
                        _mm256_storeu_ps(lanes.as_mut_ptr(), acc[r][c]);
                        for e in 8 * full..n {
                            let xe = x[c].add(4 * e).cast::<f32>().read_unaligned();
                            let bits = w[r].add(2 * e).cast::<u16>().read_unaligned();
                            let we = if BF {
                                crate::fp::bf16_to_f32(half::bf16::from_bits(bits))
                            } else {
                                crate::fp::f16_to_f32(half::f16::from_bits(bits))
                            };
                            let l = e - 8 * full;
                            lanes[l] = we.mul_add(xe, lanes[l]);
                        }
                        out[r][c] = lanes.iter().sum();
                    }
                }
            }

            /// Q8_0 x Q8_0, as `q4_0`.
            #[target_feature(enable = $feat)]
            pub unsafe fn q8_0<const R: usize, const C: usize>(
                nb: usize,
                w: &[*const u8; R],
                x: &[*const u8; C],
                out: &mut [[f32; C]; R],
            ) {
                let mut acc = [[_mm256_setzero_ps(); C]; R];
                for i in 0..nb {
                    let mut xd = [0.0f32; C];
                    let mut qy = [_mm256_setzero_si256(); C];
                    for c in 0..C {
                        let xb = x[c].add(i * 34);
                        xd[c] = f16_at(xb);
                        qy[c] = _mm256_loadu_si256(xb.add(2).cast());
                    }
                    for r in 0..R {
                        let wb = w[r].add(i * 34);
                        let wd = f16_at(wb);
                        let qx = _mm256_loadu_si256(wb.add(2).cast());
                        let ax = _mm256_sign_epi8(qx, qx);
                        for c in 0..C {
                            let s = $dot4(ax, _mm256_sign_epi8(qy[c], qx));
                            acc[r][c] = _mm256_fmadd_ps(
                                _mm256_set1_ps(wd * xd[c]),
                                _mm256_cvtepi32_ps(s),
                                acc[r][c],
                            );
                        }
                    }
                }
                for r in 0..R {
                    for c in 0..C {
                        out[r][c] = hsum_f32_8(acc[r][c]);
                    }
                }
            }

            /// Q4_1 x Q8_1, as `q4_0`.
            #[target_feature(enable = $feat)]
            pub unsafe fn q4_1<const R: usize, const C: usize>(
                nb: usize,
                w: &[*const u8; R],
                x: &[*const u8; C],
                out: &mut [[f32; C]; R],
            ) {
                asymmetric::<R, C, false>(nb, w, x, out)
            }

            /// Q5_1 x Q8_1, as `q4_1` (levels 0..31).
            #[target_feature(enable = $feat)]
            pub unsafe fn q5_1<const R: usize, const C: usize>(
                nb: usize,
                w: &[*const u8; R],
                x: &[*const u8; C],
                out: &mut [[f32; C]; R],
            ) {
                asymmetric::<R, C, true>(nb, w, x, out)
            }

            /// Q4_1 (or, with `Q5`, Q5_1) x Q8_1.
            #[inline]
            #[target_feature(enable = $feat)]
            unsafe fn asymmetric<const R: usize, const C: usize, const Q5: bool>(
                nb: usize,
                w: &[*const u8; R],
                x: &[*const u8; C],
                out: &mut [[f32; C]; R],
            ) {
                let bb = if Q5 { 24 } else { 20 };
                let mut acc = [[_mm256_setzero_ps(); C]; R];
                let mut summs = [[0.0f32; C]; R];
                for i in 0..nb {
                    let mut xd = [0.0f32; C];
                    let mut xs = [0.0f32; C];
                    let mut qy = [_mm256_setzero_si256(); C];
                    for c in 0..C {
                        let xb = x[c].add(i * 36);
                        xd[c] = f16_at(xb);
                        xs[c] = f16_at(xb.add(2));
                        qy[c] = _mm256_loadu_si256(xb.add(4).cast());
                    }
                    for r in 0..R {
                        let wb = w[r].add(i * bb);
                        let (wd, wm) = (f16_at(wb), f16_at(wb.add(2)));
                        let qx = if Q5 {
                            let qh = wb.add(4).cast::<u32>().read_unaligned();
                            _mm256_or_si256(nibbles_32(wb.add(8)), fifth_bits_32(qh))
                        } else {
                            nibbles_32(wb.add(4))
                        };
                        for c in 0..C {
                            summs[r][c] = wm.mul_add(xs[c], summs[r][c]);
                            let s = $dot4(qx, qy[c]);
                            acc[r][c] = _mm256_fmadd_ps(
                                _mm256_set1_ps(wd * xd[c]),
                                _mm256_cvtepi32_ps(s),
                                acc[r][c],
                            );
                        }
                    }
                }
                for r in 0..R {
                    for c in 0..C {
                        out[r][c] = hsum_f32_8(acc[r][c]) + summs[r][c];
                    }
                }
            }

            /// Q4_K x Q8_K, as `q4_0` (super-blocks).
            #[target_feature(enable = $feat)]
            pub unsafe fn q4_k<const R: usize, const C: usize>(
                nb: usize,
                w: &[*const u8; R],
                x: &[*const u8; C],
                out: &mut [[f32; C]; R],
            ) {
                k4::<R, C, false>(nb, w, x, out)
            }

            /// Q5_K x Q8_K, as `q4_k` with the fifth bits.
            #[target_feature(enable = $feat)]
            pub unsafe fn q5_k<const R: usize, const C: usize>(
                nb: usize,
                w: &[*const u8; R],
                x: &[*const u8; C],
                out: &mut [[f32; C]; R],
            ) {
                k4::<R, C, true>(nb, w, x, out)
            }

            /// Q4_K (or, with `Q5`, Q5_K) x Q8_K.
            #[inline]
            #[target_feature(enable = $feat)]
            unsafe fn k4<const R: usize, const C: usize, const Q5: bool>(
                nb: usize,
                w: &[*const u8; R],
                x: &[*const u8; C],
                out: &mut [[f32; C]; R],
            ) {
                let (bb, qs_at) = if Q5 { (176, 48) } else { (144, 16) };
                let one = _mm256_set1_epi8(1);
                let m4 = _mm256_set1_epi8(0x0f);
                let mut sum = [[0.0f32; C]; R];
                for i in 0..nb {
                    // per column: its scale and the eight 32-value bsums
                    let mut yd = [0.0f32; C];
                    let mut bs = [[0i32; 8]; C];
                    for c in 0..C {
                        let xb = x[c].add(i * 292);
                        yd[c] = xb.cast::<f32>().read_unaligned();
                        let b = xb.add(260).cast::<i16>();
                        for j in 0..8 {
                            bs[c][j] = b.add(2 * j).read_unaligned() as i32
                                + b.add(2 * j + 1).read_unaligned() as i32;
                        }
                    }
                    for r in 0..R {
                        let wb = w[r].add(i * bb);
                        let (d, dmin) = (f16_at(wb), f16_at(wb.add(2)));
                        let (sc, m) = scales_mins_k4(&*wb.add(4).cast::<[u8; 12]>());
                        let qs = wb.add(qs_at);
                        let qh = if Q5 {
                            _mm256_loadu_si256(wb.add(16).cast())
                        } else {
                            _mm256_setzero_si256()
                        };
                        let mut acc = [_mm256_setzero_si256(); C];
                        for j in 0..4 {
                            let q4 = _mm256_loadu_si256(qs.add(32 * j).cast());
                            let mut lo = _mm256_and_si256(q4, m4);
                            let mut hi = _mm256_and_si256(_mm256_srli_epi16(q4, 4), m4);
                            if Q5 {
                                // bit 2j of qh[l] tops element 64j + l, bit
                                // 2j + 1 element 64j + 32 + l
                                let fifth = |k: i32| {
                                    let b = _mm256_srl_epi16(qh, _mm_cvtsi32_si128(k));
                                    _mm256_slli_epi16(_mm256_and_si256(b, one), 4)
                                };
                                lo = _mm256_or_si256(lo, fifth(2 * j as i32));
                                hi = _mm256_or_si256(hi, fifth(2 * j as i32 + 1));
                            }
                            let (s1, s2) = (
                                _mm256_set1_epi32(sc[2 * j]),
                                _mm256_set1_epi32(sc[2 * j + 1]),
                            );
                            for c in 0..C {
                                let yq = x[c].add(i * 292 + 4);
                                let plo = $dot4(lo, _mm256_loadu_si256(yq.add(64 * j).cast()));
                                let phi = $dot4(hi, _mm256_loadu_si256(yq.add(64 * j + 32).cast()));
                                acc[c] = _mm256_add_epi32(
                                    acc[c],
                                    _mm256_add_epi32(
                                        _mm256_mullo_epi32(plo, s1),
                                        _mm256_mullo_epi32(phi, s2),
                                    ),
                                );
                            }
                        }
                        for c in 0..C {
                            let sumi = hsum_i32_8(acc[c]);
                            let mut summ = 0i32;
                            for j in 0..8 {
                                summ += m[j] * bs[c][j];
                            }
                            sum[r][c] += yd[c] * (d * sumi as f32 - dmin * summ as f32);
                        }
                    }
                }
                *out = sum;
            }

            /// Q6_K x Q8_K, as `q4_0` (super-blocks).
            #[target_feature(enable = $feat)]
            pub unsafe fn q6_k<const R: usize, const C: usize>(
                nb: usize,
                w: &[*const u8; R],
                x: &[*const u8; C],
                out: &mut [[f32; C]; R],
            ) {
                let m4 = _mm256_set1_epi8(0x0f);
                let m3 = _mm256_set1_epi8(3);
                let m32 = _mm256_set1_epi8(32);
                let mut sum = [[0.0f32; C]; R];
                for i in 0..nb {
                    for r in 0..R {
                        let wb = w[r].add(i * 210);
                        let (ql, qh, sc) = (wb, wb.add(128), wb.add(192).cast::<i8>());
                        let d = f16_at(wb.add(208));
                        let mut acc = [_mm256_setzero_si256(); C];
                        for h in 0..2 {
                            let hb = _mm256_loadu_si256(qh.add(32 * h).cast());
                            let l0 = _mm256_loadu_si256(ql.add(64 * h).cast());
                            let l1 = _mm256_loadu_si256(ql.add(64 * h + 32).cast());
                            let h0 = _mm256_slli_epi16(_mm256_and_si256(hb, m3), 4);
                            let h2 = _mm256_slli_epi16(
                                _mm256_and_si256(_mm256_srli_epi16(hb, 2), m3),
                                4,
                            );
                            let h4 = _mm256_slli_epi16(
                                _mm256_and_si256(_mm256_srli_epi16(hb, 4), m3),
                                4,
                            );
                            let h6 = _mm256_slli_epi16(
                                _mm256_and_si256(_mm256_srli_epi16(hb, 6), m3),
                                4,
                            );
                            let q = [
                                _mm256_or_si256(_mm256_and_si256(l0, m4), h0),
                                _mm256_or_si256(_mm256_and_si256(l1, m4), h2),
                                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4), h4),
                                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4), h6),
                            ];
                            for (k, &qk) in q.iter().enumerate() {
                                let s0 = *sc.add(8 * h + 2 * k) as i32;
                                let s1 = *sc.add(8 * h + 2 * k + 1) as i32;
                                let scv = _mm256_set_epi32(s1, s1, s1, s1, s0, s0, s0, s0);
                                for c in 0..C {
                                    let yq = x[c].add(i * 292 + 4);
                                    let y = _mm256_loadu_si256(yq.add(128 * h + 32 * k).cast());
                                    let p = _mm256_sub_epi32($dot4(qk, y), $dot4(m32, y));
                                    acc[c] = _mm256_add_epi32(acc[c], _mm256_mullo_epi32(p, scv));
                                }
                            }
                        }
                        for c in 0..C {
                            let sumi = hsum_i32_8(acc[c]);
                            let yd = x[c].add(i * 292).cast::<f32>().read_unaligned();
                            sum[r][c] += d * yd * sumi as f32;
                        }
                    }
                }
                *out = sum;
            }
        }
    };
}

dots!(avx2, "avx2,fma,f16c", dot4_avx2);
dots!(
    avx512,
    "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni",
    dot4_vnni
);

/// Checks a tile's rows, then runs a kernel of a level the CPU has.
macro_rules! entry {
    ($level:ident, $kernel:ident, $wb:expr, $xb:expr) => {
        |w, x, out| {
            let nb = w[0].len() / $wb;
            let ok = w.iter().all(|r| r.len() == nb * $wb) && x.iter().all(|r| r.len() >= nb * $xb);
            assert!(ok, "row sizes");
            // SAFETY: these functions are only handed out by `kernels` below
            // for a level that `cpu::level()` detected on this CPU, so the
            // target features are present; each kernel reads exactly nb
            // blocks of every row, which the assert proves are in bounds;
            // all its loads are unaligned loads.
            unsafe { $level::$kernel(nb, &w.map(<[u8]>::as_ptr), &x.map(<[u8]>::as_ptr), out) }
        }
    };
}

macro_rules! table {
    ($level:ident, $kernel:ident, $wb:expr, $xb:expr) => {
        DotTiles {
            t1x1: entry!($level, $kernel, $wb, $xb),
            t4x1: entry!($level, $kernel, $wb, $xb),
            t2x4: entry!($level, $kernel, $wb, $xb),
        }
    };
}

/// Paired-row AVX-512 tiles (`x86_512.rs`) for the 32-element types.
macro_rules! entry512 {
    ($kind:expr, $wb:expr, $xb:expr, $r:expr, $c:expr, $p:expr) => {
        |w: &[&[u8]; $r], x: &[&[u8]; $c], out: &mut [[f32; $c]; $r]| {
            let nb = w[0].len() / $wb;
            let ok = w.iter().all(|r| r.len() == nb * $wb) && x.iter().all(|r| r.len() >= nb * $xb);
            assert!(ok, "row sizes");
            // SAFETY: handed out by `kernels` only at the AVX-512 level, which
            // `cpu::level()` detected here; the assert proves every row holds
            // the nb blocks the kernel reads (all loads unaligned).
            unsafe {
                crate::x86_512::tile::<$r, $c, $p>(
                    $kind,
                    nb,
                    &w.map(<[u8]>::as_ptr),
                    &x.map(<[u8]>::as_ptr),
                    out,
                )
            }
        }
    };
}

macro_rules! table512 {
    ($kernel:ident, $kind:expr, $wb:expr, $xb:expr) => {
        DotTiles {
            t1x1: entry!(avx512, $kernel, $wb, $xb),
            t4x1: entry512!($kind, $wb, $xb, 4, 1, 2),
            t2x4: entry512!($kind, $wb, $xb, 2, 4, 1),
        }
    };
}

/// The SIMD tile kernels of weight type `ty` at `level`, if there are any.
/// The caller guarantees the CPU supports `level`.
pub(crate) fn kernels(ty: GgmlType, level: Level) -> Option<DotTiles> {
    Some(match (level, ty) {
        (Level::Avx2, GgmlType::F16) => table!(avx2, f16, 2, 4),
        (Level::Avx2, GgmlType::BF16) => table!(avx2, bf16, 2, 4),
        (Level::Avx512, GgmlType::F16) => table!(avx512, f16, 2, 4),
        (Level::Avx512, GgmlType::BF16) => table!(avx512, bf16, 2, 4),
        (Level::Avx2, GgmlType::Q4_0) => table!(avx2, q4_0, 18, 34),
        (Level::Avx2, GgmlType::Q4_1) => table!(avx2, q4_1, 20, 36),
        (Level::Avx2, GgmlType::Q8_0) => table!(avx2, q8_0, 34, 34),
        (Level::Avx2, GgmlType::Q4K) => table!(avx2, q4_k, 144, 292),
        (Level::Avx2, GgmlType::Q5_0) => table!(avx2, q5_0, 22, 34),
        (Level::Avx2, GgmlType::Q5_1) => table!(avx2, q5_1, 24, 36),
        (Level::Avx2, GgmlType::Q5K) => table!(avx2, q5_k, 176, 292),
        (Level::Avx512, GgmlType::Q5_0) => table!(avx512, q5_0, 22, 34),
        (Level::Avx512, GgmlType::Q5_1) => table!(avx512, q5_1, 24, 36),
        (Level::Avx512, GgmlType::Q5K) => table!(avx512, q5_k, 176, 292),
        (Level::Avx2, GgmlType::Q6K) => table!(avx2, q6_k, 210, 292),
        (Level::Avx512, GgmlType::Q4_0) => table512!(q4_0, Kind::Q4_0, 18, 34),
        (Level::Avx512, GgmlType::Q4_1) => table512!(q4_1, Kind::Q4_1, 20, 36),
        (Level::Avx512, GgmlType::Q8_0) => table512!(q8_0, Kind::Q8_0, 34, 34),
        (Level::Avx512, GgmlType::Q4K) => table!(avx512, q4_k, 144, 292),
        (Level::Avx512, GgmlType::Q6K) => table!(avx512, q6_k, 210, 292),
        _ => return None,
    })
}
