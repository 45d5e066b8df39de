//! `Session`: one sequence's state over a model (its block caches, position
//! and statistics), and the one API the CLI and the C ABI sit on.

use std::time::{Duration, Instant};

use std::sync::Arc;

use crate::backend::cpu::Cpu;
use crate::backend::{Backend, KvCache};
use crate::error::{Error, Result};
use crate::exec::{self, RunArgs, RunCtx};
use crate::kv::KvType;
use crate::model::Model;

#[derive(Clone, Debug)]
pub struct SessionParams {
    /// Context size in tokens (0: the model's training context).
    pub n_ctx: usize,
    /// Prompt tokens evaluated per graph run.
    pub n_batch: usize,
    pub kv_type: KvType,
    /// Reproduce the official code's level >= 2 positions in a first,
    /// whole-prompt prefill (inference doc, section 7). That prefill is then
    /// evaluated in one batch whatever `n_batch` says.
    pub upstream_nested_positions: bool,
    /// Worker threads (0: all cores); at most the machine's hardware
    /// threads (see [`effective_threads`]).
    pub n_threads: usize,
    /// SUBLLM: a token is kept at a level iff its score is above this
    /// (0, the default, is the trained behaviour; lower keeps more tokens,
    /// higher fewer). Must be finite. No effect on Llama files.
    pub subsample_threshold: f32,
}

/// The machine's hardware threads (1 where it cannot be told).
/// Rows reserved up front for per-token bookkeeping (tokens, kept
/// positions): the whole context, up to this.
const RESERVE_MAX: usize = 1 << 20;

pub fn hardware_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The worker threads a request for `requested` gets: 0 means one per
/// hardware thread; more than the machine has is clamped to that (extra
/// threads of a compute-bound pool only take turns on the same cores, and
/// each costs a stack), as llama.cpp caps its thread count too.
pub fn effective_threads(requested: usize) -> usize {
    let hw = hardware_threads();
    if requested == 0 {
        hw
    } else {
        requested.min(hw)
    }
}

impl Default for SessionParams {
    fn default() -> Self {
        SessionParams {
            n_ctx: 0,
            n_batch: 512,
            kv_type: KvType::F16,
            upstream_nested_positions: false,
            n_threads: 0,
            subsample_threshold: 0.0,
        }
    }
}

/// Which logits `eval` returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logits {
    Last,
    All,
}

/// Counters of a session.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Tokens evaluated (the level-0 length).
    pub n_past: usize,
    /// For each region, tokens it has kept so far.
    pub kept_per_region: Vec<usize>,
    /// For each level (0 = outside all regions), tokens in its blocks' caches.
    pub tokens_per_level: Vec<usize>,
    /// KV bytes held by each block's cache.
    pub kv_bytes_per_block: Vec<usize>,
    pub kv_bytes: usize,
    /// What a full cache (every token in every block) would hold.
    pub kv_bytes_full: usize,
    pub prefill_tokens: usize,
    pub prefill_time: Duration,
    pub decode_tokens: usize,
    pub decode_time: Duration,
}

/// One sequence over a model on a backend (the CPU unless said).
pub struct Session<'m, B: Backend = Cpu> {
    model: &'m Model,
    params: SessionParams,
    n_ctx: usize,
    /// The backend: this session's threads and the storage its ops reuse
    /// from run to run.
    backend: B,
    /// The backend's form of the model's matrices, shared with every
    /// session on the model.
    weights: Arc<B::Weights>,
    caches: Vec<B::Cache>,
    /// The executor's host-side state, kept for its storage.
    ctx: RunCtx<B>,
    /// The last token's logits from [`Session::eval_last`].
    logits: Vec<f32>,
    kept: Vec<Vec<u32>>,
    n_past: usize,
    /// The tokens in the cache, in order.
    tokens: Vec<u32>,
    stats: Stats,
}

impl<'m> Session<'m, Cpu> {
    /// A session on the CPU backend, with `params.n_threads` threads.
    pub fn new(model: &'m Model, params: SessionParams) -> Result<Session<'m, Cpu>> {
        let backend = Cpu::new(effective_threads(params.n_threads))
            .map_err(|e| Error::Params(format!("cannot start the worker threads: {e}")))?;
        Session::with_backend(model, params, backend)
    }

    /// Worker threads this session computes with.
    pub fn n_threads(&self) -> usize {
        self.backend.threads()
    }

    /// The thread pool the backend splits ops on: `spin` (ours, the
    /// default) or `rayon` (`SUBLLM_POOL=rayon`).
    pub fn pool_name(&self) -> &'static str {
        self.backend.pool_name()
    }
}

