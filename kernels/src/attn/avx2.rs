//! AVX2 (with FMA and F16C) attention kernels: the scalar kernels'
//! operations in the same order, eight lanes at a time, so that they give
//! the same bits. The f16 dot keeps the AVX-512 summation order of
//! `dot_f16_ggml` (a 16-lane accumulator is two 8-lane halves here), so
//! every x86 level computes one result.

use super::{AttnJob, RowsJob, TILE_ROWS};
use super::{EXP_C, EXP_HI, EXP_LO, LN2_HI, LN2_LO};
use super::{TEXP_C, TEXP_HI, TEXP_LO, TLN2_HI, TLN2_LO};
use half::f16;
use std::arch::x86_64::*;

/// Eight f16 values as f32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load8(p: *const f16) -> __m256 {
    _mm256_cvtph_ps(_mm_loadu_si128(p.cast()))
}

/// f16 rounding of 8 lanes and back (round to nearest even).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn r16(x: __m256) -> __m256 {
    _mm256_cvtph_ps(_mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(x))
}

/// `dot_f16_ggml`'s reduction of four 16-lane accumulators, each held as
/// its low and high eight lanes: folded (0+2, 1+3, then 0+1), the high
/// half added to the low, then across the eight lanes as the AVX-512
/// kernel does.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn reduce_ggml(a: [[__m256; 2]; 4]) -> f32 {
    let fold = |h: usize| {
        _mm256_add_ps(
            _mm256_add_ps(a[0][h], a[2][h]),
            _mm256_add_ps(a[1][h], a[3][h]),
        )
    };
    let t3 = _mm256_add_ps(fold(1), fold(0));
    let t6 = _mm_add_ps(_mm256_extractf128_ps::<1>(t3), _mm256_castps256_ps128(t3));
    let r = _mm_add_ps(t6, _mm_movehl_ps(t6, t6));
    _mm_cvtss_f32(_mm_add_ss(r, _mm_movehdup_ps(r)))
}

/// [`super::softmax_exp`] of four values, lane for lane the same
/// operations (f64, fused multiply-adds, one rounding to f32).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn exp4(x: [f32; 4]) -> [f32; 4] {
    let x = _mm256_cvtps_pd(_mm_loadu_ps(x.as_ptr()));
    let x = _mm256_max_pd(_mm256_set1_pd(EXP_LO), x);
    let x = _mm256_min_pd(_mm256_set1_pd(EXP_HI), x);
    let k = _mm256_round_pd::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_pd(
        x,
        _mm256_set1_pd(std::f64::consts::LOG2_E),
    ));
    let r = _mm256_fnmadd_pd(k, _mm256_set1_pd(LN2_HI), x);
    let r = _mm256_fnmadd_pd(k, _mm256_set1_pd(LN2_LO), r);
    let mut p = _mm256_set1_pd(EXP_C[10]);
    for &c in EXP_C[..10].iter().rev() {
        p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(c));
    }
    let ki = _mm256_cvtepi32_epi64(_mm256_cvtpd_epi32(k));
    let scale = _mm256_castsi256_pd(_mm256_slli_epi64::<52>(_mm256_add_epi64(
        ki,
        _mm256_set1_epi64x(1023),
    )));
    let mut out = [0.0f32; 4];
    _mm_storeu_ps(out.as_mut_ptr(), _mm256_cvtpd_ps(_mm256_mul_pd(p, scale)));
    out
}

/// [`super::tile_exp`] of 8 lanes, the same operations per lane.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn exp8(x: __m256) -> __m256 {
    let x = _mm256_max_ps(_mm256_set1_ps(TEXP_LO), x);
    let x = _mm256_min_ps(_mm256_set1_ps(TEXP_HI), x);
    let k = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(
        x,
        _mm256_set1_ps(std::f32::consts::LOG2_E),
    ));
    let r = _mm256_fnmadd_ps(k, _mm256_set1_ps(TLN2_HI), x);
    let r = _mm256_fnmadd_ps(k, _mm256_set1_ps(TLN2_LO), r);
    let mut p = _mm256_set1_ps(TEXP_C[7]);
    for &c in TEXP_C[..7].iter().rev() {
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
    }
    let ki = _mm256_add_epi32(_mm256_cvtps_epi32(k), _mm256_set1_epi32(127));
    _mm256_mul_ps(p, _mm256_castsi256_ps(_mm256_slli_epi32::<23>(ki)))
}

