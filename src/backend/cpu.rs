//! The CPU backend: ops split over output rows and heads on a thread
//! pool, kernels from `subllm-kernels`.

use rayon::prelude::*;
use subllm_kernels::kernels_for;
use subllm_kernels::pool::{for_stripes, Stripe, ThreadPool};

mod prepare;

pub use prepare::CpuWeights;

use super::{Backend, KvCache};
use crate::error::{Error, Result};
use crate::kv::{KvType, LayerCache, Rows};
use crate::model::{Model, Weight};
use crate::tensor::Mat;
use subllm_kernels::attn::{self, HeadRows};
use subllm_kernels::GgmlType;

/// The CPU backend. It keeps the storage of the values the executor gives
/// back and hands it out again, so that a run, after the first, allocates
/// (almost) nothing: the pools hold at most what was live at once.
pub struct Cpu {
    threads: Threads,
    f32s: Pool<f32>,
    bytes: Pool<u8>,
    i32s: Pool<i32>,
    pairs: Pool<(f32, f32)>,
    /// Row groups a decode task reads in lockstep: 1 or [`STREAMS`].
    streams: usize,
}

/// The threads that run the backend's parallel ops.
enum Threads {
    /// Our persistent pool ([`subllm_kernels::pool`]): the default.
    Spin(ThreadPool),
    /// A rayon pool (`SUBLLM_POOL=rayon`, for comparisons): the executor
    /// runs inside its `install`, so ops split from a worker thread.
    Rayon(rayon::ThreadPool),
}

/// How many row groups a decode matrix-vector task reads in lockstep:
/// `SUBLLM_DECODE_STREAMS=4` asks for [`STREAMS`], anything else (or
/// nothing) for one sequential stream.
fn decode_streams() -> usize {
    match std::env::var("SUBLLM_DECODE_STREAMS")
        .as_deref()
        .map(str::trim)
    {
        Ok("4") => STREAMS,
        _ => 1,
    }
}

/// Which pool [`Cpu::new`] builds: `SUBLLM_POOL=rayon` asks for rayon's,
/// anything else (or nothing) for ours.
fn rayon_asked() -> bool {
    std::env::var("SUBLLM_POOL").is_ok_and(|v| v.trim().eq_ignore_ascii_case("rayon"))
}

impl Cpu {
    /// A backend computing with `threads` threads (the caller's among them).
    pub fn new(threads: usize) -> std::io::Result<Cpu> {
        let threads = if rayon_asked() {
            Threads::Rayon(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(threads.max(1))
                    .build()
                    .map_err(std::io::Error::other)?,
            )
        } else {
            Threads::Spin(ThreadPool::new(threads)?)
        };
        Ok(Cpu {
            threads,
            f32s: Pool::default(),
            bytes: Pool::default(),
            i32s: Pool::default(),
            pairs: Pool::default(),
            streams: decode_streams(),
        })
    }

    /// Threads computing each op.
    pub fn threads(&self) -> usize {
        match &self.threads {
            Threads::Spin(p) => p.threads(),
            Threads::Rayon(p) => p.current_num_threads(),
        }
    }

    /// The thread pool in use: `spin` (ours) or `rayon`.
    pub fn pool_name(&self) -> &'static str {
        match &self.threads {
            Threads::Spin(_) => "spin",
            Threads::Rayon(_) => "rayon",
        }
    }

    /// `f(i, piece)` for each `chunk`-element piece of `data`, in parallel.
    fn chunks<T: Send>(
        &self,
        data: &mut [T],
        chunk: usize,
        f: impl Fn(usize, &mut [T]) + Sync + Send,
    ) {
        match &self.threads {
            Threads::Spin(p) => p.for_chunks_mut(data, chunk, f),
            Threads::Rayon(_) => data
                .par_chunks_mut(chunk.max(1))
                .enumerate()
                .for_each(|(i, c)| f(i, c)),
        }
    }

    /// `f(i, stripe)` for each `width`-column stripe of the row-major
    /// matrix `data` (rows of `row_len`), in parallel.
    fn stripes<T: Send>(
        &self,
        data: &mut [T],
        row_len: usize,
        width: usize,
        f: impl Fn(usize, Stripe<'_, T>) + Sync + Send,
    ) {
        match &self.threads {
            Threads::Spin(p) => p.for_stripes_mut(data, row_len, width, f),
            Threads::Rayon(_) => for_stripes(
                data,
                row_len,
                width,
                |n, task| (0..n).into_par_iter().for_each(task),
                f,
            ),
        }
    }

    /// [`Cpu::chunks`] over two slices in lockstep.
    fn chunks2<T: Send, U: Send>(
        &self,
        a: &mut [T],
        ca: usize,
        b: &mut [U],
        cb: usize,
        f: impl Fn(usize, &mut [T], &mut [U]) + Sync + Send,
    ) {
        match &self.threads {
            Threads::Spin(p) => p.for_chunks2_mut(a, ca, b, cb, f),
            Threads::Rayon(_) => a
                .par_chunks_mut(ca.max(1))
                .zip(b.par_chunks_mut(cb.max(1)))
                .enumerate()
                .for_each(|(i, (x, y))| f(i, x, y)),
        }
    }
}

/// Activation rows quantized once to a weight type's dot type.
pub struct QuantAct {
    pub ty: GgmlType,
    pub rows: usize,
    pub row_bytes: usize,
    pub data: Vec<u8>,
    /// For Q8_0 rows: the exact sum of each block's levels (packed kernels).
    pub sums: Vec<i32>,
}

impl KvCache for LayerCache {
    fn len(&self) -> usize {
        LayerCache::len(self)
    }
    fn positions(&self) -> &[u32] {
        LayerCache::positions(self)
    }
    fn bytes(&self) -> usize {
        LayerCache::bytes(self)
    }
    fn truncate(&mut self, n: usize) {
        LayerCache::truncate(self, n)
    }
}

/// Buffers kept for reuse, at most [`Pool::MAX`].
struct Pool<T>(std::sync::Mutex<Vec<Vec<T>>>);

