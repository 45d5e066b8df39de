//! The CPU backend: rayon over output rows and heads, kernels from
//! `subllm-kernels`.

use rayon::prelude::*;
use subllm_kernels::kernels_for;

use super::Backend;
use crate::kv::{LayerCache, Rows};
use crate::model::Weight;
use crate::tensor::Mat;
use subllm_kernels::attn::{self, HeadRows};

#[derive(Default, Clone, Copy)]
pub struct Cpu;

/// Output columns computed per parallel task.
const COLS_PER_TASK: usize = 16;

impl Backend for Cpu {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn embed(&self, table: &Weight, ids: &[u32]) -> Mat {
        let mut out = Mat::zeros(ids.len(), table.n_in);
        for (r, &id) in ids.iter().enumerate() {
            table
                .kernels
                .dequantize(table.row(id as usize), out.row_mut(r))
                .expect("embedding rows match their type");
        }
        out
    }

    fn rms_norm(&self, x: &Mat, gain: &[f32], eps: f32) -> Mat {
        let mut out = Mat::zeros(x.rows, x.cols);
        for r in 0..x.rows {
            let row = x.row(r);
            // as ggml computes it (squares in f32, summed in f64, the rest in
            // f32), so that activations quantize exactly as llama.cpp's do
            let ss: f64 = row.iter().map(|&v| (v * v) as f64).sum();
            let mean = (ss / x.cols as f64) as f32;
            let scale = 1.0f32 / (mean + eps).sqrt();
            for ((o, &v), &g) in out.row_mut(r).iter_mut().zip(row).zip(gain) {
                *o = v * scale * g;
            }
        }
        out
    }

    fn linear(&self, x: &Mat, w: &Weight, bias: Option<&[f32]>) -> Mat {
        let (m, k, n) = (x.rows, w.n_in, w.n_out);
        let mut out = Mat::zeros(m, n);
        if m == 0 {
            return out;
        }
        debug_assert_eq!(x.cols, k);
        let act = kernels_for(w.kernels.vec_dot_type).expect("activation types are supported");
        let xb = act.ty.row_bytes(k as u64).expect("row fits its type") as usize;
        if let Some(packed) = w.packed {
            return packed_linear(x, w, packed, bias, xb);
        }
        let mut xq = vec![0u8; m * xb];
        let tiles = w.kernels.tiles();
        xq.par_chunks_mut(xb).enumerate().for_each(|(r, dst)| {
            act.quantize_act(x.row(r), dst).expect("sizes match");
        });
        let xr = |c: usize| &xq[c * xb..(c + 1) * xb];
        // out^T in blocks of weight rows, so each task owns a contiguous slice
        let mut out_t = vec![0.0f32; n * m];
        out_t
            .par_chunks_mut(COLS_PER_TASK * m)
            .enumerate()
            .for_each(|(ci, block)| {
                let j0 = ci * COLS_PER_TASK;
                let rows = block.len() / m;
                let mut j = 0;
                if m < 4 {
                    // decode: four weight rows per pass over one activation row
                    while j + 4 <= rows {
                        let wr = [
                            w.row(j0 + j),
                            w.row(j0 + j + 1),
                            w.row(j0 + j + 2),
                            w.row(j0 + j + 3),
                        ];
                        for c in 0..m {
                            let mut o = [[0.0f32; 1]; 4];
                            (tiles.t4x1)(&wr, &[xr(c)], &mut o);
                            for r in 0..4 {
                                block[(j + r) * m + c] = o[r][0];
                            }
                        }
                        j += 4;
                    }
                } else {
                    // prefill: two weight rows times four activation rows
                    while j + 2 <= rows {
                        let wr = [w.row(j0 + j), w.row(j0 + j + 1)];
                        let mut c = 0;
                        while c + 4 <= m {
                            let mut o = [[0.0f32; 4]; 2];
                            (tiles.t2x4)(&wr, &[xr(c), xr(c + 1), xr(c + 2), xr(c + 3)], &mut o);
                            for r in 0..2 {
                                block[(j + r) * m + c..(j + r) * m + c + 4].copy_from_slice(&o[r]);
                            }
                            c += 4;
                        }
                        for c in c..m {
                            for r in 0..2 {
                                let mut o = [[0.0f32; 1]; 1];
                                (tiles.t1x1)(&[wr[r]], &[xr(c)], &mut o);
                                block[(j + r) * m + c] = o[0][0];
                            }
                        }
                        j += 2;
                    }
                }
                for j in j..rows {
                    for c in 0..m {
                        let mut o = [[0.0f32; 1]; 1];
                        (tiles.t1x1)(&[w.row(j0 + j)], &[xr(c)], &mut o);
                        block[j * m + c] = o[0][0];
                    }
                }
            });
        for r in 0..m {
            let row = out.row_mut(r);
            for (j, o) in row.iter_mut().enumerate() {
                *o = out_t[j * m + r];
            }
            if let Some(b) = bias {
                for (o, &bv) in row.iter_mut().zip(b) {
                    *o += bv;
                }
            }
        }
        out
    }

