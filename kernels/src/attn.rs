//! Attention kernels over cached rows, knowing nothing of models.

use half::f16;

/// One KV head's rows inside a cache: row j of this head is
/// `data[j * stride + offset..][..head_dim]`.
#[derive(Clone, Copy)]
pub struct HeadRows<'a, T> {
    pub data: &'a [T],
    pub stride: usize,
    pub offset: usize,
}

impl<'a, T> HeadRows<'a, T> {
    #[inline]
    fn row(&self, j: usize, len: usize) -> &'a [T] {
        &self.data[j * self.stride + self.offset..][..len]
    }
}

/// Attention of one query head over the first `n_keys` f16 keys and
/// values, computed as llama.cpp's CPU flash attention does for an F16
/// cache (so that results match it bit for bit): q rounded to f16, each
/// score an f16 dot product reduced in ggml's AVX-512 order, an online
/// softmax with the output accumulated in f16 (rounded after every key),
/// then scaled by 1/sum. Uses the AVX-512 kernel where the CPU level has
/// it; both give the same bits.
pub fn attend_f16(
    q: &[f32],
    k: HeadRows<'_, f16>,
    v: HeadRows<'_, f16>,
    n_keys: usize,
    scale: f32,
    acc: &mut [f32],
) {
    attend_f16_at(crate::cpu::level(), q, k, v, n_keys, scale, acc)
}

/// [`attend_f16`] at a given level (at most [`crate::cpu::detected`]).
pub fn attend_f16_at(
    level: crate::cpu::Level,
    q: &[f32],
    k: HeadRows<'_, f16>,
    v: HeadRows<'_, f16>,
    n_keys: usize,
    scale: f32,
    acc: &mut [f32],
) {
    let d = q.len();
    assert_eq!(acc.len(), d);
    let fits = |r: &HeadRows<'_, f16>| {
        n_keys == 0 || (n_keys - 1) * r.stride + r.offset + d <= r.data.len()
    };
    assert!(fits(&k) && fits(&v), "rows out of bounds");
    assert!(level <= crate::cpu::detected());
    #[cfg(target_arch = "x86_64")]
    if level >= crate::cpu::Level::Avx512 && d <= 256 {
        let mut job = [AttnJob {
            q,
            k,
            v,
            n_keys,
            out: acc,
        }];
        // SAFETY: the level is detected on this CPU (asserted above), the
        // head size is at most 256, and the asserts prove every row the
        // kernel reads is in bounds.
        unsafe { x86::attend_f16_n::<1>(&mut job, scale) };
        return;
    }
    attend_f16_scalar(q, k, v, n_keys, scale, acc)
}

/// One attention problem: a query head over the first `n_keys` rows of a
/// KV head, written to `out`.
pub struct AttnJob<'a> {
    pub q: &'a [f32],
    pub k: HeadRows<'a, f16>,
    pub v: HeadRows<'a, f16>,
    pub n_keys: usize,
    pub out: &'a mut [f32],
}

