//! `subllm-convert MODEL_DIR -o out.gguf [--outtype TYPE]`

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use subllm_convert::{convert, plan::parse_outtype, Event, Options};

#[derive(Parser)]
#[command(
    name = "subllm-convert",
    version,
    about = "Convert an official SUBLLM checkpoint or a Hugging Face Llama directory to GGUF"
)]
struct Args {
    /// Directory with config.json, the weights (safetensors, sharded safetensors
    /// or a PyTorch .pt/.bin) and optionally tokenizer.json / tokenizer.model.
    model_dir: PathBuf,
    /// Output GGUF file.
    #[arg(short = 'o', long = "outfile")]
    output: PathBuf,
    /// Storage type of the weight matrices: f32, f16, bf16, q8_0, q4_0, q4_1,
    /// q5_0, q5_1, q4_k, q6_k (vectors always stay f32).
    #[arg(long, default_value = "f16")]
    outtype: String,
    /// Use this weights file instead of searching MODEL_DIR.
    #[arg(long)]
    weights: Option<PathBuf>,
    /// general.name (default: the model directory's name).
    #[arg(long)]
    name: Option<String>,
    /// No progress bar.
    #[arg(short, long)]
    quiet: bool,
}

fn main() -> ExitCode {
    let a = Args::parse();
    let outtype = match parse_outtype(&a.outtype) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let opts = Options {
        model_dir: a.model_dir,
        output: a.output.clone(),
        outtype,
        weights: a.weights,
        name: a.name,
    };
    let bar = if a.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(0)
    };
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {bytes}/{total_bytes} {binary_bytes_per_sec} {msg}")
            .expect("valid template"),
    );
    let t0 = Instant::now();
    let result = convert(&opts, &mut |e| match e {
        Event::Start { bytes, .. } => bar.set_length(bytes),
        Event::Tensor { name, ty, bytes } => {
            bar.set_message(format!("{name} ({ty})"));
            bar.inc(bytes);
        }
    });
    bar.finish_and_clear();
    match result {
        Ok(s) => {
            let secs = t0.elapsed().as_secs_f64();
            println!(
                "wrote {} ({}): {} parameters, {} bytes of tensors ({:.1} MiB), {:.1} s",
                a.output.display(),
                s.architecture,
                s.parameters,
                s.bytes,
                s.bytes as f64 / (1 << 20) as f64,
                secs
            );
            for (ty, n, p) in s.per_type {
                println!("  {ty:<5} {n:>5} tensors {p:>14} parameters");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
