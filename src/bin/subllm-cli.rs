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
use std::time::{Duration, Instant};

use std::io::Write;

use clap::{Args, Parser, Subcommand};
use subllm::chat::{self, Message};
use subllm::generate::{generate, GenerateParams, StopReason};
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
    #[arg(short = 'p', long = "prompt", allow_hyphen_values = true)]
    prompt: Option<String>,
    /// Read the prompt from this file.
    #[arg(short = 'f', long = "file", conflicts_with = "prompt")]
    file: Option<PathBuf>,
    /// Process escapes in the prompt: \n, \r, \t, \\, \", \', \xHH.
    #[arg(short = 'e', long = "escape")]
    escape: bool,
    /// Split special tokens written in the prompt (<|im_start|>, ...) into
    /// plain text instead of parsing them as special tokens.
    #[arg(long = "no-parse-special")]
    no_parse_special: bool,
    /// Do not print the prompt before the answer.
    #[arg(long = "no-display-prompt")]
    no_display_prompt: bool,
    /// Interactive session (REPL); with a chat template, a conversation.
    /// With -p, the prompt is the first turn.
    #[arg(short = 'i', long)]
    interactive: bool,
    /// Wrap the prompt in the model's chat template as a user message.
    #[arg(long)]
    chat: bool,
    /// Chat template: the model's (default) or "chatml".
    #[arg(long = "chat-template")]
    chat_template: Option<String>,
    /// System message for --chat and interactive conversations (-sys).
    #[arg(long = "system")]
    system: Option<String>,
    /// Tokens to generate (-1: until generation ends or the context is full).
    #[arg(
        short = 'n',
        long = "n-predict",
        default_value_t = 256,
        allow_negative_numbers = true
    )]
    n_predict: i64,
    /// Keep generating past end-of-generation tokens (they are never sampled).
    #[arg(long = "ignore-eos")]
    ignore_eos: bool,
    /// When the context fills, forget half of what follows the first --keep
    /// tokens and go on (the rest is evaluated again at its new positions),
    /// instead of stopping.
    #[arg(long = "context-shift")]
    context_shift: bool,
    /// Tokens of the prompt a context shift keeps (-1: the whole prompt; BOS
    /// is kept besides).
    #[arg(long = "keep", default_value_t = 0, allow_negative_numbers = true)]
    keep: i64,
    /// Temperature (0: greedy).
    #[arg(long, default_value_t = 0.8, allow_negative_numbers = true)]
    temp: f32,
    #[arg(long = "top-k", default_value_t = 40)]
    top_k: usize,
    #[arg(long = "top-p", default_value_t = 0.95, allow_negative_numbers = true)]
    top_p: f32,
    #[arg(long = "min-p", default_value_t = 0.05, allow_negative_numbers = true)]
    min_p: f32,
    #[arg(
        long = "repeat-penalty",
        default_value_t = 1.0,
        allow_negative_numbers = true
    )]
    repeat_penalty: f32,
    #[arg(long = "repeat-last-n", default_value_t = 64)]
    repeat_last_n: usize,
    #[arg(
        long = "presence-penalty",
        default_value_t = 0.0,
        allow_negative_numbers = true
    )]
    presence_penalty: f32,
    #[arg(
        long = "frequency-penalty",
        default_value_t = 0.0,
        allow_negative_numbers = true
    )]
    frequency_penalty: f32,
    /// Random seed (-1: a random one, printed; the same seed gives the same output).
    #[arg(short = 's', long, default_value_t = -1, allow_negative_numbers = true)]
    seed: i64,
    /// Stop when the output contains this (repeatable; also --stop).
    #[arg(short = 'r', long = "reverse-prompt", visible_alias = "stop")]
    stop: Vec<String>,
    /// Layers to offload to a GPU (-ngl): accepted as llama-cli does; this
    /// build has no GPU backend, so it has no effect.
    #[arg(long = "n-gpu-layers", allow_negative_numbers = true)]
    n_gpu_layers: Option<i64>,
    /// Evaluate exactly these token ids (comma-separated, no BOS added).
    #[arg(long, value_delimiter = ',', requires = "logits_out")]
    tokens: Option<Vec<u32>>,
    /// Write the logits of every position of --tokens here (.npy, float32 [n_tokens, n_vocab]).
    #[arg(long, requires = "tokens")]
    logits_out: Option<PathBuf>,
    /// Use the official code's level >= 2 positions in the first prefill.
    #[arg(long)]
    upstream_nested_positions: bool,
    #[command(flatten)]
    subsample: subllm::cli_args::SubsampleArgs,
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