/// [`attend_f16`] for each job, with the same result per job bit for bit.
/// The AVX-512 kernel runs four (or two) jobs in lockstep, so their dependency
/// chains (f16 rounding after every key, then `exp`) overlap.
pub fn attend_f16_batch(jobs: &mut [AttnJob<'_>], scale: f32) {
    attend_f16_batch_at(crate::cpu::level(), jobs, scale)
}

/// [`attend_f16_batch`] at a given level (at most [`crate::cpu::detected`]).
pub fn attend_f16_batch_at(level: crate::cpu::Level, jobs: &mut [AttnJob<'_>], scale: f32) {
    #[cfg(target_arch = "x86_64")]
    if level >= crate::cpu::Level::Avx512 {
        let mut rest = &mut jobs[..];
        while rest.len() >= 2 {
            let n = if rest.len() >= 4 { 4 } else { 2 };
            let (four, tail) = rest.split_at_mut(n);
            let d = four[0].q.len();
            let ok = d <= 256
                && four.iter().all(|j| {
                    let fits = |r: &HeadRows<'_, f16>| {
                        j.n_keys == 0 || (j.n_keys - 1) * r.stride + r.offset + d <= r.data.len()
                    };
                    j.q.len() == d && j.out.len() == d && fits(&j.k) && fits(&j.v)
                });
            if ok {
                // SAFETY: the level is detected on this CPU, and the checks
                // above prove every row each job reads is in bounds.
                unsafe {
                    if n == 4 {
                        x86::attend_f16_n::<4>(four, scale)
                    } else {
                        x86::attend_f16_n::<2>(four, scale)
                    }
                };
            } else {
                for j in four.iter_mut() {
                    attend_f16_at(level, j.q, j.k, j.v, j.n_keys, scale, j.out);
                }
            }
            rest = tail;
        }
        for j in rest.iter_mut() {
            attend_f16_at(level, j.q, j.k, j.v, j.n_keys, scale, j.out);
        }
        return;
    }
    for j in jobs.iter_mut() {
        attend_f16_at(level, j.q, j.k, j.v, j.n_keys, scale, j.out);
    }
}

fn attend_f16_scalar(
    q: &[f32],
    k: HeadRows<'_, f16>,
    v: HeadRows<'_, f16>,
    n_keys: usize,
    scale: f32,
    acc: &mut [f32],
) {
    let d = q.len();
    let r16 = |x: f32| f16::from_f32(x).to_f32();
    let q16: Vec<f32> = q.iter().map(|&x| r16(x)).collect();
    let mut row = vec![0.0f32; d];
    let (mut m, mut sum) = (f32::NEG_INFINITY, 0.0f32);
    acc.fill(0.0);
    for j in 0..n_keys {
        for (o, x) in row.iter_mut().zip(k.row(j, d)) {
            *o = x.to_f32();
        }
        let s = dot_f16_ggml(&q16, &row) * scale;
        let (mut ms, mut vs) = (1.0f32, 1.0f32);
        if s > m {
            let old = m;
            m = s;
            ms = (old - m).exp();
            for a in acc.iter_mut() {
                *a = r16(*a * ms);
            }
        } else {
            vs = (s - m).exp();
        }
        for (a, x) in acc.iter_mut().zip(v.row(j, d)) {
            *a = r16(x.to_f32().mul_add(vs, *a));
        }
        sum = sum.mul_add(ms, vs);
    }
    let inv = if sum == 0.0 { 0.0 } else { 1.0 / sum };
    for a in acc.iter_mut() {
        *a *= inv;
    }
}

/// ggml's f16 dot product on AVX-512: four 16-lane f32 accumulators fed
/// with fused multiply-adds 64 elements at a time, folded (0+2, 1+3, then
/// 0+1), reduced across lanes as GCC's `_mm512_reduce_add_ps` does, and the
/// remaining elements added in f64. Inputs hold f16 values, so each product
/// is exact in f32.
fn dot_f16_ggml(x: &[f32], y: &[f32]) -> f32 {
    let n = x.len();
    let np = n - n % 64;
    let mut acc = [[0.0f32; 16]; 4];
    for i in (0..np).step_by(64) {
        for (j, a) in acc.iter_mut().enumerate() {
            for (l, al) in a.iter_mut().enumerate() {
                let k = i + 16 * j + l;
                *al = x[k].mul_add(y[k], *al);
            }
        }
    }
    let mut sum = 0.0f64;
    if np > 0 {
        let l: Vec<f32> = (0..16)
            .map(|i| (acc[0][i] + acc[2][i]) + (acc[1][i] + acc[3][i]))
            .collect();
        let t3: Vec<f32> = (0..8).map(|i| l[8 + i] + l[i]).collect();
        let t6: Vec<f32> = (0..4).map(|i| t3[4 + i] + t3[i]).collect();
        sum = ((t6[0] + t6[2]) + (t6[1] + t6[3])) as f64;
    }
    for k in np..n {
        sum += (x[k] * y[k]) as f64;
    }
    sum as f32
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use half::f16;
    use std::arch::x86_64::*;

    /// f16 rounding of 16 lanes and back (round to nearest even).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")]
    unsafe fn r16(x: __m512) -> __m512 {
        _mm512_cvtph_ps(_mm512_cvtps_ph::<
            { _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC },
        >(x))
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")]
    unsafe fn load16(p: *const f16) -> __m512 {
        _mm512_cvtph_ps(_mm256_loadu_si256(p.cast()))
    }

    /// `N` jobs of `attend_f16_scalar` in lockstep, each with the same
    /// operations in the same order, 16 lanes at a time (N = 1: one job).
    ///
    /// # Safety
    /// As `attend_f16`, for every job; all share one head size of at most
    /// 256.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")]
    pub unsafe fn attend_f16_n<const N: usize>(jobs: &mut [super::AttnJob<'_>], scale: f32) {
        debug_assert_eq!(jobs.len(), N);
        let d = jobs[0].q.len();
        let (np, nv) = (d - d % 64, d - d % 16);
        let r16s = |x: f32| f16::from_f32(x).to_f32();
        let mut q16 = [[0.0f32; 256]; N];
        let mut m = [f32::NEG_INFINITY; N];
        let mut sum = [0.0f32; N];
        let mut n_max = 0;
        for i in 0..N {
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
            let mut s = [0.0f32; N];
            for i in 0..N {
                if j >= nk[i] {
                    continue;
                }
                let kr = kp[i].add(j * ks[i]);
                let qp = q16[i].as_ptr();
                let mut a = [_mm512_setzero_ps(); 4];
                for e in (0..np).step_by(64) {
                    for (t, at) in a.iter_mut().enumerate() {
                        let o = e + 16 * t;
                        *at = _mm512_fmadd_ps(_mm512_loadu_ps(qp.add(o)), load16(kr.add(o)), *at);
                    }
                }
                let mut s64 = 0.0f64;
                if np > 0 {
                    let l = _mm512_add_ps(_mm512_add_ps(a[0], a[2]), _mm512_add_ps(a[1], a[3]));
                    let t3 =
                        _mm256_add_ps(_mm512_extractf32x8_ps::<1>(l), _mm512_castps512_ps256(l));
                    let t6 = _mm_add_ps(_mm256_extractf128_ps::<1>(t3), _mm256_castps256_ps128(t3));
                    let r = _mm_add_ps(t6, _mm_movehl_ps(t6, t6));
                    let r = _mm_add_ss(r, _mm_movehdup_ps(r));
                    s64 = _mm_cvtss_f32(r) as f64;
                }
                for kk in np..d {
                    s64 += (q16[i][kk] * (*kr.add(kk)).to_f32()) as f64;
                }
                s[i] = s64 as f32 * scale;
            }
            for i in 0..N {
                if j >= nk[i] {
                    continue;
                }
                let (vr, acc) = (vp[i].add(j * vs_[i]), ap[i]);
                let (mut ms, mut vs) = (1.0f32, 1.0f32);
                if s[i] > m[i] {
                    let old = m[i];
                    m[i] = s[i];
                    ms = (old - m[i]).exp();
                    let msv = _mm512_set1_ps(ms);
                    for e in (0..nv).step_by(16) {
                        let x = _mm512_mul_ps(_mm512_loadu_ps(acc.add(e)), msv);
                        _mm512_storeu_ps(acc.add(e), r16(x));
                    }
                    for e in nv..d {
                        *acc.add(e) = r16s(*acc.add(e) * ms);
                    }
                } else {
                    vs = (s[i] - m[i]).exp();
                }
                let vsv = _mm512_set1_ps(vs);
                for e in (0..nv).step_by(16) {
                    let x = _mm512_fmadd_ps(load16(vr.add(e)), vsv, _mm512_loadu_ps(acc.add(e)));
                    _mm512_storeu_ps(acc.add(e), r16(x));
                }
                for e in nv..d {
                    *acc.add(e) = r16s((*vr.add(e)).to_f32().mul_add(vs, *acc.add(e)));
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_dot_equals_the_exact_dot_of_f16_values_closely() {
        // f16 inputs: products are exact in f32; only the sum order rounds
        let r16 = |x: f32| half::f16::from_f32(x).to_f32();
        let x: Vec<f32> = (0..200)
            .map(|i| r16(((i * 37 % 101) as f32 - 50.0) / 17.0))
            .collect();
        let y: Vec<f32> = (0..200)
            .map(|i| r16(((i * 53 % 89) as f32 - 44.0) / 13.0))
            .collect();
        let exact: f64 = x.iter().zip(&y).map(|(a, b)| *a as f64 * *b as f64).sum();
        let got = dot_f16_ggml(&x, &y) as f64;
        assert!(
            (got - exact).abs() <= 1e-5 * exact.abs().max(1.0),
            "{got} vs {exact}"
        );
    }

    fn rows(v: &[Vec<f32>]) -> Vec<f16> {
        v.iter().flatten().map(|&x| f16::from_f32(x)).collect()
    }

    #[test]
    fn attention_over_one_key_returns_its_value_and_weights_follow_scores() {
        let k = rows(&[vec![1.0f32; 4], vec![-1.0f32; 4]]);
        let vv = [vec![0.5f32, 1.0, -2.0, 4.0], vec![2.0f32, 0.0, 1.0, -1.0]];
        let v = rows(&vv);
        let h = |data| HeadRows {
            data,
            stride: 4,
            offset: 0,
        };
        let mut out = vec![0.0f32; 4];
        for level in crate::cpu::available() {
            attend_f16_at(level, &[1.0; 4], h(&k), h(&v), 1, 0.5, &mut out);
            assert_eq!(out, vv[0]);
            // two keys: weights softmax(2, -2) = (0.982, 0.018) within f16 rounding
            attend_f16_at(level, &[1.0; 4], h(&k), h(&v), 2, 0.5, &mut out);
            let w0 = 1.0 / (1.0 + (-4.0f32).exp());
            for i in 0..4 {
                let want = w0 * vv[0][i] + (1.0 - w0) * vv[1][i];
                assert!((out[i] - want).abs() < 4e-3, "{i}: {} vs {want}", out[i]);
            }
        }
    }

    /// The SIMD kernel equals the scalar one bit for bit: head sizes with
    /// and without 64- and 16-element tails, strided rows with an offset
    /// (a KV head inside a GQA cache row), 0 to 40 keys.
    #[test]
    fn simd_attention_equals_its_scalar_twin_bitwise() {
        let mut seed = 99u64;
        let mut rnd = || {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            ((seed >> 33) as f32 / (1u64 << 31) as f32 - 0.5) * 6.0
        };
        for d in [16usize, 64, 72, 80, 128, 3] {
            let (heads, offset) = (3, d);
            let stride = heads * d;
            let n = 40;
            let k: Vec<f16> = (0..n * stride).map(|_| f16::from_f32(rnd())).collect();
            let v: Vec<f16> = (0..n * stride).map(|_| f16::from_f32(rnd())).collect();
            let q: Vec<f32> = (0..d).map(|_| rnd()).collect();
            let h = |data| HeadRows {
                data,
                stride,
                offset,
            };
            for n_keys in [0usize, 1, 2, 7, 40] {
                let mut want = vec![0.0f32; d];
                attend_f16_at(
                    crate::cpu::Level::Scalar,
                    &q,
                    h(&k),
                    h(&v),
                    n_keys,
                    0.3,
                    &mut want,
                );
                for level in crate::cpu::available() {
                    let mut got = vec![1.0f32; d];
                    attend_f16_at(level, &q, h(&k), h(&v), n_keys, 0.3, &mut got);
                    let same = got
                        .iter()
                        .zip(&want)
                        .all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(same, "d={d} n_keys={n_keys} {level:?}: {got:?} vs {want:?}");
                }
            }
        }
    }

    /// The batch (four jobs in lockstep) equals single jobs bit for bit,
    /// with different key counts, heads and head sizes per batch.
    #[test]
    fn batched_attention_equals_single_jobs_bitwise() {
        let mut seed = 7u64;
        let mut rnd = || {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            ((seed >> 33) as f32 / (1u64 << 31) as f32 - 0.5) * 6.0
        };
        for d in [64usize, 80, 128] {
            let (heads, n) = (3, 30);
            let stride = heads * d;
            let k: Vec<f16> = (0..n * stride).map(|_| f16::from_f32(rnd())).collect();
            let v: Vec<f16> = (0..n * stride).map(|_| f16::from_f32(rnd())).collect();
            let qs: Vec<Vec<f32>> = (0..7).map(|_| (0..d).map(|_| rnd()).collect()).collect();
            let nks = [30usize, 1, 17, 0, 29, 30, 5];
            let h = |data, head: usize| HeadRows {
                data,
                stride,
                offset: head * d,
            };
            let mut want: Vec<Vec<f32>> = vec![vec![0.0; d]; 7];
            for (i, w) in want.iter_mut().enumerate() {
                let kv = i % heads;
                attend_f16_at(
                    crate::cpu::Level::Scalar,
                    &qs[i],
                    h(&k, kv),
                    h(&v, kv),
                    nks[i],
                    0.2,
                    w,
                );
            }
            for level in crate::cpu::available() {
                let mut got: Vec<Vec<f32>> = vec![vec![9.0; d]; 7];
                let mut jobs: Vec<AttnJob> = got
                    .iter_mut()
                    .enumerate()
                    .map(|(i, out)| AttnJob {
                        q: &qs[i],
                        k: h(&k, i % heads),
                        v: h(&v, i % heads),
                        n_keys: nks[i],
                        out,
                    })
                    .collect();
                attend_f16_batch_at(level, &mut jobs, 0.2);
                for i in 0..7 {
                    let same = got[i]
                        .iter()
                        .zip(&want[i])
                        .all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(same, "d={d} job {i} {level:?}");
                }
            }
        }
    }
}