    fn rope(&self, x: &mut Mat, pos: &[u32], head_dim: usize, base: f32) {
        // as ggml computes it: theta starts at the position and is scaled by
        // base^(-2/head_dim) per pair, all in f32, and the rotation fuses its
        // products as llama.cpp's build does, so results match bit for bit
        let theta_scale = base.powf(-2.0f32 / head_dim as f32);
        x.data
            .par_chunks_mut(x.cols.max(1))
            .zip(pos)
            .for_each(|(row, &p)| {
                let mut theta = p as f32;
                let cs: Vec<(f32, f32)> = (0..head_dim / 2)
                    .map(|_| {
                        let r = (theta.cos(), theta.sin());
                        theta *= theta_scale;
                        r
                    })
                    .collect();
                subllm_kernels::fp::rope_row(row, &cs, head_dim);
            });
    }

    fn attention(
        &self,
        q: &Mat,
        k: &Mat,
        v: &Mat,
        pos: &[u32],
        cache: &mut LayerCache,
        n_head: usize,
        n_head_kv: usize,
        head_dim: usize,
    ) -> Mat {
        let m = q.rows;
        let mut out = Mat::zeros(m, n_head * head_dim);
        if m == 0 {
            return out;
        }
        let n_old = cache.len();
        cache.append(&k.data, &v.data, pos);
        let kvw = cache.width;
        let group = n_head / n_head_kv;
        let scale = 1.0 / (head_dim as f32).sqrt();
        // F16 rows are read where they lie; Q8_0 rows are dequantized once
        // per call (a rarely used type; its own kernel is future work)
        let deq;
        let (kf, vf): (&[f32], &[f32]) = match (cache.keys(), cache.values()) {
            (Rows::F32(k), Rows::F32(v)) => (k, v),
            (Rows::Q8_0(_), _) => {
                deq = cache.to_f32();
                (&deq.0, &deq.1)
            }
            _ => (&[], &[]),
        };
        let f16_rows = match (cache.keys(), cache.values()) {
            (Rows::F16(k), Rows::F16(v)) => Some((k.as_slice(), v.as_slice())),
            _ => None,
        };
        if let Some((kc, vc)) = f16_rows {
            // (row, head) jobs run in lockstep by the kernel, four per task
            // where there are plenty, else two (so that decode's few heads
            // still spread over every thread)
            let threads = rayon::current_num_threads().max(1);
            let jobs_per_task = if m * n_head >= 8 * threads { 4 } else { 2 };
            out.data
                .par_chunks_mut(head_dim * jobs_per_task)
                .enumerate()
                .for_each(|(ti, chunk)| {
                    let mut jobs: Vec<attn::AttnJob> = chunk
                        .chunks_mut(head_dim)
                        .enumerate()
                        .map(|(jj, o)| {
                            let idx = ti * jobs_per_task + jj;
                            let (r, h) = (idx / n_head, idx % n_head);
                            let kvh = h / group;
                            let rows = |data| HeadRows {
                                data,
                                stride: kvw,
                                offset: kvh * head_dim,
                            };
                            attn::AttnJob {
                                q: &q.row(r)[h * head_dim..(h + 1) * head_dim],
                                k: rows(kc),
                                v: rows(vc),
                                n_keys: n_old + r + 1,
                                out: o,
                            }
                        })
                        .collect();
                    attn::attend_f16_batch(&mut jobs, scale);
                });
            return out;
        }
        out.data
            .par_chunks_mut(head_dim)
            .enumerate()
            .for_each(|(idx, o)| {
                let (r, h) = (idx / n_head, idx % n_head);
                let kvh = h / group;
                let qh = &q.row(r)[h * head_dim..(h + 1) * head_dim];
                let n_see = n_old + r + 1;
                let k_row =
                    |j: usize| &kf[j * kvw + kvh * head_dim..j * kvw + (kvh + 1) * head_dim];
                let v_row =
                    |j: usize| &vf[j * kvw + kvh * head_dim..j * kvw + (kvh + 1) * head_dim];
                let mut s: Vec<f32> = (0..n_see)
                    .map(|j| subllm_kernels::fp::dot_f32(qh, k_row(j)) * scale)
                    .collect();
                let max = s.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
                let mut sum = 0.0f32;
                for x in s.iter_mut() {
                    *x = (*x - max).exp();
                    sum += *x;
                }
                let inv = 1.0 / sum;
                for (j, &p) in s.iter().enumerate() {
                    let p = p * inv;
                    for (a, &b) in o.iter_mut().zip(v_row(j)) {
                        *a += p * b;
                    }
                }
            });
        out
    }

