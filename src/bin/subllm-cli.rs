//! subllm-cli: the command-line shell over the subllm library.
//!
//! - `subllm-cli -m FILE -p TEXT [-n N] [--temp T] ...` generates text;
//!   with `-i` or without a prompt, an interactive REPL.
//! - `subllm-cli -m FILE --tokens 1,5,9 --logits-out out.npy` evaluates
//!   exactly those ids (no BOS added) in one call and writes the logits of
//!   every position as float32 [n_tokens, n_vocab].
//! - `subllm-cli inspect FILE` shows a GGUF file's metadata and tensors.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use std::io::Write;

use clap::{Args, Parser, Subcommand};
use subllm::chat::{self, Message};
use subllm::generate::{generate, GenerateParams};
use subllm::gguf::{GgufFile, MetaValue};
use subllm::sampler::SamplerParams;
use subllm::{KvType, Logits, Model, Session, SessionParams};

#[derive(Parser)]
#[command(
    name = "subllm-cli",
    version,
    about = "Run and inspect SUBLLM and Llama GGUF models"
)]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
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

#[derive(Args)]
struct RunArgs {
    /// The model (GGUF).
    #[arg(short = 'm', long = "model")]
    model: Option<PathBuf>,
    /// The prompt (without one, or with -i: an interactive session).
    #[arg(short = 'p', long = "prompt")]
    prompt: Option<String>,
    /// Interactive session (REPL); with a chat template, a conversation.
    #[arg(short = 'i', long)]
    interactive: bool,
    /// Wrap the prompt in the model's chat template as a user message.
    #[arg(long)]
    chat: bool,
    /// Chat template: the model's (default) or "chatml".
    #[arg(long = "chat-template")]
    chat_template: Option<String>,
    /// System message for --chat and interactive conversations.
    #[arg(long = "system")]
    system: Option<String>,
    /// Tokens to generate.
    #[arg(short = 'n', long = "n-predict", default_value_t = 256)]
    n_predict: usize,
    /// Temperature (0: greedy).
    #[arg(long, default_value_t = 0.8)]
    temp: f32,
    #[arg(long = "top-k", default_value_t = 40)]
    top_k: usize,
    #[arg(long = "top-p", default_value_t = 0.95)]
    top_p: f32,
    #[arg(long = "min-p", default_value_t = 0.05)]
    min_p: f32,
    #[arg(long = "repeat-penalty", default_value_t = 1.0)]
    repeat_penalty: f32,
    #[arg(long = "repeat-last-n", default_value_t = 64)]
    repeat_last_n: usize,
    #[arg(long = "presence-penalty", default_value_t = 0.0)]
    presence_penalty: f32,
    #[arg(long = "frequency-penalty", default_value_t = 0.0)]
    frequency_penalty: f32,
    /// Random seed (same seed, same output).
    #[arg(short = 's', long, default_value_t = 0x5eed)]
    seed: u64,
    /// Stop when the output contains this (repeatable).
    #[arg(long = "stop")]
    stop: Vec<String>,
    /// Evaluate exactly these token ids (comma-separated, no BOS added).
    #[arg(long, value_delimiter = ',', requires = "logits_out")]
    tokens: Option<Vec<u32>>,
    /// Write the logits of every position of --tokens here (.npy, float32 [n_tokens, n_vocab]).
    #[arg(long, requires = "tokens")]
    logits_out: Option<PathBuf>,
    /// Use the official code's level >= 2 positions in the first prefill.
    #[arg(long)]
    upstream_nested_positions: bool,
    /// Context size (0: the model's).
    #[arg(short = 'c', long = "ctx-size", default_value_t = 4096)]
    ctx_size: usize,
    /// Prompt tokens per batch.
    #[arg(short = 'b', long = "batch-size", default_value_t = 512)]
    batch_size: usize,
    /// KV cache type: f16, f32 or q8_0.
    #[arg(long = "cache-type", default_value = "f16")]
    cache_type: String,
    /// Threads (0: all cores).
    #[arg(short = 't', long, default_value_t = 0)]
    threads: usize,
    /// Print per-level statistics at the end.
    #[arg(long)]
    stats: bool,
    /// Print the prompt's tokens before generating.
    #[arg(long = "verbose-prompt")]
    verbose_prompt: bool,
}

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Inspect {
            file,
            full,
            tensor,
            out,
        }) => inspect(&file, full, tensor.as_deref().zip(out.as_deref())),
        None => run(&cli.run),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn session_params(a: &RunArgs) -> Result<SessionParams> {
    Ok(SessionParams {
        n_ctx: a.ctx_size,
        n_batch: a.batch_size,
        kv_type: KvType::parse(&a.cache_type)
            .ok_or_else(|| format!("unknown cache type {:?}", a.cache_type))?,
        upstream_nested_positions: a.upstream_nested_positions,
        n_threads: a.threads,
    })
}

