//! Perplexity over a text, computed as llama.cpp's `llama-perplexity` does
//! in its default mode, so that the two tools' figures can be compared:
//!
//! - the whole text is tokenized once, with BOS where the model adds it;
//! - it is cut into `n_ctx`-token chunks (a remainder shorter than a chunk is
//!   dropped); each chunk is evaluated from an empty cache, with its first
//!   token replaced by BOS where the model adds BOS;
//! - in each chunk only the second half is scored: the logits at positions
//!   `n_ctx/2 .. n_ctx-2` predict the next tokens, so every scored token has
//!   at least `n_ctx/2` tokens of context;
//! - the log-softmax is taken as llama.cpp takes it (f32 `exp` of logits
//!   minus their maximum, summed in f64), and the estimate is
//!   `exp(mean nll)` with the uncertainty `sd(nll) / sqrt(count - 1) * ppl`.
//!
//! SUBLLM files are scored the same way; what each level kept and the KV
//! bytes of a full chunk are reported beside the figure.

use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::model::Model;
use crate::session::{Logits, Session, SessionParams};

/// What to score.
#[derive(Clone, Debug)]
pub struct PerplexityParams {
    /// Tokens per chunk (llama-perplexity's `-c`, default 512).
    pub n_ctx: usize,
    /// Chunks to score; `None`: every whole chunk of the text.
    pub n_chunks: Option<usize>,
}

impl Default for PerplexityParams {
    fn default() -> Self {
        PerplexityParams {
            n_ctx: 512,
            n_chunks: None,
        }
    }
}

/// The running figure after one chunk.
#[derive(Clone, Debug)]
pub struct ChunkReport {
    /// 1-based chunk number.
    pub chunk: usize,
    pub n_chunks: usize,
    /// `exp` of the mean negative log-likelihood over every token scored so far.
    pub ppl: f64,
}

/// The final estimate, and what it cost.
#[derive(Clone, Debug)]
pub struct PerplexityResult {
    pub ppl: f64,
    /// One standard error of `ppl`, as llama.cpp reports it.
    pub ppl_err: f64,
    /// Mean negative log-likelihood (nats per token).
    pub nll: f64,
    /// Tokens scored.
    pub count: usize,
    pub n_chunks: usize,
    /// Tokens of the whole text.
    pub n_tokens: usize,
    /// Summed over the chunks: tokens held by the blocks of each level
    /// (0 = outside every region), for the kept fraction of each level.
    pub tokens_per_level: Vec<usize>,
    /// Mean KV bytes of one full chunk, and what a cache keeping every
    /// token at every block would hold.
    pub kv_bytes: usize,
    pub kv_bytes_full: usize,
    /// Time spent evaluating (all chunks) and tokens evaluated.
    pub eval_time: Duration,
    pub eval_tokens: usize,
}

impl PerplexityResult {
    /// Kept fraction of each level: its tokens over level 0's.
    pub fn kept_fractions(&self) -> Vec<f64> {
        let n0 = self.tokens_per_level.first().copied().unwrap_or(0).max(1) as f64;
        self.tokens_per_level
            .iter()
            .map(|&n| n as f64 / n0)
            .collect()
    }
}

/// `-log p(tok)` from one row of logits, llama-perplexity's way: the
/// maximum in f32, `expf` of each logit minus it, summed in f64.
pub fn nll_of(logits: &[f32], tok: usize) -> f64 {
    let max = logits.iter().copied().fold(logits[0], f32::max);
    let sum: f64 = logits.iter().map(|&l| f64::from((l - max).exp())).sum();
    -(f64::from(logits[tok] - max) - sum.ln())
}