/// llama-cli's multi-letter single-dash spellings, as our long flags
/// (clap would read `-ngl 99` as `-n gl`).
fn normalize_args(args: impl Iterator<Item = String>) -> Vec<String> {
    args.map(|a| match a.as_str() {
        "-ngl" => "--n-gpu-layers".into(),
        "-sys" => "--system".into(),
        "-cnv" => "--interactive".into(),
        _ => a,
    })
    .collect()
}

/// llama.cpp's prompt escapes: \n \r \t \\ \" \' and \xHH (a byte).
fn process_escapes(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' || i + 1 == b.len() {
            out.push(b[i]);
            i += 1;
            continue;
        }
        let c = b[i + 1];
        i += 2;
        match c {
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'\\' | b'"' | b'\'' => out.push(c),
            b'x' => {
                let hex: Vec<u8> = b[i..]
                    .iter()
                    .take(2)
                    .take_while(|h| h.is_ascii_hexdigit())
                    .copied()
                    .collect();
                match u8::from_str_radix(std::str::from_utf8(&hex).unwrap_or(""), 16) {
                    Ok(v) => {
                        out.push(v);
                        i += hex.len();
                    }
                    Err(_) => out.extend_from_slice(b"\\x"),
                }
            }
            _ => out.extend_from_slice(&[b'\\', c]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn main() -> ExitCode {
    let cli = Cli::parse_from(normalize_args(std::env::args()));
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
        // the reader went away (`| head`): stop quietly, with the status a
        // process killed by SIGPIPE reports
        Err(e) if is_broken_pipe(e.as_ref()) => ExitCode::from(141),
        Err(e) => {
            eprintln!("error: {}", escape_controls(&e.to_string()));
            ExitCode::FAILURE
        }
    }
}

/// Whether `e` (or an error it wraps) is a write to a closed pipe.
fn is_broken_pipe(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(x) = cur {
        let io = x.downcast_ref::<std::io::Error>().or_else(|| {
            match x.downcast_ref::<subllm::Error>() {
                Some(subllm::Error::Io(io)) => Some(io),
                _ => None,
            }
        });
        if io.is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe) {
            return true;
        }
        cur = x.source();
    }
    false
}

/// `s` with control characters (terminal escapes, newlines, NUL) written
/// as `\u{..}` escapes: names and keys from a model file are hostile and
/// must not reach the terminal raw.
fn escape_controls(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return s.into();
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect::<String>()
        .into()
}

/// Writes `out` through `body` (`subllm::outfile`: never through a
/// symlink or over a device; a temporary renamed only when complete).
fn write_output(
    out: &Path,
    body: impl FnOnce(&mut std::io::BufWriter<std::fs::File>) -> std::io::Result<()>,
) -> Result<()> {
    subllm::outfile::write_atomically::<std::io::Error>(out, |f| {
        let mut w = std::io::BufWriter::new(f);
        body(&mut w)?;
        w.into_inner().map_err(|e| e.into_error())
    })
    .map_err(|e| {
        let m = e.to_string();
        if m.contains(&out.display().to_string()) {
            m.into()
        } else {
            format!("{}: {m}", out.display()).into()
        }
    })
}

fn session_params(a: &RunArgs) -> Result<SessionParams> {
    let eff = subllm::session::effective_threads(a.threads);
    if a.threads > eff {
        eprintln!(
            "note: -t {} clamped to {eff}, the hardware threads of this machine",
            a.threads
        );
    }
    Ok(SessionParams {
        n_ctx: a.ctx_size,
        n_batch: a.batch_size,
        kv_type: KvType::parse(&a.cache_type)
            .ok_or_else(|| format!("unknown cache type {:?}", a.cache_type))?,
        upstream_nested_positions: a.upstream_nested_positions,
        n_threads: a.threads,
        subsample_threshold: a.subsample.threshold()?,
    })
}

/// A seed nobody chose: the clock and the process id through SplitMix64.
fn random_seed() -> u64 {
    // 32 bits, so that the printed seed is short enough to retype
    subllm::rng::entropy_seed() >> 32
}