fn run(a: &RunArgs) -> Result<()> {
    let path = a.model.as_ref().ok_or("no model given (-m FILE)")?;
    let model = Model::load(path)?;
    let mut params = session_params(a)?;
    if let (Some(tokens), Some(out)) = (&a.tokens, &a.logits_out) {
        // one call: the whole list is a single prefill
        params.n_ctx = params.n_ctx.max(tokens.len());
        params.n_batch = params.n_batch.max(tokens.len());
        let mut s = Session::new(&model, params)?;
        let logits = s.eval(tokens, Logits::All)?;
        let w = std::io::BufWriter::new(std::fs::File::create(out)?);
        subllm::npy::write_f32(w, &[tokens.len(), model.hparams.n_vocab], &logits)?;
        if a.stats {
            print_stats(&s);
        }
        return Ok(());
    }
    let tok = model
        .tokenizer()
        .ok_or("this model carries no tokenizer: use --tokens")?;
    let gen = GenerateParams {
        n_predict: a.n_predict,
        sampler: SamplerParams {
            temperature: a.temp,
            top_k: a.top_k,
            top_p: a.top_p,
            min_p: a.min_p,
            repeat_penalty: a.repeat_penalty,
            presence_penalty: a.presence_penalty,
            frequency_penalty: a.frequency_penalty,
            penalty_last_n: a.repeat_last_n,
            seed: a.seed,
        },
        stop: a.stop.clone(),
    };
    let mut session = Session::new(&model, params)?;
    let template = match a.chat_template.as_deref() {
        Some("chatml") => chat::CHATML.to_string(),
        Some(other) => {
            return Err(format!(
                "unknown chat template {other:?} (chatml, or leave it out for the model's)"
            )
            .into())
        }
        None => model.chat_template().unwrap_or(chat::CHATML).to_string(),
    };
    let piece = |id: Option<u32>| id.map(|t| tok.decode(&[t], true)).unwrap_or_default();
    let (bos, eos) = (piece(tok.bos), piece(tok.eos));
    let render = |msgs: &[Message]| chat::apply(&template, msgs, &bos, &eos, true);
    let mut out = std::io::stdout();
    let mut print = |s: &str| {
        let _ = out.write_all(s.as_bytes());
        let _ = out.flush();
    };

    if let (Some(prompt), false) = (&a.prompt, a.interactive) {
        let (text, special) = if a.chat {
            let mut msgs = Vec::new();
            if let Some(s) = &a.system {
                msgs.push(Message::new("system", s));
            }
            msgs.push(Message::new("user", prompt));
            (render(&msgs)?, true)
        } else {
            (prompt.clone(), false)
        };
        // a template that writes BOS itself must not get a second one
        let add_bos = !(a.chat && !bos.is_empty() && text.starts_with(&bos));
        let ids = tok.encode(&text, add_bos, special)?;
        if a.verbose_prompt {
            for &t in &ids {
                eprintln!("{t:>8} -> {:?}", tok.decode(&[t], true));
            }
        }
        if !a.chat {
            print(prompt);
        }
        generate(&mut session, Some(tok), &ids, &gen, &mut print)?;
        println!();
        if a.stats {
            print_stats(&session);
        }
        return Ok(());
    }
    repl(&mut session, tok, &gen, a, &render)
}

