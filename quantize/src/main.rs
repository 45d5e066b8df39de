//! `subllm-quantize IN.gguf OUT.gguf TYPE [THREADS]`: llama-quantize's
//! command line for the types subllm writes.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use subllm_quantize::{parse_ftype, parse_tensor_type, quantize, Event, Imatrix, Options};

#[derive(Parser)]
#[command(
    name = "subllm-quantize",
    version,
    about = "Re-quantize a GGUF file (llama or subllm) with llama.cpp's per-tensor mixtures",
    after_help = "TYPE: Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K_S, Q4_K_M (or Q4_K), Q5_K_S, Q5_K_M (or Q5_K), Q6_K, F16, BF16, F32, or llama.cpp's file type number"
)]
struct Args {
    /// Input GGUF file
    input: PathBuf,
    /// Output GGUF file (written atomically; an existing regular file is replaced)
    output: PathBuf,
    /// Output type
    #[arg(value_name = "TYPE")]
    ftype: String,
    /// Worker threads (default: one per hardware thread)
    threads: Option<usize>,
    /// Quantize tensors that are already quantized (precision is lost twice)
    #[arg(long)]
    allow_requantize: bool,
    /// Every quantizable tensor gets TYPE's base type: no per-tensor mixture
    #[arg(long)]
    pure: bool,
    /// Copy output.weight as it is
    #[arg(long)]
    leave_output_tensor: bool,
    /// Type of output.weight
    #[arg(long, value_name = "T")]
    output_tensor_type: Option<String>,
    /// Type of token_embd.weight
    #[arg(long, value_name = "T")]
    token_embedding_type: Option<String>,
    /// An importance matrix (llama.cpp's imatrix GGUF, from llama-imatrix):
    /// Q4_0, Q4_1, Q5_0, Q5_1 and the k-quants minimise errors weighted by it
    #[arg(long, value_name = "FILE")]
    imatrix: Option<PathBuf>,
    /// No progress bar
    #[arg(short, long)]
    quiet: bool,
}

fn run(a: Args) -> Result<(), String> {
    let e = |x: subllm_quantize::QuantizeError| x.to_string();
    let mut opts = Options::new(parse_ftype(&a.ftype).map_err(e)?);
    opts.allow_requantize = a.allow_requantize;
    opts.pure = a.pure;
    opts.leave_output_tensor = a.leave_output_tensor;
    opts.output_tensor_type = a
        .output_tensor_type
        .as_deref()
        .map(parse_tensor_type)
        .transpose()
        .map_err(e)?;
    opts.token_embedding_type = a
        .token_embedding_type
        .as_deref()
        .map(parse_tensor_type)
        .transpose()
        .map_err(e)?;
    opts.threads = a.threads.unwrap_or(0);
    if let Some(path) = &a.imatrix {
        let im = Imatrix::load(path).map_err(e)?;
        eprintln!(
            "importance matrix: {} entries from {} ({} chunks{})",
            im.entries.len(),
            path.display(),
            im.chunk_count,
            im.datasets
                .first()
                .map_or(String::new(), |d| format!(", dataset {d}"))
        );
        opts.imatrix = Some(std::sync::Arc::new(im));
    }

    let t0 = std::time::Instant::now();
    let show = !a.quiet && std::io::stderr().is_terminal();
    let mut bar: Option<ProgressBar> = None;
    let summary = quantize(&a.input, &a.output, &opts, &mut |ev| match ev {
        Event::Start { tensors } if show => {
            let b = ProgressBar::new(tensors as u64);
            b.set_style(
                ProgressStyle::with_template("{bar:40} {pos}/{len} {msg}")
                    .expect("a valid template"),
            );
            bar = Some(b);
        }
        Event::Tensor { planned, .. } => {
            if let Some(b) = &bar {
                b.set_message(format!("{} -> {}", planned.name, planned.to));
                b.inc(1);
            }
        }
        _ => {}
    })
    .map_err(e)?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    eprintln!(
        "wrote {} ({}): {:.2} MiB -> {:.2} MiB ({:.2} bits per parameter), {:.1} s",
        a.output.display(),
        opts.ftype.name(),
        mib(summary.bytes_in),
        mib(summary.bytes_out),
        summary.bytes_out as f64 * 8.0 / summary.parameters.max(1) as f64,
        t0.elapsed().as_secs_f64()
    );
    for (ty, n, p) in &summary.per_type {
        eprintln!("  {:<6} {n:>4} tensors {p:>14} parameters", ty.name());
    }
    if opts.imatrix.is_some() {
        eprintln!(
            "  {} tensors quantized with importance weights",
            summary.weighted
        );
        for name in &summary.no_weights {
            eprintln!("  no importance weights for {name}: quantized without");
        }
    }
    if summary.fallbacks > 0 {
        eprintln!(
            "  {} tensors fell back to another type (rows not a whole number of blocks)",
            summary.fallbacks
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(m) => {
            eprintln!("error: {m}");
            ExitCode::FAILURE
        }
    }
}