/// The generation parameters for a prompt of `ids`: with --context-shift,
/// the tokens a shift keeps (--keep, plus BOS where the prompt starts with
/// it; -1: the whole prompt).
fn with_shift(
    gen: &GenerateParams,
    a: &RunArgs,
    tok: &subllm::tokenizer::Tokenizer,
    ids: &[u32],
) -> GenerateParams {
    let mut g = gen.clone();
    if a.context_shift {
        let bos = usize::from(tok.bos.is_some() && ids.first() == tok.bos.as_ref());
        g.context_shift = Some(if a.keep < 0 {
            ids.len()
        } else {
            (a.keep as usize).saturating_add(bos).min(ids.len())
        });
    }
    g
}

/// How many leading tokens `a` and `b` share.
fn prefix_len(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// Largest prompt file read (`-f`).
const MAX_PROMPT_FILE: u64 = 64 << 20;

fn read_prompt_file(path: &Path) -> Result<String> {
    let b = subllm::files::read_bounded(path, MAX_PROMPT_FILE)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    String::from_utf8(b).map_err(|_| format!("{}: not UTF-8 text", path.display()).into())
}

fn run(a: &RunArgs) -> Result<()> {
    let t_start = Instant::now();
    let path = a.model.as_ref().ok_or("no model given (-m FILE)")?;
    if a.n_predict < -1 {
        return Err(format!(
            "-n must be -1 (no limit) or a number of tokens, got {}",
            a.n_predict
        )
        .into());
    }
    if a.keep < -1 {
        return Err(format!(
            "--keep must be -1 (the whole prompt) or >= 0, got {}",
            a.keep
        )
        .into());
    }
    if a.seed < -1 {
        return Err(format!("--seed must be -1 (random) or >= 0, got {}", a.seed).into());
    }
    let seed = if a.seed == -1 {
        random_seed()
    } else {
        a.seed as u64
    };
    let gen = GenerateParams {
        n_predict: if a.n_predict < 0 {
            usize::MAX
        } else {
            a.n_predict as usize
        },
        sampler: SamplerParams {
            temperature: a.temp,
            top_k: a.top_k,
            top_p: a.top_p,
            min_p: a.min_p,
            repeat_penalty: a.repeat_penalty,
            presence_penalty: a.presence_penalty,
            frequency_penalty: a.frequency_penalty,
            penalty_last_n: a.repeat_last_n,
            seed,
        },
        stop: a.stop.clone(),
        // the keep count is resolved against the prompt below
        context_shift: None,
        ignore_eos: a.ignore_eos,
    };
    gen.sampler.validate()?;
    if let Some(n) = a.n_gpu_layers.filter(|&n| n != 0) {
        eprintln!("note: -ngl {n} has no effect: this build computes on the CPU only");
    }
    let mut params = session_params(a)?;
    let prompt = match (&a.prompt, &a.file) {
        (Some(p), _) => Some(p.clone()),
        (None, Some(f)) => Some(read_prompt_file(f)?),
        (None, None) => None,
    };
    let prompt = prompt.map(|p| if a.escape { process_escapes(&p) } else { p });
    let model = Model::load(path)?;
    let load_time = t_start.elapsed();
    if let (Some(tokens), Some(out)) = (&a.tokens, &a.logits_out) {
        // one call: the whole list is a single prefill
        params.n_ctx = params.n_ctx.max(tokens.len());
        params.n_batch = params.n_batch.max(tokens.len());
        let mut s = Session::new(&model, params)?;
        let logits = s.eval(tokens, Logits::All)?;
        write_output(out, |w| {
            subllm::npy::write_f32(w, &[tokens.len(), model.hparams.n_vocab], &logits)
        })?;
        if a.stats {
            print_stats(&s);
        }
        return Ok(());
    }
    let tok = model
        .tokenizer()
        .ok_or("this model carries no tokenizer: give token ids with --tokens")?;
    let say_seed = || {
        if a.temp > 0.0 {
            eprintln!("seed: {seed}");
        }
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
    // every write is checked: a closed pipe or a full disk stops at once
    let mut out = std::io::stdout();
    let mut print = |s: &str| -> std::io::Result<()> {
        out.write_all(s.as_bytes())?;
        out.flush()
    };

    if let (Some(prompt), false) = (&prompt, a.interactive) {
        let (text, special) = if a.chat {
            let mut msgs = Vec::new();
            if let Some(s) = &a.system {
                msgs.push(Message::new("system", s));
            }
            msgs.push(Message::new("user", prompt));
            (render(&msgs)?, true)
        } else {
            (prompt.clone(), !a.no_parse_special)
        };
        // a template that writes BOS itself must not get a second one
        let add_bos = !(a.chat && !bos.is_empty() && text.starts_with(&bos));
        let ids = tok.encode(&text, add_bos, special)?;
        if ids.is_empty() {
            return Err("the prompt is empty: there is nothing to continue".into());
        }
        if ids.len() > session.n_ctx() {
            return Err(format!(
                "the prompt has {} tokens, more than the context of {} (-c)",
                ids.len(),
                session.n_ctx()
            )
            .into());
        }
        if a.verbose_prompt {
            print_tokens(tok, &ids);
        }
        say_seed();
        if !a.chat && !a.no_display_prompt {
            print(prompt)?;
        }
        let gen = with_shift(&gen, a, tok, &ids);
        let g = generate(&mut session, Some(tok), &ids, &gen, &mut print)?;
        print("\n")?;
        if g.stop == StopReason::ContextFull {
            eprintln!(
                "note: the context of {} tokens is full, so generation stopped after {} tokens (a larger -c gives more room; --context-shift goes on past it)",
                session.n_ctx(),
                g.tokens.len()
            );
        }
        print_timings(&session, load_time, t_start);
        if a.stats {
            print_stats(&session);
        }
        return Ok(());
    }
    let first = prompt.filter(|p| !p.trim().is_empty());
    say_seed();
    repl(&mut session, tok, &gen, a, &render, first)?;
    print_timings(&session, load_time, t_start);
    Ok(())
}

fn print_tokens(tok: &subllm::tokenizer::Tokenizer, ids: &[u32]) {
    for &t in ids {
        eprintln!("{t:>8} -> {:?}", tok.decode(&[t], true));
    }
}

/// Ctrl-C during a reply: caught (stops the reply, the REPL stays) while a
/// reply is generated; the default (quit) otherwise.
#[cfg(unix)]
mod interrupt {
    use std::sync::atomic::{AtomicBool, Ordering};

    static HIT: AtomicBool = AtomicBool::new(false);
    const SIGINT: i32 = 2;
    const SIG_DFL: usize = 0;

    extern "C" {
        // libc's signal(2): `sighandler_t signal(int, sighandler_t)`, the
        // handler a function pointer (or SIG_DFL), pointer-sized
        fn signal(signum: i32, handler: usize) -> usize;
    }

    extern "C" fn on_sigint(_: i32) {
        // an atomic store is async-signal-safe
        HIT.store(true, Ordering::SeqCst);
    }

    pub fn catch() {
        HIT.store(false, Ordering::SeqCst);
        // SAFETY: FFI to libc's signal() with a handler that only stores to
        // an atomic (async-signal-safe) and matches `void (*)(int)`.
        unsafe { signal(SIGINT, on_sigint as extern "C" fn(i32) as usize) };
    }

    pub fn restore() {
        // SAFETY: FFI to libc's signal(), restoring the default action.
        unsafe { signal(SIGINT, SIG_DFL) };
    }

    pub fn hit() -> bool {
        HIT.load(Ordering::SeqCst)
    }
}

#[cfg(not(unix))]
mod interrupt {
    pub fn catch() {}
    pub fn restore() {}
    pub fn hit() -> bool {
        false
    }
}

const REPL_HELP: &str = "\
commands:
  /help    this list
  /reset   forget the conversation (and its cache)
  /stats   tokens, kept tokens per level and KV cache bytes
  /exit    leave (Ctrl-D too)
a line ending in \\ continues on the next line; Ctrl-C stops a reply";

/// Where the REPL keeps its history: $SUBLLM_HISTORY, else ~/.subllm_history.
fn history_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("SUBLLM_HISTORY") {
        return Some(PathBuf::from(p));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".subllm_history"))
}