impl<'m, B: Backend> Session<'m, B> {
    /// A session computing on `backend` (its thread count is the
    /// backend's; `params.n_threads` is not read).
    pub fn with_backend(model: &'m Model, params: SessionParams, backend: B) -> Result<Self> {
        let hp = &model.hparams;
        let n_ctx = if params.n_ctx == 0 {
            hp.n_ctx_train
        } else {
            params.n_ctx
        };
        if !params.subsample_threshold.is_finite() {
            return Err(Error::Params(format!(
                "subsample threshold {} is not a finite number",
                params.subsample_threshold
            )));
        }
        if n_ctx == 0 || n_ctx > 1 << 24 || params.n_batch == 0 {
            return Err(Error::Params(format!(
                "n_ctx {n_ctx}, n_batch {}",
                params.n_batch
            )));
        }
        if params
            .kv_type
            .ggml()
            .row_bytes(hp.kv_width() as u64)
            .is_none()
        {
            return Err(Error::Params(format!(
                "a {:?} KV cache needs a KV width that is a multiple of 32 (this model's is {})",
                params.kv_type,
                hp.kv_width()
            )));
        }
        let weights = model.prepared(|| backend.prepare(model))?;
        let caches = (0..hp.n_layer())
            .map(|_| backend.new_cache(params.kv_type, hp.kv_width(), n_ctx))
            .collect::<Result<Vec<_>>>()?;
        // room for the whole context, so that no step grows these
        let kept = (0..hp.structure.n_regions)
            .map(|_| Vec::with_capacity(n_ctx.min(RESERVE_MAX)))
            .collect();
        Ok(Session {
            model,
            n_ctx,
            ctx: RunCtx::new(model),
            logits: Vec::with_capacity(hp.n_vocab),
            caches,
            weights,
            kept,
            n_past: 0,
            tokens: Vec::with_capacity(n_ctx.min(RESERVE_MAX)),
            backend,
            params,
            stats: Stats::default(),
        })
    }

