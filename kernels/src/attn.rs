//! Attention kernels over cached rows, knowing nothing of models.

/// Attention of one query head over f16 keys and values, computed as
/// llama.cpp's CPU flash attention does for an F16 cache (so that results
/// match it bit for bit): q rounded to f16, each score an f16 dot product
/// reduced in ggml's AVX-512 order, an online softmax with the output
/// accumulated in f16 (rounded after every key), then scaled by 1/sum.
pub fn attend_f16<'a>(
    q: &[f32],
    n_keys: usize,
    scale: f32,
    k_row: impl Fn(usize) -> &'a [f32],
    v_row: impl Fn(usize) -> &'a [f32],
    acc: &mut [f32],
) {
    let r16 = |x: f32| half::f16::from_f32(x).to_f32();
    let q16: Vec<f32> = q.iter().map(|&x| r16(x)).collect();
    let (mut m, mut sum) = (f32::NEG_INFINITY, 0.0f32);
    acc.fill(0.0);
    for j in 0..n_keys {
        let s = dot_f16_ggml(&q16, k_row(j)) * scale;
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
        for (a, &v) in acc.iter_mut().zip(v_row(j)) {
            *a = r16(v.mul_add(vs, *a));
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

    #[test]
    fn attention_over_one_key_returns_its_value_and_weights_follow_scores() {
        let k = [vec![1.0f32; 4], vec![-1.0f32; 4]];
        let v = [vec![0.5f32, 1.0, -2.0, 4.0], vec![2.0f32, 0.0, 1.0, -1.0]];
        let mut out = vec![0.0f32; 4];
        attend_f16(
            &[1.0; 4],
            1,
            0.5,
            |j| k[j].as_slice(),
            |j| v[j].as_slice(),
            &mut out,
        );
        assert_eq!(out, v[0]);
        // two keys: weights softmax(2, -2) = (0.982, 0.018) within f16 rounding
        attend_f16(
            &[1.0; 4],
            2,
            0.5,
            |j| k[j].as_slice(),
            |j| v[j].as_slice(),
            &mut out,
        );
        let w0 = 1.0 / (1.0 + (-4.0f32).exp());
        for i in 0..4 {
            let want = w0 * v[0][i] + (1.0 - w0) * v[1][i];
            assert!((out[i] - want).abs() < 4e-3, "{i}: {} vs {want}", out[i]);
        }
    }
}