impl<T> Default for Pool<T> {
    fn default() -> Self {
        Pool(std::sync::Mutex::new(Vec::new()))
    }
}

impl<T: Copy + Default> Pool<T> {
    const MAX: usize = 64;

    /// A vector of `n` default values: the smallest kept buffer that holds
    /// `n`, else a new one.
    fn take(&self, n: usize) -> Vec<T> {
        match self.take_kept(n) {
            Some(mut v) => {
                v.clear();
                v.resize(n, T::default());
                v
            }
            None => vec![T::default(); n],
        }
    }

    /// A vector of `n` values left as they are (stale values of an
    /// earlier use), for a caller that overwrites every element: saves
    /// the zeroing pass of [`Pool::take`].
    fn take_any(&self, n: usize) -> Vec<T> {
        let mut v = self.take_kept(n).unwrap_or_default();
        v.resize(n, T::default());
        v.truncate(n);
        v
    }

    fn take_kept(&self, n: usize) -> Option<Vec<T>> {
        let mut kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let best = (0..kept.len())
            .filter(|&i| kept[i].capacity() >= n)
            .min_by_key(|&i| kept[i].capacity());
        best.map(|i| kept.swap_remove(i))
    }

    fn give(&self, v: Vec<T>) {
        if v.capacity() == 0 {
            return;
        }
        let mut kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if kept.len() >= Self::MAX {
            // the smallest goes: big buffers are the ones worth keeping
            if let Some(i) = (0..kept.len()).min_by_key(|&i| kept[i].capacity()) {
                if kept[i].capacity() >= v.capacity() {
                    return;
                }
                kept.swap_remove(i);
            }
        }
        kept.push(v);
    }
}

