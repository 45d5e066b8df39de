//! subllm-perplexity: perplexity of a model over a text file, computed as
//! llama.cpp's `llama-perplexity` computes it (see `subllm::perplexity`),
//! with its flags and output lines:
//!
//!   subllm-perplexity -m model.gguf -f text.txt [-c 512] [-b N] [--chunks N]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use subllm::perplexity::{perplexity, PerplexityParams};
use subllm::{KvType, Model, SessionParams};

#[derive(Parser, Debug)]
#[command(
    name = "subllm-perplexity",
    version,
    about = "Perplexity over a text file, computed as llama-perplexity does"
)]
struct Args {
    /// Model file (GGUF).
    #[arg(short = 'm', long)]
    model: PathBuf,
    /// Text file to score.
    #[arg(short = 'f', long = "file")]
    file: PathBuf,
    /// Tokens per chunk; the second half of each chunk is scored.
    #[arg(short = 'c', long = "ctx-size", default_value_t = 512)]
    ctx_size: usize,
    /// Tokens per graph run (at most the chunk).
    #[arg(short = 'b', long = "batch-size", default_value_t = 2048)]
    batch_size: usize,
    /// Chunks to score (-1: all).
    #[arg(long = "chunks", default_value_t = -1, allow_negative_numbers = true)]
    chunks: i64,
    /// Threads (0: all cores).
    #[arg(short = 't', long, default_value_t = 0)]
    threads: usize,
    /// KV cache type: f16, f32 or q8_0.
    #[arg(long = "cache-type", visible_alias = "ctk", default_value = "f16")]
    cache_type: String,
    #[command(flatten)]
    subsample: subllm::cli_args::SubsampleArgs,
}

/// Largest text file read.
const MAX_TEXT: u64 = 256 << 20;
/// Largest context accepted (a chunk's logits are held whole).
const MAX_CTX: usize = 1 << 17;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn read_text(path: &Path) -> Result<String> {
    let b = subllm::files::read_bounded(path, MAX_TEXT)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    String::from_utf8(b).map_err(|_| format!("{}: not UTF-8 text", path.display()).into())
}

fn run(a: &Args) -> Result<()> {
    if a.ctx_size == 0 || a.ctx_size > MAX_CTX {
        return Err(format!("-c must be in 1..={MAX_CTX}, got {}", a.ctx_size).into());
    }
    if a.batch_size == 0 {
        return Err("-b must be at least 1".into());
    }
    let n_chunks = match a.chunks {
        -1 => None,
        n if n > 0 => Some(n as usize),
        n => return Err(format!("--chunks must be -1 (all) or at least 1, got {n}").into()),
    };
    let subsample_threshold = a.subsample.threshold()?;
    let kv_type = KvType::parse(&a.cache_type)
        .ok_or_else(|| format!("unknown cache type {:?}", a.cache_type))?;
    let eff = subllm::session::effective_threads(a.threads);
    if a.threads > eff {
        eprintln!(
            "note: -t {} clamped to {eff}, the hardware threads of this machine",
            a.threads
        );
    }
    let model = Model::load(&a.model).map_err(|e| format!("{}: {e}", a.model.display()))?;
    let tok = model
        .tokenizer()
        .ok_or_else(|| format!("{}: the file has no tokenizer", a.model.display()))?;
    let text = read_text(&a.file)?;
    let t0 = std::time::Instant::now();
    let tokens = tok.encode(&text, true, false)?;
    eprintln!(
        "perplexity: tokenizing the input: {} tokens in {:.0} ms",
        tokens.len(),
        t0.elapsed().as_secs_f64() * 1e3
    );
    let sp = SessionParams {
        n_batch: a.batch_size,
        kv_type,
        n_threads: a.threads,
        subsample_threshold,
        ..SessionParams::default()
    };
    let pp = PerplexityParams {
        n_ctx: a.ctx_size,
        n_chunks,
    };
    let n_chunk_max = tokens.len() / a.ctx_size;
    eprintln!(
        "perplexity: calculating perplexity over {} chunks, n_ctx={}, batch_size={}",
        n_chunks.map_or(n_chunk_max, |n| n.min(n_chunk_max)),
        a.ctx_size,
        a.batch_size.min(a.ctx_size)
    );
    let mut out = std::io::stdout().lock();
    let mut write_err: Option<std::io::Error> = None;
    let r = perplexity(&model, &sp, &tokens, &pp, |c| {
        if write_err.is_none() {
            if let Err(e) = write!(out, "[{}]{:.4},", c.chunk, c.ppl).and_then(|_| out.flush()) {
                write_err = Some(e);
            }
        }
    })?;
    if let Some(e) = write_err {
        return Err(e.into());
    }
    writeln!(out)?;
    writeln!(
        out,
        "Final estimate: PPL = {:.4} +/- {:.5}",
        r.ppl, r.ppl_err
    )?;
    let secs = r.eval_time.as_secs_f64();
    eprintln!(
        "perplexity: {} tokens scored in {} chunks; {} tokens evaluated in {:.2} s ({:.1} tokens per second)",
        r.count,
        r.n_chunks,
        r.eval_tokens,
        secs,
        r.eval_tokens as f64 / secs.max(1e-9)
    );
    if model.arch == "subllm" {
        let kept: Vec<String> = r
            .kept_fractions()
            .iter()
            .map(|f| format!("{:.1}", 100.0 * f))
            .collect();
        writeln!(
            out,
            "kept per level = {} %; KV cache per chunk {:.2} MiB, {:.3} of a full cache (subsample threshold {})",
            kept.join("/"),
            r.kv_bytes as f64 / (1u64 << 20) as f64,
            r.kv_bytes as f64 / r.kv_bytes_full.max(1) as f64,
            subsample_threshold
        )?;
    }
    Ok(())
}

fn main() -> ExitCode {
    let a = Args::parse();
    match run(&a) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let broken = e
                .downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe);
            if broken {
                // the reader went away (`| head`): the status SIGPIPE gives
                return ExitCode::from(141);
            }
            eprintln!(
                "error: {}",
                e.to_string().replace(|c: char| c.is_control(), " ")
            );
            ExitCode::FAILURE
        }
    }
}