/// The interactive loop: each line is a user turn; the conversation is
/// re-rendered with the chat template and only the new tokens are evaluated.
fn repl(
    session: &mut Session,
    tok: &subllm::tokenizer::Tokenizer,
    gen: &GenerateParams,
    a: &RunArgs,
    render: &dyn Fn(&[Message]) -> std::result::Result<String, subllm::Error>,
    mut first: Option<String>,
) -> Result<()> {
    use std::io::IsTerminal;
    let mut rl = rustyline::DefaultEditor::new()?;
    let history = history_path().filter(|_| std::io::stdin().is_terminal());
    if let Some(h) = &history {
        let _ = rl.load_history(h);
    }
    let mut msgs: Vec<Message> = a.system.iter().map(|s| Message::new("system", s)).collect();
    let n_system = msgs.len();
    eprintln!("subllm: type a message; /help lists the commands, Ctrl-D leaves");
    loop {
        let line = match first.take() {
            Some(p) => p,
            None => {
                let mut line = match rl.readline("> ") {
                    Ok(l) => l,
                    Err(rustyline::error::ReadlineError::Interrupted) => continue,
                    Err(rustyline::error::ReadlineError::Eof) => break,
                    Err(e) => return Err(e.into()),
                };
                // a trailing backslash continues the message
                while line.ends_with('\\') {
                    line.pop();
                    line.push('\n');
                    match rl.readline("... ") {
                        Ok(more) => line.push_str(&more),
                        Err(rustyline::error::ReadlineError::Interrupted) => {
                            line.clear();
                            break;
                        }
                        Err(rustyline::error::ReadlineError::Eof) => break,
                        Err(e) => return Err(e.into()),
                    }
                }
                line
            }
        };
        let cmd = line.trim();
        if cmd.is_empty() {
            continue;
        }
        let _ = rl.add_history_entry(line.as_str());
        if cmd.starts_with('/') {
            match cmd {
                "/help" => eprintln!("{REPL_HELP}"),
                "/reset" => {
                    msgs.truncate(n_system);
                    session.reset();
                    eprintln!("(the conversation is forgotten)");
                }
                "/stats" => print_stats(session),
                "/exit" | "/quit" => break,
                other => eprintln!("unknown command {other}: /help lists the commands"),
            }
            continue;
        }
        msgs.push(Message::new("user", &line));
        let ids = tok.encode(&render(&msgs)?, true, true)?;
        if ids.len() >= session.n_ctx() {
            msgs.pop();
            eprintln!(
                "the context of {} tokens is full: the conversation so far is kept; /reset starts over (or run with a larger -c)",
                session.n_ctx()
            );
            continue;
        }
        // reuse the cached prefix the new rendering shares with the old one
        let common = prefix_len(session.tokens(), &ids).min(ids.len() - 1);
        session.truncate(common);
        if a.verbose_prompt {
            print_tokens(tok, &ids[common..]);
        }
        let mut out = std::io::stdout();
        let mut answer = String::new();
        let mut print = |s: &str| -> std::io::Result<()> {
            if interrupt::hit() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::Interrupted,
                    "interrupted",
                ));
            }
            answer.push_str(s);
            out.write_all(s.as_bytes())?;
            out.flush()
        };
        interrupt::catch();
        let gen = with_shift(gen, a, tok, &ids);
        let g = generate(session, Some(tok), &ids[common..], &gen, &mut print);
        interrupt::restore();
        std::io::stdout().write_all(b"\n")?;
        let g = match g {
            Ok(g) if g.stop == StopReason::Interrupted => {
                // keep what was said; the prompt part of the cache stays valid
                eprintln!("(stopped)");
                msgs.push(Message::new("assistant", &answer));
                let same = prefix_len(session.tokens(), &ids);
                session.truncate(same);
                continue;
            }
            Ok(g) => g,
            Err(subllm::Error::Io(e)) => return Err(e.into()),
            Err(e) => {
                // the turn failed: the conversation stays as it was before it
                eprintln!("error: {}", escape_controls(&e.to_string()));
                msgs.pop();
                let same = prefix_len(session.tokens(), &ids).min(common);
                session.truncate(same);
                continue;
            }
        };
        if g.stop == StopReason::ContextFull {
            eprintln!(
                "(the context of {} tokens is full: /reset starts over)",
                session.n_ctx()
            );
        }
        msgs.push(Message::new("assistant", &g.text));
        // the session holds what it evaluated (after a context shift, not
        // a prefix of the conversation): the next turn reuses what matches
    }
    if let Some(h) = &history {
        let _ = rl.save_history(h);
    }
    if a.stats {
        print_stats(session);
    }
    Ok(())
}