    fn swiglu(&self, gate: &Mat, up: &Mat) -> Mat {
        let mut out = Mat::zeros(gate.rows, gate.cols);
        for r in 0..gate.rows {
            subllm_kernels::fp::swiglu_ggml(gate.row(r), up.row(r), out.row_mut(r));
        }
        out
    }

    fn add(&self, a: &mut Mat, b: &Mat) {
        for (x, &y) in a.data.iter_mut().zip(&b.data) {
            *x += y;
        }
    }

    fn scores(&self, x: &Mat, w: &[f32]) -> Vec<f32> {
        (0..x.rows)
            .map(|r| {
                x.row(r)
                    .iter()
                    .zip(w)
                    .map(|(&a, &b)| a as f64 * b as f64)
                    .sum::<f64>() as f32
            })
            .collect()
    }
}

/// `x W^T (+ bias)` with the rows of W in groups of eight
/// (`subllm_kernels::repack`); activations are Q8_0.
fn packed_linear(x: &Mat, w: &Weight, packed: &[u8], bias: Option<&[f32]>, xb: usize) -> Mat {
    use subllm_kernels::repack::{act_sums, kernels, ROWS};
    let (m, n) = (x.rows, w.n_out);
    let nb = w.n_in / 32;
    let act = kernels_for(w.kernels.vec_dot_type).expect("activation types are supported");
    let mut xq = vec![0u8; m * xb];
    let mut ys = vec![0i32; m * nb];
    xq.par_chunks_mut(xb)
        .zip(ys.par_chunks_mut(nb))
        .enumerate()
        .for_each(|(r, (dst, s))| {
            act.quantize_act(x.row(r), dst).expect("sizes match");
            act_sums(dst, s);
        });
    let (k1, k4) = kernels(subllm_kernels::cpu::level());
    let gb = packed.len() / (n / ROWS);
    let xr = |c: usize| &xq[c * xb..(c + 1) * xb];
    let yr = |c: usize| &ys[c * nb..(c + 1) * nb];
    let ty = w.ty;
    let mut out_t = vec![0.0f32; n * m];
    // two groups (16 rows) per task
    out_t
        .par_chunks_mut(2 * ROWS * m)
        .enumerate()
        .for_each(|(ti, block)| {
            for (gi, gblock) in block.chunks_mut(ROWS * m).enumerate() {
                let g = 2 * ti + gi;
                let wg = &packed[g * gb..(g + 1) * gb];
                let mut c = 0;
                while c + 4 <= m {
                    let mut o = [[0.0f32; 4]; ROWS];
                    k4(
                        ty,
                        wg,
                        &[xr(c), xr(c + 1), xr(c + 2), xr(c + 3)],
                        &[yr(c), yr(c + 1), yr(c + 2), yr(c + 3)],
                        &mut o,
                    );
                    for r in 0..ROWS {
                        gblock[r * m + c..r * m + c + 4].copy_from_slice(&o[r]);
                    }
                    c += 4;
                }
                for c in c..m {
                    let mut o = [[0.0f32; 1]; ROWS];
                    k1(ty, wg, &[xr(c)], &[yr(c)], &mut o);
                    for r in 0..ROWS {
                        gblock[r * m + c] = o[r][0];
                    }
                }
            }
        });
    let mut out = Mat::zeros(m, n);
    for r in 0..m {
        let row = out.row_mut(r);
        for (j, o) in row.iter_mut().enumerate() {
            *o = out_t[j * m + r];
        }
        if let Some(b) = bias {
            for (o, &bv) in row.iter_mut().zip(b) {
                *o += bv;
            }
        }
    }
    out
}