/// The interactive loop: each line is a user turn; the conversation is
/// re-rendered with the chat template and only the new tokens are evaluated.
fn repl(
    session: &mut Session,
    tok: &subllm::tokenizer::Tokenizer,
    gen: &GenerateParams,
    a: &RunArgs,
    render: &dyn Fn(&[Message]) -> std::result::Result<String, subllm::Error>,
) -> Result<()> {
    let mut rl = rustyline::DefaultEditor::new()?;
    let mut msgs: Vec<Message> = a.system.iter().map(|s| Message::new("system", s)).collect();
    let mut history: Vec<u32> = Vec::new();
    eprintln!("subllm: type a message, Ctrl-D to quit, /reset to start over");
    loop {
        let line = match rl.readline("> ") {
            Ok(l) => l,
            Err(rustyline::error::ReadlineError::Interrupted) => continue,
            Err(rustyline::error::ReadlineError::Eof) => break,
            Err(e) => return Err(e.into()),
        };
        if line.trim() == "/reset" {
            msgs.truncate(a.system.is_some() as usize);
            history.clear();
            session.reset();
            continue;
        }
        let _ = rl.add_history_entry(line.as_str());
        msgs.push(Message::new("user", &line));
        let ids = tok.encode(&render(&msgs)?, true, true)?;
        // reuse the cached prefix the new rendering shares with the old one
        let common = history
            .iter()
            .zip(&ids)
            .take_while(|(x, y)| x == y)
            .count()
            .min(ids.len() - 1);
        session.truncate(common);
        let mut out = std::io::stdout();
        let g = generate(session, Some(tok), &ids[common..], gen, &mut |s| {
            let _ = out.write_all(s.as_bytes());
            let _ = out.flush();
        });
        println!();
        let g = match g {
            Ok(g) => g,
            Err(e) => {
                eprintln!("error: {e}");
                session.reset();
                history.clear();
                msgs.truncate(a.system.is_some() as usize);
                continue;
            }
        };
        msgs.push(Message::new("assistant", &g.text));
        history = ids;
        history.extend(&g.tokens);
        // the sampled tokens after the last eval are not in the cache yet
        session.truncate(session.n_past().min(history.len()));
        history.truncate(session.n_past());
    }
    if a.stats {
        print_stats(session);
    }
    Ok(())
}

fn print_stats(s: &Session) {
    let st = s.stats();
    eprintln!(
        "tokens: {}; per level: {:?}; kept per region: {:?}",
        st.n_past, st.tokens_per_level, st.kept_per_region
    );
    eprintln!(
        "KV cache: {} bytes ({:.1}% of a full cache of {} bytes)",
        st.kv_bytes,
        100.0 * st.kv_bytes as f64 / st.kv_bytes_full.max(1) as f64,
        st.kv_bytes_full
    );
    if st.prefill_tokens > 0 {
        eprintln!(
            "prefill: {} tokens in {:.3} s ({:.1} tok/s)",
            st.prefill_tokens,
            st.prefill_time.as_secs_f64(),
            st.prefill_tokens as f64 / st.prefill_time.as_secs_f64()
        );
    }
    if st.decode_tokens > 0 {
        eprintln!(
            "decode: {} tokens in {:.3} s ({:.1} tok/s)",
            st.decode_tokens,
            st.decode_time.as_secs_f64(),
            st.decode_tokens as f64 / st.decode_time.as_secs_f64()
        );
    }
}

fn inspect(path: &Path, full: bool, dump: Option<(&str, &Path)>) -> Result<()> {
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