/// Timings as llama.cpp prints them at the end, and for SUBLLM files what
/// each level kept.
fn print_timings(s: &Session, load: Duration, start: Instant) {
    let st = s.stats();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let line = |what: &str, d: Duration, n: usize| {
        if n > 0 {
            eprintln!(
                "{what:>16} = {:10.2} ms / {n:5} tokens ({:8.2} ms per token, {:8.2} tokens per second)",
                ms(d),
                ms(d) / n as f64,
                n as f64 / d.as_secs_f64().max(1e-9)
            );
        }
    };
    eprintln!();
    eprintln!("{:>16} = {:10.2} ms", "load time", ms(load));
    line("prompt eval time", st.prefill_time, st.prefill_tokens);
    line("eval time", st.decode_time, st.decode_tokens);
    eprintln!("{:>16} = {:10.2} ms", "total time", ms(start.elapsed()));
    if st.tokens_per_level.len() > 1 {
        let n0 = st.tokens_per_level[0].max(1) as f64;
        let kept: Vec<String> = st
            .tokens_per_level
            .iter()
            .map(|&t| format!("{:.0}", 100.0 * t as f64 / n0))
            .collect();
        eprintln!(
            "{:>16} = {} % of {} tokens; KV cache {:.1} MiB, {:.2} of a full cache",
            "kept per level",
            kept.join("/"),
            st.tokens_per_level[0],
            st.kv_bytes as f64 / (1 << 20) as f64,
            st.kv_bytes as f64 / st.kv_bytes_full.max(1) as f64
        );
    }
}