thread_local! {
    /// Each thread's attention scores for the f32-cache path.
    static SCORES: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Output columns (weight rows) computed per matmul task: the width of
/// the output stripe it writes, equal to the packed layouts' group of rows.
const COLS_PER_TASK: usize = 16;
const _: () = assert!(subllm_kernels::repack::ROWS == COLS_PER_TASK);
/// Batches of at least this many rows take the tiled attention kernel
/// (f32 accumulation); shorter ones the per-row f16 kernel. llama.cpp
/// switches at the same size (its `GGML_FA_TILE_Q`), so below it our
/// results equal its flash attention bit for bit.
const TILED_ATTN_MIN_ROWS: usize = 64;

/// Keys per task of decode attention over a long cache (see
/// `Cpu::attention`); up to this many keys a row is one pass per head,
/// bit for bit llama.cpp's flash attention.
const SPAN_KEYS: usize = 1024;

impl Cpu {
    /// A zeroed `rows x cols` matrix, from kept storage where there is some.
    fn zeros(&self, rows: usize, cols: usize) -> Result<Mat> {
        let n = elements(rows, cols)?;
        Ok(Mat::from_vec(rows, cols, self.f32s.take(n)))
    }

    /// A `rows x cols` matrix whose every element the caller overwrites.
    fn uninit(&self, rows: usize, cols: usize) -> Result<Mat> {
        let n = elements(rows, cols)?;
        Ok(Mat::from_vec(rows, cols, self.f32s.take_any(n)))
    }
}

impl Backend for Cpu {
    type Tensor = Mat;
    type QuantAct = QuantAct;
    type Cache = LayerCache;
    type Weights = CpuWeights;

    fn name(&self) -> &'static str {
        "cpu"
    }

    fn install<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        match &self.threads {
            Threads::Spin(_) => f(),
            Threads::Rayon(p) => p.install(f),
        }
    }

    fn prepare(&self, model: &Model) -> Result<CpuWeights> {
        Ok(CpuWeights::plan(model))
    }

    fn new_cache(&self, ty: KvType, width: usize, reserve_rows: usize) -> Result<LayerCache> {
        if ty.ggml().row_bytes(width as u64).is_none() {
            return Err(Error::Backend(format!(
                "a {ty:?} cache of rows of {width} values"
            )));
        }
        Ok(LayerCache::new(ty, width, reserve_rows))
    }

    fn rows(&self, t: &Mat) -> usize {
        t.rows
    }

    fn read(&self, t: &Mat, out: &mut Vec<f32>) -> Result<()> {
        out.extend_from_slice(&t.data);
        Ok(())
    }

    fn copy(&self, t: &Mat) -> Result<Mat> {
        let mut c = self.uninit(t.rows, t.cols)?;
        c.data.copy_from_slice(&t.data);
        Ok(c)
    }

    fn embed(&self, table: &Weight, ids: &[u32]) -> Result<Mat> {
        let mut out = self.zeros(ids.len(), table.n_in)?;
        for (r, &id) in ids.iter().enumerate() {
            if id as usize >= table.n_out {
                return Err(Error::Backend(format!(
                    "token {id} is outside the {} rows of {}",
                    table.n_out, table.name
                )));
            }
            table
                .kernels
                .dequantize(table.row(id as usize), out.row_mut(r))
                .map_err(|e| Error::Backend(format!("{}: {e}", table.name)))?;
        }
        Ok(out)
    }

    fn rms_norm(&self, x: &Mat, gain: &[f32], eps: f32) -> Result<Mat> {
        same("rms_norm gain", gain.len(), x.cols)?;
        // every element is written
        let mut out = self.uninit(x.rows, x.cols)?;
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
        Ok(out)
    }

    fn quantize_act(&self, x: &Mat, ty: GgmlType) -> Result<QuantAct> {
        let act = kernels_for(ty).map_err(|e| Error::Backend(e.to_string()))?;
        let rb = ty.row_bytes(x.cols as u64).ok_or_else(|| {
            Error::Backend(format!(
                "rows of {} values are not whole {ty} blocks",
                x.cols
            ))
        })? as usize;
        // every row is quantized whole
        let mut data = self.bytes.take_any(x.rows * rb);
        let nb = if ty == GgmlType::Q8_0 { x.cols / 32 } else { 0 };
        // one sums slot per row at least, so rows zip with their sums; each
        // row's Q8_0 block sums (for the packed kernels) are taken right
        // after its quantization, while the row is in cache
        let srow = nb.max(1);
        let mut sums = self.i32s.take(x.rows * srow);
        let quant = |r: usize, dst: &mut [u8], s: &mut [i32]| {
            act.quantize_act(x.row(r), dst).expect("sizes match");
            if nb > 0 {
                subllm_kernels::repack::act_sums(dst, s);
            }
        };
        if x.rows == 1 {
            quant(0, &mut data[..], &mut sums[..]);
        } else {
            self.chunks2(&mut data, rb, &mut sums, srow, quant);
        }
        if nb == 0 {
            self.i32s.give(std::mem::take(&mut sums));
        }
        Ok(QuantAct {
            ty,
            rows: x.rows,
            row_bytes: rb,
            data,
            sums,
        })
    }

    fn linear_q(
        &self,
        xq: &QuantAct,
        w: &Weight,
        prepared: &CpuWeights,
        bias: Option<&[f32]>,
    ) -> Result<Mat> {
        let (m, n) = (xq.rows, w.n_out);
        act_fits(xq, w)?;
        if let Some(b) = bias {
            same("linear bias", b.len(), n)?;
        }
        if m == 0 {
            return self.zeros(0, n);
        }
        // every element is written by the kernels
        let mut out = self.uninit(m, n)?;
        match prepared.packed(w) {
            Some(packed) => packed_matmul(self, xq, w, packed, &mut out.data, |o, v| {
                o.copy_from_slice(v)
            }),
            None => tiled_matmul(self, xq, w, &mut out.data),
        };
        if let Some(b) = bias {
            for r in 0..m {
                for (o, &bv) in out.row_mut(r).iter_mut().zip(b) {
                    *o += bv;
                }
            }
        }
        Ok(out)
    }

    fn rope(&self, x: &mut Mat, pos: &[u32], head_dim: usize, base: f32) -> Result<()> {
        same("rope positions", pos.len(), x.rows)?;
        if head_dim == 0 || !head_dim.is_multiple_of(2) || !x.cols.is_multiple_of(head_dim) {
            return Err(Error::Backend(format!(
                "rope: rows of {} values in heads of {head_dim}",
                x.cols
            )));
        }
        // as ggml computes it: theta starts at the position and is scaled by
        // base^(-2/head_dim) per pair, all in f32, and the rotation fuses its
        // products as llama.cpp's build does, so results match bit for bit
        let theta_scale = base.powf(-2.0f32 / head_dim as f32);
        let (cols, half) = (x.cols, head_dim / 2);
        // each row's (cos, sin) table, shared by its heads
        let mut cs = self.pairs.take_any(x.rows * half);
        self.chunks2(&mut x.data, cols, &mut cs, half, |i, row, cs| {
            let mut theta = pos[i] as f32;
            for c in cs.iter_mut() {
                *c = (theta.cos(), theta.sin());
                theta *= theta_scale;
            }
            subllm_kernels::fp::rope_row(row, cs, head_dim);
        });
        self.pairs.give(cs);
        Ok(())
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
    ) -> Result<Mat> {
        let m = q.rows;
        let kvw = n_head_kv * head_dim;
        if n_head_kv == 0
            || !n_head.is_multiple_of(n_head_kv)
            || q.cols != n_head * head_dim
            || (k.rows, k.cols, v.rows, v.cols) != (m, kvw, m, kvw)
            || pos.len() != m
            || cache.width != kvw
        {
            return Err(Error::Backend(format!(
                "attention: q {}x{}, k {}x{}, v {}x{}, {} positions, cache width {} for {n_head} heads ({n_head_kv} kv) of {head_dim}",
                q.rows, q.cols, k.rows, k.cols, v.rows, v.cols, pos.len(), cache.width
            )));
        }
        let mut out = self.zeros(m, n_head * head_dim)?;
        if m == 0 {
            return Ok(out);
        }
        let n_old = cache.len();
        cache.append(&k.data, &v.data, pos);
        let group = n_head / n_head_kv;
        let scale = 1.0 / (head_dim as f32).sqrt();
        // F16 and Q8_0 rows are read where they lie (Q8_0 heads that are
        // not whole blocks are dequantized once per call instead)
        if let (Rows::Q8_0(kc), Rows::Q8_0(vc)) = (cache.keys(), cache.values()) {
            if head_dim.is_multiple_of(32) && head_dim <= attn::Q8_0_MAX_HEAD {
                let q8 = KvType::Q8_0;
                let (stride, hb) = (q8.row_bytes(kvw), q8.row_bytes(head_dim));
                let level = subllm_kernels::cpu::level();
                self.chunks(&mut out.data, head_dim, |idx, o| {
                    let (r, h) = (idx / n_head, idx % n_head);
                    let rows = |data| HeadRows {
                        data,
                        stride,
                        offset: h / group * hb,
                    };
                    let qh = &q.row(r)[h * head_dim..(h + 1) * head_dim];
                    attn::attend_q8_0_at(level, qh, rows(kc), rows(vc), n_old + r + 1, scale, o);
                });
                return Ok(out);
            }
        }
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
        if let (Some((kc, vc)), true) = (f16_rows, m >= TILED_ATTN_MIN_ROWS) {
            // prefill: tiles of 16 consecutive rows, every head of a tile in
            // one task (so the task owns those output rows)
            let w = n_head * head_dim;
            self.chunks(&mut out.data, attn::TILE_ROWS * w, |ti, chunk| {
                let r0 = ti * attn::TILE_ROWS;
                let rows = chunk.len() / w;
                for h in 0..n_head {
                    let kvh = h / group;
                    let hr = |data| HeadRows {
                        data,
                        stride: kvw,
                        offset: kvh * head_dim,
                    };
                    attn::attend_f16_rows(
                        attn::RowsJob {
                            q: &q.data[r0 * w..],
                            q_stride: w,
                            q_offset: h * head_dim,
                            rows,
                            n_keys0: n_old + r0 + 1,
                            k: hr(kc),
                            v: hr(vc),
                            out: chunk,
                            out_stride: w,
                            out_offset: h * head_dim,
                            d: head_dim,
                        },
                        scale,
                    );
                }
            });
            return Ok(out);
        }
        let level = subllm_kernels::cpu::level();
        if let (Some((kc, vc)), true) = (f16_rows, attn::heads::row_ordered(level, head_dim)) {
            let heads = |r: usize, h0: usize, nh: usize| attn::heads::Heads {
                q: &q.row(r)[h0 * head_dim..(h0 + nh) * head_dim],
                first: h0,
                d: head_dim,
                group,
                k: kc,
                v: vc,
                stride: kvw,
                scale,
            };
            if n_old + m <= SPAN_KEYS {
                // decode and short batches over a short cache: the heads cut
                // into one range per thread, each task its range of every
                // row (each head exactly as attend_f16 computes it)
                let per = n_head.div_ceil(self.threads().max(1));
                self.stripes(
                    &mut out.data,
                    n_head * head_dim,
                    per * head_dim,
                    |si, mut st| {
                        for r in 0..st.rows() {
                            let o = st.row(r);
                            let hs = heads(r, si * per, o.len() / head_dim);
                            attn::heads::attend_f16_heads_at(level, hs, n_old + r + 1, o);
                        }
                    },
                );
                return Ok(out);
            }
            // a long cache: each row's keys in spans of SPAN_KEYS, one task
            // per (row, span) for every head, so that each thread reads whole
            // cache rows front to back (a thread reading part of each row
            // gets a fraction of the bandwidth); then the spans combined.
            // Spans are cut at fixed keys, so results do not depend on the
            // thread count.
            let spans = (n_old + m).div_ceil(SPAN_KEYS);
            let pl = attn::heads::part_len(head_dim);
            let mut parts = self.f32s.take_any(elements(m * spans * n_head, pl)?);
            self.chunks(&mut parts, n_head * pl, |ti, part| {
                let (r, sp) = (ti / spans, ti % spans);
                let n_see = n_old + r + 1;
                let from = (sp * SPAN_KEYS).min(n_see);
                let to = (from + SPAN_KEYS).min(n_see);
                attn::heads::attend_f16_heads_part_at(level, heads(r, 0, n_head), from..to, part);
            });
            let w = n_head * head_dim;
            self.chunks(&mut out.data, w, |r, row| {
                let rp = &parts[r * spans * n_head * pl..][..spans * n_head * pl];
                for (h, o) in row.chunks_exact_mut(head_dim).enumerate() {
                    attn::heads::combine(&rp[h * pl..], n_head * pl, spans, o);
                }
            });
            self.f32s.give(parts);
            return Ok(out);
        }
        if let Some((kc, vc)) = f16_rows {
            // decode and short batches: (row, head) jobs run in lockstep by the kernel, four per task
            // where there are plenty, else two (so that decode's few heads
            // still spread over every thread)
            let threads = self.threads().max(1);
            let jobs_per_task = if m * n_head >= 8 * threads { 4 } else { 2 };
            self.chunks(&mut out.data, head_dim * jobs_per_task, |ti, chunk| {
                // at most four jobs, in a fixed array (nothing allocated)
                let n_jobs = chunk.len() / head_dim;
                let mut parts = chunk.chunks_mut(head_dim).enumerate().map(|(jj, o)| {
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
                });
                let mut jobs: [attn::AttnJob; 4] =
                    std::array::from_fn(|_| parts.next().unwrap_or_default());
                attn::attend_f16_batch(&mut jobs[..n_jobs], scale);
            });
            return Ok(out);
        }
        let reserved_rows = cache.capacity_bytes() / 2 / cache.ty.row_bytes(kvw).max(1);
        // one (row, head) job: scores over the `n_see` visible rows in `s`
        let job = |idx: usize, o: &mut [f32], s: &mut [f32]| {
            let (r, h) = (idx / n_head, idx % n_head);
            let kvh = h / group;
            let qh = &q.row(r)[h * head_dim..(h + 1) * head_dim];
            let n_see = n_old + r + 1;
            let k_row = |j: usize| &kf[j * kvw + kvh * head_dim..j * kvw + (kvh + 1) * head_dim];
            let v_row = |j: usize| &vf[j * kvw + kvh * head_dim..j * kvw + (kvh + 1) * head_dim];
            let s = &mut s[..n_see];
            for (j, x) in s.iter_mut().enumerate() {
                *x = subllm_kernels::fp::dot_f32(qh, k_row(j)) * scale;
            }
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
        };
        if m == 1 {
            // decode: each head's scores in one pooled buffer with room for
            // every reserved row, so that no step allocates (whichever
            // thread runs a head)
            let stride = (n_old + 1).max(reserved_rows);
            let mut scores = self.f32s.take_any(elements(n_head, stride)?);
            self.chunks2(&mut out.data, head_dim, &mut scores, stride, |idx, o, s| {
                job(idx, o, s)
            });
            self.f32s.give(scores);
            return Ok(out);
        }
        self.chunks(&mut out.data, head_dim, |idx, o| {
            let n_see = n_old + idx / n_head + 1;
            SCORES.with_borrow_mut(|s| {
                // this thread's scores buffer, reused, with room for every
                // row the cache has reserved (so that it grows only past them)
                s.clear();
                s.reserve(n_see.max(reserved_rows));
                s.resize(n_see, 0.0);
                job(idx, o, s)
            });
        });
        Ok(out)
    }

    fn linear_q_swiglu(
        &self,
        xq: &QuantAct,
        w: &Weight,
        prepared: &CpuWeights,
        gate: &mut Mat,
    ) -> Result<()> {
        let Some(packed) = prepared.packed(w) else {
            return super::linear_then_swiglu(self, xq, w, prepared, gate);
        };
        act_fits(xq, w)?;
        same("swiglu rows", xq.rows, gate.rows)?;
        same("swiglu columns", w.n_out, gate.cols)?;
        // each 16-column piece of `up` meets its piece of `gate` as it is
        // made: swiglu_ggml on whole groups of 16 is the elementwise function
        // it is on the whole matrix (packed matrices have a multiple of 16
        // rows)
        packed_matmul(self, xq, w, packed, &mut gate.data, |g, u| {
            subllm_kernels::fp::swiglu_ggml(g, u)
        });
        Ok(())
    }

    fn swiglu(&self, gate: &mut Mat, up: &Mat) -> Result<()> {
        same("swiglu rows", up.rows, gate.rows)?;
        same("swiglu columns", up.cols, gate.cols)?;
        subllm_kernels::fp::swiglu_ggml(&mut gate.data, &up.data);
        Ok(())
    }

    fn add(&self, a: &mut Mat, b: &Mat) -> Result<()> {
        same("add rows", b.rows, a.rows)?;
        same("add columns", b.cols, a.cols)?;
        for (x, &y) in a.data.iter_mut().zip(&b.data) {
            *x += y;
        }
        Ok(())
    }

    fn recycle(&self, m: Mat) {
        self.f32s.give(m.data);
    }

    fn recycle_act(&self, a: QuantAct) {
        self.bytes.give(a.data);
        self.i32s.give(a.sums);
    }

    fn gather(&self, x: &Mat, idx: &[usize]) -> Result<Mat> {
        if let Some(&i) = idx.iter().find(|&&i| i >= x.rows) {
            return Err(Error::Backend(format!("gather: row {i} of {}", x.rows)));
        }
        // every row is overwritten
        let mut out = self.uninit(idx.len(), x.cols)?;
        for (o, &i) in idx.iter().enumerate() {
            out.row_mut(o).copy_from_slice(x.row(i));
        }
        Ok(out)
    }

    fn upsample_blend(
        &self,
        z: &mut Mat,
        inner: &Mat,
        keep: &[usize],
        w: &[f32],
        beta: &[f32],
    ) -> Result<()> {
        let ascending = keep.windows(2).all(|p| p[0] < p[1]);
        if !ascending
            || keep.last().is_some_and(|&t| t >= z.rows)
            || (inner.rows, inner.cols, w.len(), beta.len())
                != (keep.len(), z.cols, keep.len(), z.cols)
        {
            return Err(Error::Backend(format!(
                "upsample: {} kept rows (ascending: {ascending}) of {}x{} into {}x{}, {} weights, {} bypass scales",
                keep.len(), inner.rows, inner.cols, z.rows, z.cols, w.len(), beta.len()
            )));
        }
        let cols = z.cols;
        self.chunks(&mut z.data, cols, |t, row| {
            // the kept rows ascend, so row t finds its inner row by search
            if let Ok(j) = keep.binary_search(&t) {
                let (y, aj) = (inner.row(j), w[j]);
                for ((zc, &yc), &b) in row.iter_mut().zip(y).zip(beta) {
                    *zc += aj * b * (yc - *zc);
                }
            }
        });
        Ok(())
    }

    fn scores(&self, x: &Mat, w: &[f32], out: &mut Vec<f32>) -> Result<()> {
        same("scorer", w.len(), x.cols)?;
        out.clear();
        out.extend((0..x.rows).map(|r| {
            x.row(r)
                .iter()
                .zip(w)
                .map(|(&a, &b)| a as f64 * b as f64)
                .sum::<f64>() as f32
        }));
        Ok(())
    }
}