    /// The backend this session computes on.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    pub fn model(&self) -> &'m Model {
        self.model
    }

    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    /// Tokens evaluated so far.
    pub fn n_past(&self) -> usize {
        self.n_past
    }

    /// Evaluates `tokens` after what is already cached, in chunks of
    /// `n_batch`, and returns the logits of the last token (`n_vocab`
    /// values) or of every token (`tokens.len() * n_vocab`).
    pub fn eval(&mut self, tokens: &[u32], which: Logits) -> Result<Vec<f32>> {
        let mut out = Vec::new();
        self.eval_into(tokens, which, &mut out)?;
        Ok(out)
    }

    /// [`Session::eval`] for the last token's logits, kept in the session
    /// (valid until the next call): a decode step this way allocates
    /// nothing.
    pub fn eval_last(&mut self, tokens: &[u32]) -> Result<&[f32]> {
        let mut out = std::mem::take(&mut self.logits);
        let r = self.eval_into(tokens, Logits::Last, &mut out);
        self.logits = out;
        r?;
        Ok(&self.logits)
    }

    fn eval_into(&mut self, tokens: &[u32], which: Logits, out: &mut Vec<f32>) -> Result<()> {
        out.clear();
        let n_vocab = self.model.hparams.n_vocab;
        if let Some(&id) = tokens.iter().find(|&&t| t as usize >= n_vocab) {
            return Err(Error::InvalidToken { id, n_vocab });
        }
        if self.n_past + tokens.len() > self.n_ctx {
            return Err(Error::ContextFull {
                n_past: self.n_past,
                n_new: tokens.len(),
                n_ctx: self.n_ctx,
            });
        }
        if tokens.is_empty() {
            return Ok(());
        }
        let upstream = self.params.upstream_nested_positions && self.n_past == 0;
        let batch = if upstream {
            tokens.len()
        } else {
            self.params.n_batch
        };
        let t0 = Instant::now();
        let model = self.model;
        for chunk in tokens.chunks(batch) {
            let args = RunArgs {
                tokens: chunk,
                start: self.n_past,
                all_logits: which == Logits::All,
                upstream_nested_positions: upstream,
                subsample_threshold: self.params.subsample_threshold,
            };
            if which == Logits::Last {
                out.clear();
            }
            let (caches, backend, ctx, weights) = (
                &mut self.caches,
                &self.backend,
                &mut self.ctx,
                &*self.weights,
            );
            let r = backend.install(|| exec::run(backend, model, weights, caches, ctx, &args, out));
            if let Err(e) = r {
                // what this chunk appended is dropped: the session stays
                // as it was after the last chunk that ran
                self.truncate_caches(self.n_past);
                if which == Logits::Last {
                    out.clear();
                }
                return Err(e);
            }
            for (k, p) in self.kept.iter_mut().zip(&self.ctx.kept) {
                k.extend_from_slice(p);
            }
            self.n_past += chunk.len();
            self.tokens.extend_from_slice(chunk);
        }
        let dt = t0.elapsed();
        if tokens.len() == 1 {
            self.stats.decode_tokens += 1;
            self.stats.decode_time += dt;
        } else {
            self.stats.prefill_tokens += tokens.len();
            self.stats.prefill_time += dt;
        }
        Ok(())
    }

    /// Forgets every token (caches emptied, memory released).
    pub fn reset(&mut self) {
        for c in &mut self.caches {
            c.truncate(0);
        }
        for k in &mut self.kept {
            k.clear();
        }
        self.n_past = 0;
        self.tokens.clear();
        self.stats = Stats::default();
    }

    /// The tokens in the cache, in order.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// Context shift: forgets `n_discard` tokens after the first `n_keep`
    /// and re-evaluates the rest at their new positions, returning the last
    /// token's logits. llama.cpp instead re-rotates the cached keys, which
    /// keeps values computed with the forgotten tokens in view; evaluating
    /// again gives exactly what a fresh prefill of the shortened text gives,
    /// and works for SUBLLM files too, whose kept sets depend on every
    /// token before them. It costs a prefill of what is kept.
    pub fn shift(&mut self, n_keep: usize, n_discard: usize) -> Result<Vec<f32>> {
        let n_keep = n_keep.min(self.n_past);
        let n_discard = n_discard.min(self.n_past - n_keep);
        let mut rest: Vec<u32> = self.tokens[..n_keep].to_vec();
        rest.extend_from_slice(&self.tokens[n_keep + n_discard..]);
        let stats = self.stats.clone();
        self.reset();
        self.stats = stats;
        self.eval(&rest, Logits::Last)
    }

    /// Forgets every token from position `n` on, at every level.
    pub fn truncate(&mut self, n: usize) {
        if n >= self.n_past {
            return;
        }
        self.truncate_caches(n);
        for k in &mut self.kept {
            let keep = k.partition_point(|&p| (p as usize) < n);
            k.truncate(keep);
        }
        self.n_past = n;
        self.tokens.truncate(n);
    }

    /// Drops every cached row at position `n` or later, at every level.
    fn truncate_caches(&mut self, n: usize) {
        for c in &mut self.caches {
            let keep = c.positions().partition_point(|&p| (p as usize) < n);
            c.truncate(keep);
        }
    }

    /// Absolute positions each region has kept so far.
    pub fn kept_positions(&self) -> &[Vec<u32>] {
        &self.kept
    }

    /// The cache of block `layer`.
    pub fn cache(&self, layer: usize) -> &B::Cache {
        &self.caches[layer]
    }

    pub fn stats(&self) -> Stats {
        let hp = &self.model.hparams;
        let mut s = self.stats.clone();
        s.n_past = self.n_past;
        s.kept_per_region = self.kept.iter().map(Vec::len).collect();
        s.tokens_per_level = vec![0; hp.structure.depth + 1];
        for (c, &lvl) in self.caches.iter().zip(&hp.structure.block_level) {
            s.tokens_per_level[lvl] = c.len();
        }
        s.kv_bytes_per_block = self.caches.iter().map(KvCache::bytes).collect();
        s.kv_bytes = s.kv_bytes_per_block.iter().sum();
        s.kv_bytes_full =
            2 * self.params.kv_type.row_bytes(hp.kv_width()) * self.n_past * hp.n_layer();
        s
    }
}