/// Scores `tokens` (the whole text, tokenized with BOS where the model
/// adds it) with a session of `session` parameters over `model`; `on_chunk`
/// sees the running figure after each chunk.
pub fn perplexity(
    model: &Model,
    session: &SessionParams,
    tokens: &[u32],
    params: &PerplexityParams,
    mut on_chunk: impl FnMut(&ChunkReport),
) -> Result<PerplexityResult> {
    let n_ctx = params.n_ctx;
    if n_ctx < 4 {
        return Err(Error::Perplexity(format!(
            "a context of {n_ctx} tokens is too short to score (at least 4)"
        )));
    }
    if tokens.len() < 2 * n_ctx {
        return Err(Error::Perplexity(format!(
            "the text tokenizes to {} tokens; a context of {n_ctx} needs at least {}",
            tokens.len(),
            2 * n_ctx
        )));
    }
    let n_chunk_max = tokens.len() / n_ctx;
    let n_chunks = params.n_chunks.map_or(n_chunk_max, |n| n.min(n_chunk_max));
    if n_chunks == 0 {
        return Err(Error::Perplexity("no chunk to score (--chunks 0)".into()));
    }
    let sp = SessionParams {
        n_ctx,
        n_batch: session.n_batch.min(n_ctx),
        ..session.clone()
    };
    let mut s = Session::new(model, sp)?;
    let n_vocab = model.hparams.n_vocab;
    let bos = model.tokenizer().filter(|t| t.add_bos).and_then(|t| t.bos);
    let first = n_ctx / 2;
    let (mut nll, mut nll2, mut count) = (0.0f64, 0.0f64, 0usize);
    let mut levels: Vec<usize> = Vec::new();
    let (mut kv, mut kv_full) = (0usize, 0usize);
    let (mut eval_time, mut eval_tokens) = (Duration::ZERO, 0usize);
    let mut chunk = vec![0u32; n_ctx];
    for i in 0..n_chunks {
        chunk.copy_from_slice(&tokens[i * n_ctx..(i + 1) * n_ctx]);
        if let Some(b) = bos {
            chunk[0] = b;
        }
        s.reset();
        let t0 = Instant::now();
        let logits = s.eval(&chunk, Logits::All)?;
        eval_time += t0.elapsed();
        eval_tokens += n_ctx;
        for j in first..n_ctx - 1 {
            let row = &logits[j * n_vocab..(j + 1) * n_vocab];
            let v = nll_of(row, chunk[j + 1] as usize);
            nll += v;
            nll2 += v * v;
        }
        count += n_ctx - 1 - first;
        let st = s.stats();
        if levels.len() < st.tokens_per_level.len() {
            levels.resize(st.tokens_per_level.len(), 0);
        }
        for (a, b) in levels.iter_mut().zip(&st.tokens_per_level) {
            *a += b;
        }
        kv += st.kv_bytes;
        kv_full += st.kv_bytes_full;
        on_chunk(&ChunkReport {
            chunk: i + 1,
            n_chunks,
            ppl: (nll / count as f64).exp(),
        });
    }
    let mean = nll / count as f64;
    let var = nll2 / count as f64 - mean * mean;
    let ppl = mean.exp();
    let ppl_err = if var > 0.0 && count > 1 {
        (var / (count - 1) as f64).sqrt() * ppl
    } else {
        0.0
    };
    Ok(PerplexityResult {
        ppl,
        ppl_err,
        nll: mean,
        count,
        n_chunks,
        n_tokens: tokens.len(),
        tokens_per_level: levels,
        kv_bytes: kv / n_chunks,
        kv_bytes_full: kv_full / n_chunks,
        eval_time,
        eval_tokens,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nll_matches_a_float64_log_softmax() {
        let logits = [1.0f32, -2.0, 0.5, 3.25, 0.0];
        let m = 3.25f64;
        let z: f64 = logits.iter().map(|&l| (f64::from(l) - m).exp()).sum();
        for t in 0..logits.len() {
            let want = -(f64::from(logits[t]) - m - z.ln());
            assert!((nll_of(&logits, t) - want).abs() < 1e-6, "{t}");
        }
        // a uniform row: log(n)
        assert!((nll_of(&[0.5; 8], 3) - 8f64.ln()).abs() < 1e-12);
    }
}