/// The elements of a `rows x cols` matrix, or an error where they overflow.
fn elements(rows: usize, cols: usize) -> Result<usize> {
    rows.checked_mul(cols)
        .ok_or_else(|| Error::Backend(format!("a {rows} x {cols} matrix")))
}

/// An error unless `got == want` (a size an op needs).
/// Whether `xq` holds rows `w` multiplies: its dot type, one row of
/// `w.n_in` values each.
fn act_fits(xq: &QuantAct, w: &Weight) -> Result<()> {
    if xq.ty != w.kernels.vec_dot_type
        || Some(xq.row_bytes as u64) != xq.ty.row_bytes(w.n_in as u64)
    {
        return Err(Error::Backend(format!(
            "{}: activations are {} rows of {} bytes, the matrix takes {} rows of {} values",
            w.name, xq.ty, xq.row_bytes, w.kernels.vec_dot_type, w.n_in
        )));
    }
    Ok(())
}

fn same(what: &str, got: usize, want: usize) -> Result<()> {
    if got == want {
        Ok(())
    } else {
        Err(Error::Backend(format!("{what}: {got}, expected {want}")))
    }
}

/// Row groups a decode task reads in lockstep where `SUBLLM_DECODE_STREAMS=4`
/// (see `subllm_kernels::repack::packed_groups`). An earlier machine read
/// about a third more with four streams per thread than with one; on an AMD
/// Zen 4 one sequential stream is faster at every size measured (1.1B Q4_0
/// decode, one thread: 28 against 45 t/s), so one is the default.
const STREAMS: usize = 4;