fn print_stats(s: &Session) {
    let st = s.stats();
    if st.tokens_per_level.len() > 1 {
        eprintln!(
            "tokens: {}; per level: {:?}; kept per region: {:?}",
            st.n_past, st.tokens_per_level, st.kept_per_region
        );
    } else {
        eprintln!("tokens: {}", st.n_past);
    }
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
    let mut o = std::io::stdout().lock();
    if let Some((name, out)) = dump {
        let info = f
            .tensor_info(name)
            .ok_or_else(|| subllm::gguf::GgufError::MissingTensor(name.into()))?;
        let data = f.dequantize(name)?;
        // numpy order is the reverse of ggml's (row length last)
        let shape: Vec<usize> = info.dims.iter().rev().map(|&d| d as usize).collect();
        write_output(out, |w| subllm::npy::write_f32(w, &shape, &data))?;
        writeln!(
            o,
            "wrote {} ({} {:?}) to {}",
            escape_controls(name),
            info.ty,
            shape,
            out.display()
        )?;
        return Ok(());
    }

    writeln!(
        o,
        "{}: GGUF v{}, {} bytes",
        path.display(),
        f.version,
        f.file_len()
    )?;
    writeln!(
        o,
        "alignment {}, data section at byte {}",
        f.alignment, f.data_offset
    )?;
    writeln!(o, "\nmetadata ({} keys):", f.metadata().len())?;
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
        let k = escape_controls(k);
        writeln!(o, "  {k:<40} {:<7} {shown}", v.value_type().name())?;
    }
    writeln!(o, "\ntensors ({}):", f.tensors().len())?;
    writeln!(
        o,
        "  {:<40} {:<7} {:<24} {:>12} {:>12}",
        "name", "type", "shape", "bytes", "offset"
    )?;
    let (mut params, mut bytes) = (0u64, 0u64);
    let mut by_type: Vec<(subllm::GgmlType, u64, u64)> = Vec::new();
    for t in f.tensors() {
        let shape = format!("{:?}", t.dims);
        writeln!(
            o,
            "  {:<40} {:<7} {:<24} {:>12} {:>12}",
            escape_controls(&t.name),
            t.ty.name(),
            shape,
            t.size,
            t.offset
        )?;
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
    writeln!(
        o,
        "\ntotal: {params} parameters ({:.2} M), {bytes} bytes of tensor data ({:.2} MiB)",
        params as f64 / 1e6,
        bytes as f64 / (1 << 20) as f64
    )?;
    for (ty, n, p) in by_type {
        writeln!(o, "  {ty:<7} {n:>5} tensors {p:>14} parameters")?;
    }
    if params > 0 {
        writeln!(
            o,
            "  {:.3} bits per parameter",
            bytes as f64 * 8.0 / params as f64
        )?;
    }
    Ok(())
}