/// Keys ahead whose cache rows the decode kernel prefetches.
const PREFETCH: usize = 24;

/// `N` jobs of `attend_f16_scalar` in lockstep (N = 1: one job), each with
/// the same operations in the same order, 8 lanes at a time; the `exp` of
/// all jobs' keys computed together by [`exp4`].
///
/// # Safety
/// The CPU has AVX2, FMA and F16C; as `attend_f16`, for every job (every
/// row in bounds, `q` and `out` one head long); all jobs share one head
/// size of at most 256; N is at most 4.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn attend_f16_n<const N: usize>(jobs: &mut [AttnJob<'_>], scale: f32) {
    debug_assert!(jobs.len() == N && N <= 4);
    let d = jobs[0].q.len();
    debug_assert!(d <= 256);
    let (np, nv) = (d - d % 64, d - d % 8);
    let r16s = |x: f32| f16::from_f32(x).to_f32();
    let mut q16 = [[0.0f32; 256]; N];
    let mut m = [f32::NEG_INFINITY; N];
    let mut sum = [0.0f32; N];
    let mut n_max = 0;
    for i in 0..N {
        debug_assert!(jobs[i].q.len() == d && jobs[i].out.len() == d);
        for (o, &x) in q16[i][..d].iter_mut().zip(jobs[i].q) {
            *o = r16s(x);
        }
        jobs[i].out.fill(0.0);
        n_max = n_max.max(jobs[i].n_keys);
    }
    let kp: [*const f16; N] =
        std::array::from_fn(|i| jobs[i].k.data.as_ptr().add(jobs[i].k.offset));
    let vp: [*const f16; N] =
        std::array::from_fn(|i| jobs[i].v.data.as_ptr().add(jobs[i].v.offset));
    let ks: [usize; N] = std::array::from_fn(|i| jobs[i].k.stride);
    let vs_: [usize; N] = std::array::from_fn(|i| jobs[i].v.stride);
    let nk: [usize; N] = std::array::from_fn(|i| jobs[i].n_keys);
    let ap: [*mut f32; N] = std::array::from_fn(|i| jobs[i].out.as_mut_ptr());
    for j in 0..n_max {
        let mut x = [0.0f32; 4];
        let mut grew = [false; N];
        for i in 0..N {
            if j >= nk[i] {
                continue;
            }
            // decode at depth reads the cache from memory, a short run at a
            // long stride per head: ask for the rows PREFETCH keys ahead
            if j + PREFETCH < nk[i] {
                let (kf, vf) = (
                    kp[i].add((j + PREFETCH) * ks[i]).cast::<i8>(),
                    vp[i].add((j + PREFETCH) * vs_[i]).cast::<i8>(),
                );
                for l in (0..2 * d).step_by(64) {
                    _mm_prefetch::<_MM_HINT_T0>(kf.add(l));
                    _mm_prefetch::<_MM_HINT_T0>(vf.add(l));
                }
            }
            let kr = kp[i].add(j * ks[i]);
            let qp = q16[i].as_ptr();
            let mut a = [[_mm256_setzero_ps(); 2]; 4];
            for e in (0..np).step_by(64) {
                for (t, at) in a.iter_mut().enumerate() {
                    for (h, ah) in at.iter_mut().enumerate() {
                        let o = e + 16 * t + 8 * h;
                        *ah = _mm256_fmadd_ps(_mm256_loadu_ps(qp.add(o)), load8(kr.add(o)), *ah);
                    }
                }
            }
            let mut s64 = 0.0f64;
            if np > 0 {
                s64 = reduce_ggml(a) as f64;
            }
            for kk in np..d {
                s64 += (q16[i][kk] * (*kr.add(kk)).to_f32()) as f64;
            }
            let s = s64 as f32 * scale;
            if s > m[i] {
                x[i] = m[i] - s;
                m[i] = s;
                grew[i] = true;
            } else {
                x[i] = s - m[i];
            }
        }
        let e = exp4(x);
        for i in 0..N {
            if j >= nk[i] {
                continue;
            }
            let (vr, acc) = (vp[i].add(j * vs_[i]), ap[i]);
            let (ms, vs) = if grew[i] {
                (e[i], 1.0f32)
            } else {
                (1.0f32, e[i])
            };
            if grew[i] {
                let msv = _mm256_set1_ps(ms);
                for o in (0..nv).step_by(8) {
                    let y = _mm256_mul_ps(_mm256_loadu_ps(acc.add(o)), msv);
                    _mm256_storeu_ps(acc.add(o), r16(y));
                }
                for o in nv..d {
                    *acc.add(o) = r16s(*acc.add(o) * ms);
                }
            }
            let vsv = _mm256_set1_ps(vs);
            for o in (0..nv).step_by(8) {
                let y = _mm256_fmadd_ps(load8(vr.add(o)), vsv, _mm256_loadu_ps(acc.add(o)));
                _mm256_storeu_ps(acc.add(o), r16(y));
            }
            for o in nv..d {
                *acc.add(o) = r16s((*vr.add(o)).to_f32().mul_add(vs, *acc.add(o)));
            }
            sum[i] = sum[i].mul_add(ms, vs);
        }
    }
    for i in 0..N {
        let inv = if sum[i] == 0.0 { 0.0 } else { 1.0 / sum[i] };
        for a in jobs[i].out.iter_mut() {
            *a *= inv;
        }
    }
}