/// `x W^T` (`m x n`, row-major) with the rows of W in groups
/// (`subllm_kernels::repack`); activations are Q8_0 with their block sums.
/// Each piece of 16 values of a row goes to `out` through `put(dst,
/// values)`: a copy, or an epilogue that combines them with what `dst`
/// holds (SwiGLU).
fn packed_matmul(
    cpu: &Cpu,
    x: &QuantAct,
    w: &Weight,
    packed: &[u8],
    out: &mut [f32],
    put: impl Fn(&mut [f32], &[f32]) + Sync + Send,
) {
    use subllm_kernels::repack::{kernels, ROWS};
    let (m, n, xb) = (x.rows, w.n_out, x.row_bytes);
    let nb = w.n_in / 32;
    let (xq, ys) = (&x.data, &x.sums);
    let (k1, k4) = kernels(subllm_kernels::cpu::level());
    let gb = packed.len() / (n / ROWS);
    let xr = |c: usize| &xq[c * xb..(c + 1) * xb];
    // block sums exist for Q8_0 activations only (Q8_K carries its own)
    let yr = |c: usize| -> &[i32] {
        if ys.is_empty() {
            &[]
        } else {
            &ys[c * nb..(c + 1) * nb]
        }
    };
    let ty = w.ty;
    let level = subllm_kernels::cpu::level();
    if m == 1 && subllm_kernels::repack::groups_supported(level, ty) {
        // decode: tasks of `streams` groups (read in lockstep where more than
        // one), contiguous in the matrix and in each thread's share of it
        use subllm_kernels::repack::packed_groups;
        let wg = |g: usize| &packed[g * gb..(g + 1) * gb];
        let streams = cpu.streams;
        cpu.chunks(out, ROWS * streams, |t, block| {
            let g0 = t * streams;
            if streams == STREAMS && block.len() == ROWS * STREAMS {
                let mut o = [[0.0f32; ROWS]; STREAMS];
                let w = std::array::from_fn(|k| wg(g0 + k));
                packed_groups::<STREAMS>(level, ty, w, xr(0), yr(0), &mut o);
                for (dst, o) in block.chunks_mut(ROWS).zip(&o) {
                    put(dst, o);
                }
            } else {
                for (k, dst) in block.chunks_mut(ROWS).enumerate() {
                    let mut o = [[0.0f32; ROWS]; 1];
                    packed_groups::<1>(level, ty, [wg(g0 + k)], xr(0), yr(0), &mut o);
                    put(dst, &o[0]);
                }
            }
        });
        return;
    }
    // one group of weight rows per task, over every activation row
    cpu.stripes(out, n, ROWS, |g, mut s| {
        let wg = &packed[g * gb..(g + 1) * gb];
        let mut c = 0;
        while c + 4 <= m {
            // the output rows of the next four columns: an epilogue that
            // reads them (SwiGLU) would otherwise wait on each (they are a
            // matrix row apart)
            for r in c + 4..c + 8 {
                s.prefetch_row(r);
            }
            let mut o = [[0.0f32; 4]; ROWS];
            k4(
                ty,
                wg,
                &[xr(c), xr(c + 1), xr(c + 2), xr(c + 3)],
                &[yr(c), yr(c + 1), yr(c + 2), yr(c + 3)],
                &mut o,
            );
            for (cc, row) in (c..c + 4).enumerate() {
                let vals: [f32; ROWS] = std::array::from_fn(|r| o[r][cc]);
                put(s.row(row), &vals);
            }
            c += 4;
        }
        for c in c..m {
            let mut o = [[0.0f32; 1]; ROWS];
            k1(ty, wg, &[xr(c)], &[yr(c)], &mut o);
            let vals: [f32; ROWS] = std::array::from_fn(|r| o[r][0]);
            put(s.row(c), &vals);
        }
    });
}

