//! Shared pieces of the k-quant reference quantizers: ggml's level search
//! routines and the 6-bit scale packing of Q4_K/Q5_K.

use crate::fp::nearest_int;

/// Below this magnitude a group counts as all zeros.
pub const GROUP_MAX_EPS: f32 = 1e-15;

/// Asymmetric levels 0..=nmax with a scale and a (non-positive) minimum,
/// chosen by weighted least squares over `nstep + 1` candidate scales
/// (ggml's `make_qkx2_quants`; its `make_qkx3_quants`, which the
/// importance-weighted quantizers use, is the same computation with squared
/// errors). Returns (scale, -min); `levels` gets the chosen levels and
/// `aux` is scratch of the same length.
#[allow(clippy::too_many_arguments)]
pub fn make_qkx2_quants(
    nmax: i32,
    x: &[f32],
    weights: &[f32],
    levels: &mut [u8],
    aux: &mut [u8],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
    use_mad: bool,
) -> (f32, f32) {
    let n = x.len();
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        let w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        levels[..n].fill(0);
        return (0.0, -min);
    }
    let err = |d: f32| if use_mad { d.abs() } else { d * d };
    let mut iscale = nmax as f32 / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0.0f32;
    for i in 0..n {
        let l = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
        levels[i] = l as u8;
        let diff = scale * levels[i] as f32 + min - x[i];
        best_error += weights[i] * err(diff);
    }
    if nstep < 1 {
        return (scale, -min);
    }
    for is in 0..=nstep {
        iscale = (rmin + rdelta * is as f32 + nmax as f32) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0.0f32, 0.0f32, 0.0f32);
        for i in 0..n {
            let l = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
            aux[i] = l as u8;
            let w = weights[i];
            let lf = l as f32;
            sum_l += w * lf;
            sum_l2 += w * lf * lf;
            sum_xl += w * lf * x[i];
        }
        let det = sum_w * sum_l2 - sum_l * sum_l;
        if det > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0.0f32;
            for i in 0..n {
                let diff = this_scale * aux[i] as f32 + this_min - x[i];
                cur_error += weights[i] * err(diff);
            }
            if cur_error < best_error {
                levels[..n].copy_from_slice(&aux[..n]);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// Symmetric levels -nmax..nmax-1 (stored offset by nmax) with a scale
/// picked among 19 candidates (ggml's `make_qx_quants` with rmse_type 1):
/// the squared errors weighted by `weights`, or by x² without them.
/// Returns the scale.
pub fn make_qx_quants(nmax: i32, x: &[f32], levels: &mut [i8], weights: Option<&[f32]>) -> f32 {
    let n = x.len();
    let (mut max, mut amax) = (0.0f32, 0.0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        levels[..n].fill(0);
        return 0.0;
    }
    let level = |iscale: f32, v: f32| nearest_int(iscale * v).clamp(-nmax, nmax - 1);
    let weight = |i: usize| weights.map_or(x[i] * x[i], |w| w[i]);
    let sums = |iscale: f32| {
        let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
        for (i, &v) in x.iter().enumerate() {
            let l = level(iscale, v) as f32;
            let w = weight(i);
            sumlx += w * v * l;
            suml2 += w * l * l;
        }
        (sumlx, suml2)
    };
    let mut iscale = -(nmax as f32) / max;
    for (o, &v) in levels.iter_mut().zip(x) {
        *o = (level(iscale, v) + nmax) as i8;
    }
    let (sumlx, suml2) = sums(iscale);
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in -9..=9 {
        if is == 0 {
            continue;
        }
        iscale = -(nmax as f32 + 0.1f32 * is as f32) / max;
        let (sumlx, suml2) = sums(iscale);
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            for (o, &v) in levels.iter_mut().zip(x) {
                *o = (level(iscale, v) + nmax) as i8;
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// Non-negative levels 0..=nmax for non-negative `x` (the sub-block scales
/// of a super-block) with one scale, by weighted least squares: nine
/// candidate scales, then up to five passes moving single levels (ggml's
/// `make_qp_quants`). Levels are stored as ggml's `uint8_t` holds them
/// (wrapping). Returns the scale.
pub fn make_qp_quants(nmax: i32, x: &[f32], levels: &mut [u8], weights: &[f32]) -> f32 {
    let n = x.len();
    let mut max = 0.0f32;
    for &v in x {
        max = if max > v { max } else { v };
    }
    if max < GROUP_MAX_EPS {
        levels[..n].fill(0);
        return 0.0;
    }
    let mut iscale = nmax as f32 / max;
    for i in 0..n {
        levels[i] = nearest_int(iscale * x[i]) as u8;
    }
    let scale = 1.0 / iscale;
    let mut best = 0.0f32;
    for i in 0..n {
        let diff = x[i] - scale * levels[i] as f32;
        best += weights[i] * diff * diff;
    }
    for is in -4..=4 {
        if is == 0 {
            continue;
        }
        let iscale_is = (0.1f32 * is as f32 + nmax as f32) / max;
        let scale_is = 1.0 / iscale_is;
        let mut mse = 0.0f32;
        for i in 0..n {
            let l = nearest_int(iscale_is * x[i]).min(nmax);
            let diff = x[i] - scale_is * l as f32;
            mse += weights[i] * diff * diff;
        }
        if mse < best {
            best = mse;
            iscale = iscale_is;
        }
    }
    let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
    for i in 0..n {
        let l = nearest_int(iscale * x[i]).min(nmax);
        levels[i] = l as u8;
        let w = weights[i];
        sumlx += w * x[i] * l as f32;
        suml2 += w * l as f32 * l as f32;
    }
    for _ in 0..5 {
        let mut changed = false;
        for i in 0..n {
            let (w, li) = (weights[i], levels[i] as f32);
            let mut slx = sumlx - w * x[i] * li;
            let mut sl2 = suml2 - w * li * li;
            if slx > 0.0 && sl2 > 0.0 {
                let new_l = nearest_int(x[i] * sl2 / slx).min(nmax);
                if new_l != levels[i] as i32 {
                    let nl = new_l as f32;
                    slx += w * x[i] * nl;
                    sl2 += w * nl * nl;
                    if slx * slx * suml2 > sumlx * sumlx * sl2 {
                        levels[i] = new_l as u8;
                        sumlx = slx;
                        suml2 = sl2;
                        changed = true;
                    }
                }
            }
        }
        if !changed {
            break;
        }
    }
    if suml2 > 0.0 {
        sumlx / suml2
    } else {
        0.0
    }
}

/// The weights ggml's quantizers minimise errors under, given an
/// importance matrix row `qw`: `qw * sqrt(sigma2 + x²)`, sigma2 being the
/// mean square of the row (legacy types) or twice that of the super-block
/// (Q4_K, Q5_K).
pub fn importance_weights(xs: &[f32], qw: &[f32], sigma2: f32, out: &mut [f32]) {
    for ((o, &q), &v) in out.iter_mut().zip(qw).zip(xs) {
        *o = q * (sigma2 + v * v).sqrt();
    }
}

/// Sub-block scales and mins of one Q4_K/Q5_K super-block quantized with
/// importance weights `qw` (256): make_qkx3 per sub-block, then both sets
/// of eight by make_qp against the sub-blocks' weight sums, then the 6-bit
/// packing (`clamp63`: Q5_K clamps the levels to 63 first, Q4_K does not).
/// Returns (d, dmin, scales) and fills `levels` with the search's levels.
pub fn quantize_scales_k4_weighted(
    x: &[f32],
    qw: &[f32],
    nmax: i32,
    clamp63: bool,
    levels: &mut [u8; 256],
) -> (f32, f32, [u8; 12]) {
    let mut sum_x2 = 0.0f32;
    for &v in &x[..256] {
        sum_x2 += v * v;
    }
    let sigma2 = 2.0 * sum_x2 / 256.0;
    let (mut scales, mut mins, mut sw) = ([0.0f32; 8], [0.0f32; 8], [0.0f32; 8]);
    let (mut weights, mut aux) = ([0.0f32; 32], [0u8; 32]);
    for j in 0..8 {
        let xs = &x[32 * j..32 * j + 32];
        importance_weights(xs, &qw[32 * j..32 * j + 32], sigma2, &mut weights);
        let mut sumw = 0.0f32;
        for &w in &weights {
            sumw += w;
        }
        sw[j] = sumw;
        let (s, m) = make_qkx2_quants(
            nmax,
            xs,
            &weights,
            &mut levels[32 * j..32 * j + 32],
            &mut aux,
            -0.9,
            0.05,
            36,
            false,
        );
        scales[j] = s;
        mins[j] = m;
    }
    let (mut ls, mut lm) = ([0u8; 8], [0u8; 8]);
    let d = make_qp_quants(63, &scales, &mut ls, &sw);
    let dmin = make_qp_quants(63, &mins, &mut lm, &sw);
    if clamp63 {
        for v in ls.iter_mut().chain(lm.iter_mut()) {
            *v = (*v).min(63);
        }
    }
    (d, dmin, pack_scales_k4(&ls, &lm))
}

/// The asymmetric legacy types' weighted quantizer (Q4_1, Q5_1, levels
/// 0..=nmax): per 32-value block of row `x`, ggml's make_qkx3 search under
/// the importance weights; `emit(block, d, m, levels)` stores each block.
pub fn weighted_asymmetric_blocks(
    x: &[f32],
    qw: &[f32],
    nmax: i32,
    mut emit: impl FnMut(usize, f32, f32, &[u8; 32]),
) {
    let sigma2 = row_sigma2(x);
    let mut weight = [0.0f32; 32];
    let (mut levels, mut aux) = ([0u8; 32], [0u8; 32]);
    for (i, xb) in x.chunks_exact(32).enumerate() {
        importance_weights(xb, &qw[32 * i..32 * (i + 1)], sigma2, &mut weight);
        let (d, neg_min) = make_qkx2_quants(
            nmax,
            xb,
            &weight,
            &mut levels,
            &mut aux,
            -0.9,
            0.05,
            36,
            false,
        );
        emit(i, d, -neg_min, &levels);
    }
}

/// The mean square of a whole row, as the legacy types' weighted
/// quantizers take it (sum in order, then one division).
pub fn row_sigma2(x: &[f32]) -> f32 {
    let mut sum_x2 = 0.0f32;
    for &v in x {
        sum_x2 += v * v;
    }
    sum_x2 / x.len() as f32
}

/// The 12-byte packing of eight 6-bit scales and eight 6-bit mins.
fn pack_scales_k4(ls: &[u8; 8], lm: &[u8; 8]) -> [u8; 12] {
    let mut packed = [0u8; 12];
    for j in 0..8 {
        if j < 4 {
            packed[j] = ls[j];
            packed[j + 4] = lm[j];
        } else {
            packed[j + 4] = (ls[j] & 0x0f) | ((lm[j] & 0x0f) << 4);
            packed[j - 4] |= (ls[j] >> 4) << 6;
            packed[j] |= (lm[j] >> 4) << 6;
        }
    }
    packed
}

/// The (scale, min) 6-bit pair `j` (0..8) of a Q4_K/Q5_K `scales` array.
#[inline]
pub fn get_scale_min_k4(j: usize, q: &[u8; 12]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// Sub-block scales and mins of one Q4_K/Q5_K super-block: the weighted
/// search per 32 values, then the 6-bit packing. Returns (d, dmin, scales)
/// and fills `levels` with the search's levels.
pub fn quantize_scales_k4(
    x: &[f32],
    nmax: i32,
    rmin: f32,
    nstep: i32,
    levels: &mut [u8; 256],
) -> (f32, f32, [u8; 12]) {
    let mut scales = [0.0f32; 8];
    let mut mins = [0.0f32; 8];
    let mut weights = [0.0f32; 32];
    let mut aux = [0u8; 32];
    let (mut max_scale, mut max_min) = (0.0f32, 0.0f32);
    for j in 0..8 {
        let xs = &x[32 * j..32 * j + 32];
        let mut sum_x2 = 0.0f32;
        for &v in xs {
            sum_x2 += v * v;
        }
        let av_x = (sum_x2 / 32.0).sqrt();
        for (w, &v) in weights.iter_mut().zip(xs) {
            *w = av_x + v.abs();
        }
        let (s, m) = make_qkx2_quants(
            nmax,
            xs,
            &weights,
            &mut levels[32 * j..32 * j + 32],
            &mut aux,
            rmin,
            0.1,
            nstep,
            false,
        );
        scales[j] = s;
        mins[j] = m;
        if s > max_scale {
            max_scale = s;
        }
        if m > max_min {
            max_min = m;
        }
    }
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let (mut ls, mut lm) = ([0u8; 8], [0u8; 8]);
    for j in 0..8 {
        // ggml stores nearest_int's result in a uint8 before clamping
        ls[j] = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        lm[j] = (nearest_int(inv_min * mins[j]) as u8).min(63);
    }
    let packed = pack_scales_k4(&ls, &lm);
    (max_scale / 63.0, max_min / 63.0, packed)
}

/// Final Q4_K/Q5_K levels: each value re-quantized against the stored f16
/// scales (sub-blocks whose scale rounds to zero keep the search levels).
pub fn requantize_k4(
    x: &[f32],
    d: f32,
    dmin: f32,
    scales: &[u8; 12],
    nmax: i32,
    levels: &mut [u8; 256],
) {
    for j in 0..8 {
        let (sc, m) = get_scale_min_k4(j, scales);
        let dj = d * sc as f32;
        if dj == 0.0 {
            continue;
        }
        let dm = dmin * m as f32;
        for ii in 0..32 {
            let l = nearest_int((x[32 * j + ii] + dm) / dj).clamp(0, nmax);
            levels[32 * j + ii] = l as u8;
        }
    }
}
