//! subllm-cli: the command-line shell over the subllm library.
//!
//! `subllm-cli inspect FILE` shows a GGUF file's metadata and tensor table;
//! `--tensor NAME --out t.npy` writes one tensor dequantized to f32.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use subllm::gguf::{GgufFile, MetaValue};

#[derive(Parser)]
#[command(
    name = "subllm-cli",
    version,
    about = "Run and inspect SUBLLM and Llama GGUF models"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show a GGUF file's metadata, tensor table and totals.
    Inspect {
        /// The GGUF file.
        file: PathBuf,
        /// Print every element of long metadata arrays.
        #[arg(long)]
        full: bool,
        /// Write this tensor, dequantized to f32, to --out as .npy.
        #[arg(long, requires = "out")]
        tensor: Option<String>,
        /// Where --tensor is written.
        #[arg(long, requires = "tensor")]
        out: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Inspect {
            file,
            full,
            tensor,
            out,
        } => inspect(&file, full, tensor.as_deref().zip(out.as_deref())),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn inspect(
    path: &std::path::Path,
    full: bool,
    dump: Option<(&str, &std::path::Path)>,
) -> Result<()> {
    let f = GgufFile::open(path)?;
    if let Some((name, out)) = dump {
        let info = f
            .tensor_info(name)
            .ok_or_else(|| subllm::gguf::GgufError::MissingTensor(name.into()))?;
        let data = f.dequantize(name)?;
        // numpy order is the reverse of ggml's (row length last)
        let shape: Vec<usize> = info.dims.iter().rev().map(|&d| d as usize).collect();
        let w = std::io::BufWriter::new(std::fs::File::create(out)?);
        subllm::npy::write_f32(w, &shape, &data)?;
        println!(
            "wrote {name} ({} {:?}) to {}",
            info.ty,
            shape,
            out.display()
        );
        return Ok(());
    }

    println!(
        "{}: GGUF v{}, {} bytes",
        path.display(),
        f.version,
        f.file_len()
    );
    println!(
        "alignment {}, data section at byte {}",
        f.alignment, f.data_offset
    );
    println!("\nmetadata ({} keys):", f.metadata().len());
    for (k, v) in f.metadata() {
        let shown = match v {
            MetaValue::Array(a) if full => a.summary(usize::MAX),
            MetaValue::String(s) if !full && s.len() > 120 => {
                let cut = (0..=120)
                    .rev()
                    .find(|&i| s.is_char_boundary(i))
                    .unwrap_or(0);
                format!("{:?}... ({} bytes)", &s[..cut], s.len())
            }
            v => v.to_string(),
        };
        println!("  {k:<40} {:<7} {shown}", v.value_type().name());
    }
    println!("\ntensors ({}):", f.tensors().len());
    println!(
        "  {:<40} {:<7} {:<24} {:>12} {:>12}",
        "name", "type", "shape", "bytes", "offset"
    );
    let (mut params, mut bytes) = (0u64, 0u64);
    let mut by_type: Vec<(subllm::GgmlType, u64, u64)> = Vec::new();
    for t in f.tensors() {
        let shape = format!("{:?}", t.dims);
        println!(
            "  {:<40} {:<7} {:<24} {:>12} {:>12}",
            t.name,
            t.ty.name(),
            shape,
            t.size,
            t.offset
        );
        params += t.n_elements();
        bytes += t.size;
        match by_type.iter_mut().find(|e| e.0 == t.ty) {
            Some(e) => {
                e.1 += 1;
                e.2 += t.n_elements();
            }
            None => by_type.push((t.ty, 1, t.n_elements())),
        }
    }
    println!(
        "\ntotal: {params} parameters ({:.2} M), {bytes} bytes of tensor data ({:.2} MiB)",
        params as f64 / 1e6,
        bytes as f64 / (1 << 20) as f64
    );
    for (ty, n, p) in by_type {
        println!("  {ty:<7} {n:>5} tensors {p:>14} parameters");
    }
    if params > 0 {
        println!(
            "  {:.3} bits per parameter",
            bytes as f64 * 8.0 / params as f64
        );
    }
    Ok(())
}