/// `x W^T` (`m x n`, row-major, into `out`) with the tile kernels.
fn tiled_matmul(cpu: &Cpu, x: &QuantAct, w: &Weight, out: &mut [f32]) {
    let (m, xb) = (x.rows, x.row_bytes);
    let xq = &x.data;
    let tiles = w.kernels.tiles();
    let xr = |c: usize| &xq[c * xb..(c + 1) * xb];
    // a stripe of output columns (weight rows) per task
    cpu.stripes(out, w.n_out, COLS_PER_TASK, |ci, mut s| {
        let j0 = ci * COLS_PER_TASK;
        let rows = s.width();
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
                    for (d, or) in s.row(c)[j..j + 4].iter_mut().zip(&o) {
                        *d = or[0];
                    }
                }
                j += 4;
            }
        } else {
            // prefill: two weight rows times four activation rows, over
            // chunks of activation rows that stay in cache while every
            // row pair of the block passes over them
            const CHUNK: usize = 32;
            for c0 in (0..m).step_by(CHUNK) {
                let c1 = (c0 + CHUNK).min(m);
                let mut jj = 0;
                while jj + 2 <= rows {
                    let wr = [w.row(j0 + jj), w.row(j0 + jj + 1)];
                    let mut c = c0;
                    while c + 4 <= c1 {
                        let mut o = [[0.0f32; 4]; 2];
                        (tiles.t2x4)(&wr, &[xr(c), xr(c + 1), xr(c + 2), xr(c + 3)], &mut o);
                        for (cc, row) in (c..c + 4).enumerate() {
                            for (d, or) in s.row(row)[jj..jj + 2].iter_mut().zip(&o) {
                                *d = or[cc];
                            }
                        }
                        c += 4;
                    }
                    for c in c..c1 {
                        for (r, &wrow) in wr.iter().enumerate() {
                            let mut o = [[0.0f32; 1]; 1];
                            (tiles.t1x1)(&[wrow], &[xr(c)], &mut o);
                            s.row(c)[jj + r] = o[0][0];
                        }
                    }
                    jj += 2;
                }
                j = jj;
            }
        }
        for j in j..rows {
            for c in 0..m {
                let mut o = [[0.0f32; 1]; 1];
                (tiles.t1x1)(&[w.row(j0 + j)], &[xr(c)], &mut o);
                s.row(c)[j] = o[0][0];
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::{Backend, Cpu, CpuWeights, Pool};
    use crate::kv::{KvType, LayerCache};
    use crate::model::Weight;
    use crate::tensor::Mat;
    use subllm_kernels::{kernels_for, GgmlType};

    /// Inputs that do not fit an op give an error, not a panic.
    #[test]
    fn ops_refuse_inputs_that_do_not_fit() {
        let cpu = Cpu::new(2).unwrap();
        let bytes = [0u8; 2 * 64 * 4];
        let w = Weight {
            id: 0,
            name: "w",
            ty: GgmlType::F32,
            n_in: 64,
            n_out: 2,
            bytes: &bytes,
            kernels: kernels_for(GgmlType::F32).unwrap(),
            multiplied: true,
            source: None,
        };
        let none = CpuWeights::default();
        let x = Mat::zeros(3, 64);
        let ok = cpu.linear(&x, &w, &none, None).unwrap();
        assert_eq!((ok.rows, ok.cols), (3, 2));
        // 32 columns against a matrix of 64; a bias of the wrong length
        assert!(cpu.linear(&Mat::zeros(3, 32), &w, &none, None).is_err());
        assert!(cpu.linear(&x, &w, &none, Some(&[0.0; 3])).is_err());
        let q8 = cpu.quantize_act(&x, GgmlType::Q8_0).unwrap();
        assert!(cpu.linear_q(&q8, &w, &none, None).is_err());
        // embedding ids past the table
        assert!(cpu.embed(&w, &[1]).is_ok());
        assert!(cpu.embed(&w, &[2]).is_err());
        // rows of 33 values are not whole Q8_0 blocks
        assert!(cpu
            .quantize_act(&Mat::zeros(1, 33), GgmlType::Q8_0)
            .is_err());
        assert!(cpu.gather(&x, &[2, 0]).is_ok());
        assert!(cpu.gather(&x, &[3]).is_err());
        assert!(cpu.rms_norm(&x, &[1.0; 63], 1e-5).is_err());
        assert!(cpu.scores(&x, &[1.0; 65], &mut Vec::new()).is_err());
        let (mut a, b) = (Mat::zeros(3, 64), Mat::zeros(2, 64));
        assert!(cpu.add(&mut a, &b).is_err());
        assert!(cpu.swiglu(&mut a, &b).is_err());
        assert!(cpu.rope(&mut a, &[0, 1], 16, 1e4).is_err());
        assert!(cpu.rope(&mut a, &[0, 1, 2], 15, 1e4).is_err());
        // the blend needs ascending kept rows inside z, and matching sizes
        let inner = Mat::zeros(2, 64);
        let beta = [0.5; 64];
        assert!(cpu
            .upsample_blend(&mut a, &inner, &[0, 2], &[1.0, 1.0], &beta)
            .is_ok());
        assert!(cpu
            .upsample_blend(&mut a, &inner, &[2, 0], &[1.0, 1.0], &beta)
            .is_err());
        assert!(cpu
            .upsample_blend(&mut a, &inner, &[0, 3], &[1.0, 1.0], &beta)
            .is_err());
        assert!(cpu
            .upsample_blend(&mut a, &inner, &[0, 1], &[1.0], &beta)
            .is_err());
        // attention: 2 heads of 32 over a cache of width 32 (one kv head)
        let mut cache = LayerCache::new(KvType::F16, 32, 8);
        let (q, kv) = (Mat::zeros(2, 64), Mat::zeros(2, 32));
        assert!(cpu
            .attention(&q, &kv, &kv, &[0, 1], &mut cache, 2, 1, 32)
            .is_ok());
        assert!(cpu
            .attention(&q, &kv, &kv, &[2], &mut cache, 2, 1, 32)
            .is_err());
        assert!(cpu
            .attention(&q, &kv, &kv, &[2, 3], &mut cache, 2, 2, 32)
            .is_err());
        assert_eq!(cache.len(), 2, "a refused op leaves the cache as it was");
    }

    /// Decode attention over a long F16 cache (keys in spans, spans on
    /// different threads, then combined) gives the same bits on one thread
    /// and on two, and the attention of an F32 cache holding the same values
    /// within f16 accumulation.
    #[test]
    fn decode_attention_over_a_long_cache_is_thread_count_free() {
        let (n_head, n_kv, d, n_old) = (6, 2, 64, super::SPAN_KEYS * 2 + 300);
        let mut seed = 3u64;
        let mut rnd = |n: usize| -> Vec<f32> {
            (0..n)
                .map(|_| {
                    seed = seed
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1_442_695_040_888_963_407);
                    let x = ((seed >> 33) as f32 / (1u64 << 31) as f32 - 0.5) * 4.0;
                    half::f16::from_f32(x).to_f32()
                })
                .collect()
        };
        let (k, v) = (rnd(n_old * n_kv * d), rnd(n_old * n_kv * d));
        let pos: Vec<u32> = (0..n_old as u32).collect();
        let q = Mat::from_vec(1, n_head * d, rnd(n_head * d));
        let (k1, v1) = (
            Mat::from_vec(1, n_kv * d, rnd(n_kv * d)),
            Mat::from_vec(1, n_kv * d, rnd(n_kv * d)),
        );
        let run = |threads: usize, ty: KvType| {
            let mut cache = LayerCache::new(ty, n_kv * d, n_old + 1);
            cache.append(&k, &v, &pos);
            let cpu = Cpu::new(threads).unwrap();
            let out = cpu
                .attention(&q, &k1, &v1, &[n_old as u32], &mut cache, n_head, n_kv, d)
                .unwrap();
            out.data
        };
        let (one, two) = (run(1, KvType::F16), run(2, KvType::F16));
        assert_eq!(
            one.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            two.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
        );
        let exact = run(1, KvType::F32);
        let diff = one
            .iter()
            .zip(&exact)
            .fold(0.0f32, |a, (x, y)| a.max((x - y).abs()));
        // values in [-2, 2]; the f16 accumulator rounds after every key
        assert!(diff < 1e-2, "F16 vs F32 cache: {diff}");
    }

    /// `vals` (`n_out` rows of `n_in`) quantized to `ty`, and that matrix
    /// repacked.
    fn quantized_and_packed(
        ty: GgmlType,
        vals: &[f32],
        n_in: usize,
        n_out: usize,
    ) -> (Vec<u8>, Vec<u8>) {
        let k = kernels_for(ty).unwrap();
        let rb = ty.row_bytes(n_in as u64).unwrap() as usize;
        let mut bytes = vec![0u8; rb * n_out];
        for (r, row) in bytes.chunks_mut(rb).enumerate() {
            k.quantize(&vals[r * n_in..(r + 1) * n_in], row).unwrap();
        }
        let packed = subllm_kernels::repack::repack(ty, &bytes, n_in, n_out).unwrap();
        (bytes, packed)
    }

    fn test_weight(ty: GgmlType, n_in: usize, n_out: usize, bytes: &[u8]) -> Weight<'_> {
        Weight {
            id: 0,
            name: "w",
            ty,
            n_in,
            n_out,
            bytes,
            kernels: kernels_for(ty).unwrap(),
            multiplied: true,
            source: None,
        }
    }

    /// Decode reads a task's row groups one after another (the default) or
    /// four in lockstep (`SUBLLM_DECODE_STREAMS=4`): the same bits, a tail
    /// task shorter than four groups included.
    #[test]
    fn decode_streams_give_the_same_bits() {
        use subllm_kernels::repack;
        let level = subllm_kernels::cpu::level();
        let (n_in, n_out) = (512, 5 * repack::ROWS);
        let mut seed = 0x2545_f491_u64;
        let mut rnd = move || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        };
        let vals: Vec<f32> = (0..n_in * n_out).map(|_| rnd()).collect();
        let x = Mat {
            rows: 1,
            cols: n_in,
            data: (0..n_in).map(|_| rnd()).collect(),
        };
        let mut tested = 0;
        for ty in [GgmlType::Q4_0, GgmlType::Q8_0, GgmlType::Q4K, GgmlType::Q6K] {
            if !repack::groups_supported(level, ty) {
                continue;
            }
            let k = kernels_for(ty).unwrap();
            let (bytes, packed) = quantized_and_packed(ty, &vals, n_in, n_out);
            let w = test_weight(ty, n_in, n_out, &bytes);
            let mut outs = Vec::new();
            for streams in [1, super::STREAMS] {
                let mut cpu = Cpu::new(2).unwrap();
                cpu.streams = streams;
                let xq = cpu.quantize_act(&x, k.vec_dot_type).unwrap();
                let mut out = vec![0.0f32; n_out];
                super::packed_matmul(&cpu, &xq, &w, &packed, &mut out, |o, v| {
                    o.copy_from_slice(v)
                });
                outs.push(out);
            }
            assert!(outs[0].iter().any(|&v| v != 0.0), "{ty}");
            let bits = |o: &[f32]| o.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&outs[0]), bits(&outs[1]), "{ty}");
            tested += 1;
        }
        if cfg!(target_arch = "x86_64") && level >= subllm_kernels::cpu::Level::Avx2 {
            assert_eq!(tested, 4);
        }
    }

    /// The packed matmul with SwiGLU applied to each 16-value piece as it
    /// is made (`linear_q_swiglu`) gives the bits of the product followed by
    /// SwiGLU over the whole matrix, for decode and prefill row counts.
    #[test]
    fn swiglu_on_the_pieces_of_a_packed_product_is_swiglu_on_the_product() {
        use subllm_kernels::repack;
        let level = subllm_kernels::cpu::level();
        let (n_in, n_out) = (256, 6 * repack::ROWS);
        let mut seed = 0x9e37_79b9_u64;
        let mut rnd = move || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 40) as f32 / (1u64 << 24) as f32) * 8.0 - 4.0
        };
        let vals: Vec<f32> = (0..n_in * n_out).map(|_| rnd()).collect();
        let mut tested = 0;
        for ty in [GgmlType::Q4_0, GgmlType::Q4K] {
            if !repack::groups_supported(level, ty) {
                continue;
            }
            let k = kernels_for(ty).unwrap();
            let (bytes, packed) = quantized_and_packed(ty, &vals, n_in, n_out);
            let w = test_weight(ty, n_in, n_out, &bytes);
            let cpu = Cpu::new(2).unwrap();
            for m in [1usize, 5, 37] {
                let x = Mat {
                    rows: m,
                    cols: n_in,
                    data: (0..m * n_in).map(|_| rnd()).collect(),
                };
                let gate: Vec<f32> = (0..m * n_out).map(|_| rnd()).collect();
                let xq = cpu.quantize_act(&x, k.vec_dot_type).unwrap();
                let mut up = vec![0.0f32; m * n_out];
                super::packed_matmul(&cpu, &xq, &w, &packed, &mut up, |o, v| o.copy_from_slice(v));
                let mut want = gate.clone();
                subllm_kernels::fp::swiglu_ggml(&mut want, &up);
                let mut got = gate.clone();
                super::packed_matmul(&cpu, &xq, &w, &packed, &mut got, |g, u| {
                    subllm_kernels::fp::swiglu_ggml(g, u)
                });
                let bits = |o: &[f32]| o.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&got), bits(&want), "{ty}, {m} rows");
                assert_ne!(got, gate, "{ty}");
            }
            tested += 1;
        }
        if cfg!(target_arch = "x86_64") && level >= subllm_kernels::cpu::Level::Avx2 {
            assert_eq!(tested, 2);
        }
    }

    #[test]
    fn pooled_buffers_come_back_zeroed_and_the_pool_stays_bounded() {
        let pool = Pool::<f32>::default();
        let mut a = pool.take(100);
        assert!(a.iter().all(|&x| x == 0.0));
        a.iter_mut().for_each(|x| *x = 7.0);
        let cap = a.capacity();
        pool.give(a);
        // reused (same storage) and zeroed, at a smaller length too
        let b = pool.take(60);
        assert_eq!((b.len(), b.capacity()), (60, cap));
        assert!(b.iter().all(|&x| x == 0.0));
        // the smallest buffer that fits is chosen
        pool.give(vec![1.0; 1000]);
        pool.give(b);
        assert_eq!(pool.take(50).capacity(), cap);
        assert!(pool.take(500).capacity() >= 1000);
        // take_any leaves stale values but has the asked length
        pool.give(vec![3.0; 10]);
        let c = pool.take_any(4);
        assert_eq!(c, [3.0; 4]);
        pool.give(c);
        assert_eq!(pool.take_any(8), [3.0, 3.0, 3.0, 3.0, 0.0, 0.0, 0.0, 0.0]);
        // bounded: past MAX buffers the smallest are dropped
        for n in 1..=2 * Pool::<f32>::MAX {
            pool.give(vec![0.0; n]);
        }
        let kept = pool.0.lock().unwrap();
        assert_eq!(kept.len(), Pool::<f32>::MAX);
        assert!(kept.iter().all(|v| v.capacity() > Pool::<f32>::MAX));
    }
}