/// `rows_scalar` with the 16 query rows of a tile in two 8-lane halves.
///
/// # Safety
/// The CPU has AVX2, FMA and F16C; as `attend_f16_rows_at` checks: head
/// size a multiple of 8 of at most 256, every row in bounds, key counts
/// below 2^31.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn attend_rows(job: RowsJob<'_>, scale: f32) {
    const T: usize = TILE_ROWS;
    const H: usize = T / 8;
    let d = job.d;
    debug_assert!(d.is_multiple_of(8) && d <= 256);
    // transposed queries [d][T], keys and values of a block as f32 [16][d],
    // the output accumulators [T][d], the block's weights [16][T]
    let mut buf = vec![0.0f32; 4 * T * d + 16 * T];
    let (qt, rest) = buf.split_at_mut(T * d);
    let (kb_f, rest) = rest.split_at_mut(16 * d);
    let (vb_f, rest) = rest.split_at_mut(16 * d);
    let (acc, pb) = rest.split_at_mut(T * d);
    let (qt, kb_f, vb_f, acc, pb) = (
        qt.as_mut_ptr(),
        kb_f.as_mut_ptr(),
        vb_f.as_mut_ptr(),
        acc.as_mut_ptr(),
        pb.as_mut_ptr(),
    );
    let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    let kp = job.k.data.as_ptr().add(job.k.offset);
    let vp = job.v.data.as_ptr().add(job.v.offset);
    let ninf = _mm256_set1_ps(f32::NEG_INFINITY);
    for t0 in (0..job.rows).step_by(T) {
        let rows = (job.rows - t0).min(T);
        let nk0 = job.n_keys0 + t0;
        let n_max = nk0 + rows - 1;
        for dk in 0..d {
            for i in 0..T {
                *qt.add(dk * T + i) = if i < rows {
                    *job.q
                        .as_ptr()
                        .add((t0 + i) * job.q_stride + job.q_offset + dk)
                } else {
                    0.0
                };
            }
        }
        std::ptr::write_bytes(acc, 0, T * d);
        let mut m = [ninf; H];
        let mut sum = [_mm256_setzero_ps(); H];
        let vis0: [__m256i; H] = std::array::from_fn(|h| {
            _mm256_add_epi32(lane, _mm256_set1_epi32((nk0 + 8 * h) as i32))
        });
        for b in (0..n_max).step_by(16) {
            let kb = (n_max - b).min(16);
            for t in 0..kb {
                let (kr, vr) = (
                    kp.add((b + t) * job.k.stride),
                    vp.add((b + t) * job.v.stride),
                );
                for e in (0..d).step_by(8) {
                    _mm256_storeu_ps(kb_f.add(t * d + e), load8(kr.add(e)));
                    _mm256_storeu_ps(vb_f.add(t * d + e), load8(vr.add(e)));
                }
            }
            // scores: lane l of s[t][h] is row 8h + l against key b + t,
            // eight keys at a time so the accumulators stay in registers
            let mut s = [[_mm256_setzero_ps(); H]; 16];
            for g in (0..kb).step_by(8) {
                for h in 0..H {
                    let mut a = [_mm256_setzero_ps(); 8];
                    for dk in 0..d {
                        let qv = _mm256_loadu_ps(qt.add(dk * T + 8 * h));
                        for (t, at) in a.iter_mut().enumerate() {
                            let kv = _mm256_set1_ps(*kb_f.add((g + t) * d + dk));
                            *at = _mm256_fmadd_ps(qv, kv, *at);
                        }
                    }
                    for (t, at) in a.iter().enumerate() {
                        s[g + t][h] = *at;
                    }
                }
            }
            let mut mb = m;
            for (t, st) in s.iter_mut().enumerate().take(kb) {
                let kt = _mm256_set1_epi32((b + t) as i32);
                for h in 0..H {
                    let x = _mm256_mul_ps(st[h], _mm256_set1_ps(scale));
                    let vis = _mm256_castsi256_ps(_mm256_cmpgt_epi32(vis0[h], kt));
                    st[h] = _mm256_blendv_ps(ninf, x, vis);
                    mb[h] = _mm256_max_ps(st[h], mb[h]);
                }
            }
            let mut msa = [0.0f32; T];
            for h in 0..H {
                let ms = exp8(_mm256_sub_ps(m[h], mb[h]));
                _mm256_storeu_ps(msa.as_mut_ptr().add(8 * h), ms);
                m[h] = mb[h];
                sum[h] = _mm256_mul_ps(sum[h], ms);
                for (t, st) in s.iter().enumerate().take(kb) {
                    let p = exp8(_mm256_sub_ps(st[h], mb[h]));
                    sum[h] = _mm256_add_ps(sum[h], p);
                    _mm256_storeu_ps(pb.add(t * T + 8 * h), p);
                }
            }
            for (i, &msi) in msa.iter().enumerate().take(rows) {
                let a = acc.add(i * d);
                for e in (0..d).step_by(8) {
                    let mut r = _mm256_loadu_ps(a.add(e));
                    if msi != 1.0 {
                        r = _mm256_mul_ps(r, _mm256_set1_ps(msi));
                    }
                    for t in 0..kb {
                        let p = _mm256_set1_ps(*pb.add(t * T + i));
                        r = _mm256_fmadd_ps(p, _mm256_loadu_ps(vb_f.add(t * d + e)), r);
                    }
                    _mm256_storeu_ps(a.add(e), r);
                }
            }
        }
        let mut sa = [0.0f32; T];
        for (h, sh) in sum.iter().enumerate() {
            _mm256_storeu_ps(sa.as_mut_ptr().add(8 * h), *sh);
        }
        for (i, &si) in sa.iter().enumerate().take(rows) {
            let inv = _mm256_set1_ps(if si == 0.0 { 0.0 } else { 1.0 / si });
            let o = job
                .out
                .as_mut_ptr()
                .add((t0 + i) * job.out_stride + job.out_offset);
            for e in (0..d).step_by(8) {
                _mm256_storeu_ps(
                    o.add(e),
                    _mm256_mul_ps(_mm256_loadu_ps(acc.add(i * d + e)), inv),
                );
            }
        }
    }
}
