//! `subllm-bench`: llama-bench's twin. Same flags, same table, so a script
//! reads both tools' output the same way.
//!
//! Each test runs one warm-up, then `-r` timed repetitions. `-d DEPTH`
//! fills the cache with DEPTH tokens once (untimed) and truncates back to it
//! before every repetition. Prompt tokens are drawn uniformly from the
//! vocabulary with a fixed seed, as llama-bench does.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::{json, Value};
use subllm::rng::SplitMix64;
use subllm::{KvType, Logits, Model, Session, SessionParams};

/// `println!` through [`emit`].
macro_rules! say {
    ($($t:tt)*) => {
        emit(&format!($($t)*))
    };
}

#[derive(Parser, Debug)]
#[command(
    name = "subllm-bench",
    version,
    about = "Benchmark prompt processing and generation (llama-bench's flags and table)"
)]
struct Args {
    /// Model file (repeatable).
    #[arg(short = 'm', long = "model", required_unless_present = "membw")]
    model: Vec<PathBuf>,
    /// Prompt tokens per prompt-processing test (comma list; 0 = none).
    #[arg(short = 'p', long = "n-prompt", default_value = "512")]
    n_prompt: String,
    /// Generated tokens per generation test (comma list; 0 = none).
    #[arg(short = 'n', long = "n-gen", default_value = "128")]
    n_gen: String,
    /// Prompt then generation in one test: P,N (repeatable).
    #[arg(long = "pg")]
    pg: Vec<String>,
    /// Tokens already in the cache before each test (comma list).
    #[arg(short = 'd', long = "n-depth", default_value = "0")]
    n_depth: String,
    /// Threads (comma list; default: all cores).
    #[arg(short = 't', long = "threads")]
    threads: Option<String>,
    /// Batch size: prompt tokens per graph run (comma list).
    #[arg(short = 'b', long = "batch-size", default_value = "2048")]
    batch: String,
    /// Micro-batch size: at most this many of a batch's tokens per graph
    /// run, as llama-bench's -ub (comma list).
    #[arg(long = "ubatch-size", default_value = "512")]
    ubatch: String,
    /// KV cache type (comma list of f16, f32, q8_0).
    #[arg(long = "ctk", alias = "cache-type-k", default_value = "f16")]
    ctk: String,
    /// SUBLLM: keep a token at a level iff its score is above T (comma list;
    /// 0 is the trained behaviour).
    #[arg(
        long = "subsample-threshold",
        default_value = "0",
        allow_hyphen_values = true
    )]
    subsample_threshold: String,
    /// Timed repetitions per test (after one warm-up).
    #[arg(short = 'r', long = "repetitions", default_value_t = 5)]
    reps: usize,
    /// Output format: md, json, jsonl or csv.
    #[arg(short = 'o', long = "output", default_value = "md")]
    output: String,
    /// Seed of the random prompt tokens.
    #[arg(long, default_value_t = 1234)]
    seed: u64,
    /// Progress on stderr.
    #[arg(short = 'v', long)]
    verbose: bool,
    /// Instead of a model test: measure memory read bandwidth (GB/s) with the
    /// first -t thread count, over a buffer of this many MiB, each thread
    /// reading one sequential stream and four in lockstep (the best is
    /// `read_gbps`).
    #[arg(long, value_name = "MIB")]
    membw: Option<usize>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Md,
    Json,
    Jsonl,
    Csv,
}

/// One test: `n_prompt` tokens in one eval, then `n_gen` single-token evals,
/// after `n_depth` tokens already cached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Test {
    n_prompt: usize,
    n_gen: usize,
    n_depth: usize,
}

impl Test {
    fn name(&self) -> String {
        let mut s = match (self.n_prompt, self.n_gen) {
            (p, 0) => format!("pp{p}"),
            (0, n) => format!("tg{n}"),
            (p, n) => format!("pp{p}+tg{n}"),
        };
        if self.n_depth > 0 {
            s.push_str(&format!(" @ d{}", self.n_depth));
        }
        s
    }
}

/// Everything the command line asks for, checked.
#[derive(Debug)]
struct Plan {
    models: Vec<PathBuf>,
    tests: Vec<(usize, usize)>,
    depths: Vec<usize>,
    threads: Vec<usize>,
    batches: Vec<usize>,
    ubatches: Vec<usize>,
    ctk: Vec<KvType>,
    thresholds: Vec<f32>,
    reps: usize,
    format: Format,
    seed: u64,
    verbose: bool,
}

const MAX_TOKENS: usize = 1 << 20;
const MAX_THREADS: usize = 512;

fn list(flag: &str, s: &str, min: usize, max: usize) -> Result<Vec<usize>, String> {
    let v: Result<Vec<usize>, String> = s
        .split(',')
        .map(|x| {
            let x = x.trim();
            match x.parse::<usize>() {
                Ok(n) if (min..=max).contains(&n) => Ok(n),
                _ => Err(format!(
                    "{flag}: {x:?} is not a whole number in {min}..={max}"
                )),
            }
        })
        .collect();
    let v = v?;
    if v.is_empty() {
        return Err(format!("{flag}: empty list"));
    }
    Ok(v)
}

/// The subsample thresholds of a comma list: finite, within +-1000.
fn thresholds(s: &str) -> Result<Vec<f32>, String> {
    s.split(',')
        .map(|x| {
            let x = x.trim();
            match x.parse::<f32>() {
                Ok(t) if t.is_finite() && t.abs() <= 1000.0 => Ok(t),
                _ => Err(format!(
                    "--subsample-threshold: {x:?} is not a number in -1000..=1000"
                )),
            }
        })
        .collect()
}

fn plan(a: Args) -> Result<Plan, String> {
    let format = match a.output.as_str() {
        "md" => Format::Md,
        "json" => Format::Json,
        "jsonl" => Format::Jsonl,
        "csv" => Format::Csv,
        o => return Err(format!("-o: unknown format {o:?} (md, json, jsonl, csv)")),
    };
    let mut tests = Vec::new();
    for p in list("-p", &a.n_prompt, 0, MAX_TOKENS)? {
        if p > 0 {
            tests.push((p, 0));
        }
    }
    for n in list("-n", &a.n_gen, 0, MAX_TOKENS)? {
        if n > 0 {
            tests.push((0, n));
        }
    }
    for pg in &a.pg {
        let v = list("-pg", pg, 1, MAX_TOKENS)?;
        if v.len() != 2 {
            return Err(format!("-pg: {pg:?} is not P,N"));
        }
        tests.push((v[0], v[1]));
    }
    if tests.is_empty() {
        return Err("no test: every -p and -n is 0 and there is no -pg".into());
    }
    let threads = match &a.threads {
        Some(t) => list("-t", t, 1, MAX_THREADS)?,
        None => vec![std::thread::available_parallelism().map_or(1, |n| n.get())],
    };
    let ctk = a
        .ctk
        .split(',')
        .map(|s| KvType::parse(s.trim()).ok_or_else(|| format!("-ctk: unknown type {s:?}")))
        .collect::<Result<Vec<_>, _>>()?;
    let thresholds = thresholds(&a.subsample_threshold)?;
    if a.reps == 0 || a.reps > 1000 {
        return Err(format!("-r: {} is not in 1..=1000", a.reps));
    }
    Ok(Plan {
        models: a.model,
        tests,
        depths: list("-d", &a.n_depth, 0, MAX_TOKENS)?,
        threads,
        batches: list("-b", &a.batch, 1, MAX_TOKENS)?,
        ubatches: list("-ub", &a.ubatch, 1, MAX_TOKENS)?,
        ctk,
        thresholds,
        reps: a.reps,
        format,
        seed: a.seed,
        verbose: a.verbose,
    })
}

/// llama-bench spells some flags with one dash and several letters.
fn normalize_args(args: impl Iterator<Item = String>) -> Vec<String> {
    args.map(|a| match a.as_str() {
        "-pg" => "--pg".into(),
        "-ctk" => "--ctk".into(),
        "-ub" => "--ubatch-size".into(),
        _ => a,
    })
    .collect()
}

/// The result of one test.
struct Row {
    model: String,
    model_type: String,
    size: u64,
    params: u64,
    cpu: &'static str,
    /// The thread pool: `spin` (ours) or `rayon` (`SUBLLM_POOL=rayon`).
    pool: &'static str,
    threads: usize,
    batch: usize,
    ubatch: usize,
    ctk: KvType,
    test: Test,
    samples: Vec<Duration>,
    load: Duration,
    tokens_per_level: Vec<usize>,
    kv_bytes: usize,
    kv_bytes_full: usize,
    subllm: bool,
    threshold: f32,
    peak_rss: u64,
}

impl Row {
    fn rates(&self) -> Vec<f64> {
        let n = (self.test.n_prompt + self.test.n_gen) as f64;
        self.samples
            .iter()
            .map(|d| n / d.as_secs_f64().max(1e-9))
            .collect()
    }
    fn mean_sd(&self) -> (f64, f64) {
        let r = self.rates();
        let mean = r.iter().sum::<f64>() / r.len() as f64;
        let var = if r.len() > 1 {
            r.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (r.len() - 1) as f64
        } else {
            0.0
        };
        (mean, var.sqrt())
    }
    fn kept(&self) -> String {
        let n0 = self.tokens_per_level.first().copied().unwrap_or(0).max(1) as f64;
        self.tokens_per_level
            .iter()
            .map(|&n| format!("{:.0}", 100.0 * n as f64 / n0))
            .collect::<Vec<_>>()
            .join("/")
            + " %"
    }
    fn kv(&self) -> String {
        format!(
            "{:.1}/{:.1} MiB",
            self.kv_bytes as f64 / MIB,
            self.kv_bytes_full as f64 / MIB
        )
    }
    fn json(&self) -> Value {
        let (mean, sd) = self.mean_sd();
        json!({
            "model_filename": self.model,
            "model_type": self.model_type,
            "model_size": self.size,
            "model_n_params": self.params,
            "backend": "CPU",
            "cpu_level": self.cpu,
            "thread_pool": self.pool,
            "n_threads": self.threads,
            "n_batch": self.batch,
            "n_ubatch": self.ubatch,
            "type_k": format!("{:?}", self.ctk).to_lowercase(),
            "n_prompt": self.test.n_prompt,
            "n_gen": self.test.n_gen,
            "n_depth": self.test.n_depth,
            "test": self.test.name(),
            "avg_ts": mean,
            "stddev_ts": sd,
            "samples_ns": self.samples.iter().map(|d| d.as_nanos() as u64).collect::<Vec<_>>(),
            "samples_ts": self.rates(),
            "load_ms": self.load.as_secs_f64() * 1e3,
            "peak_rss_bytes": self.peak_rss,
            "tokens_per_level": self.tokens_per_level,
            "kv_bytes": self.kv_bytes,
            "kv_bytes_full": self.kv_bytes_full,
            "subsample_threshold": self.threshold,
        })
    }
}

const MIB: f64 = (1u64 << 20) as f64;

fn human_size(b: u64) -> String {
    let gib = b as f64 / (1u64 << 30) as f64;
    if gib >= 1.0 {
        format!("{gib:.2} GiB")
    } else {
        format!("{:.2} MiB", b as f64 / MIB)
    }
}

fn human_params(n: u64) -> String {
    if n >= 1_000_000_000 {
        format!("{:.2} B", n as f64 / 1e9)
    } else {
        format!("{:.2} M", n as f64 / 1e6)
    }
}

/// The process's peak resident set (VmHWM), in bytes (0 where unknown).
fn peak_rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// llama.cpp's short name for a file type.
fn ftype_name(ft: u64) -> String {
    match ft {
        0 => "F32".into(),
        1 => "F16".into(),
        2 => "Q4_0".into(),
        3 => "Q4_1".into(),
        7 => "Q8_0".into(),
        8 => "Q5_0".into(),
        9 => "Q5_1".into(),
        10 => "Q2_K".into(),
        12 => "Q3_K_M".into(),
        14 => "Q4_K_S".into(),
        15 => "Q4_K_M".into(),
        16 => "Q5_K_S".into(),
        17 => "Q5_K_M".into(),
        18 => "Q6_K".into(),
        32 => "BF16".into(),
        x => format!("ftype {x}"),
    }
}

/// `n` prompt tokens drawn uniformly from the vocabulary.
fn tokens(rng: &mut SplitMix64, n: usize, n_vocab: usize) -> Vec<u32> {
    (0..n)
        .map(|_| (rng.next_u64() % n_vocab as u64) as u32)
        .collect()
}

struct Printer {
    format: Format,
    subllm: bool,
    /// A threshold other than 0 was asked for: the table shows it.
    thresholds: bool,
    rows: Vec<Value>,
}

impl Printer {
    fn header(&self) {
        match self.format {
            Format::Md => {
                let mut h = format!(
                    "| {:<30} | {:>10} | {:>10} | {:<10} | {:>7} | {:>15} | {:>20} |",
                    "model", "size", "params", "backend", "threads", "test", "t/s"
                );
                let mut s = format!(
                    "| {} | {}: | {}: | {} | {}: | {}: | {}: |",
                    "-".repeat(30),
                    "-".repeat(9),
                    "-".repeat(9),
                    "-".repeat(10),
                    "-".repeat(6),
                    "-".repeat(14),
                    "-".repeat(19)
                );
                if self.subllm {
                    h.push_str(&format!(" {:>14} | {:>20} |", "kept/level", "KV/full"));
                    s.push_str(&format!(" {}: | {}: |", "-".repeat(13), "-".repeat(19)));
                }
                if self.thresholds {
                    h.push_str(&format!(" {:>9} |", "threshold"));
                    s.push_str(&format!(" {}: |", "-".repeat(8)));
                }
                say!("{h}\n{s}");
            }
            Format::Csv => say!(
                "model_filename,model_type,model_size,model_n_params,backend,cpu_level,n_threads,\
                 n_batch,type_k,n_prompt,n_gen,n_depth,test,avg_ts,stddev_ts,load_ms,\
                 peak_rss_bytes,tokens_per_level,kv_bytes,kv_bytes_full,subsample_threshold,\
                 thread_pool,n_ubatch"
            ),
            Format::Json | Format::Jsonl => {}
        }
    }

    fn row(&mut self, r: &Row) {
        let (mean, sd) = r.mean_sd();
        match self.format {
            Format::Md => {
                let mut line = format!(
                    "| {:<30} | {:>10} | {:>10} | {:<10} | {:>7} | {:>15} | {:>20} |",
                    r.model_type,
                    human_size(r.size),
                    human_params(r.params),
                    match r.pool {
                        "spin" => format!("CPU/{}", r.cpu),
                        pool => format!("CPU/{}/{pool}", r.cpu),
                    },
                    r.threads,
                    r.test.name(),
                    format!("{mean:.2} ± {sd:.2}")
                );
                if self.subllm {
                    let (k, kv) = if r.subllm {
                        (r.kept(), r.kv())
                    } else {
                        ("-".into(), r.kv())
                    };
                    line.push_str(&format!(" {k:>14} | {kv:>20} |"));
                }
                if self.thresholds {
                    line.push_str(&format!(" {:>9} |", r.threshold));
                }
                say!("{line}");
            }
            Format::Csv => {
                let levels: Vec<String> =
                    r.tokens_per_level.iter().map(|n| n.to_string()).collect();
                say!(
                    "\"{}\",\"{}\",{},{},CPU,{},{},{},{},{},{},{},{},{:.6},{:.6},{:.3},{},{},{},{},{},{},{}",
                    r.model.replace('"', "\"\""),
                    r.model_type,
                    r.size,
                    r.params,
                    r.cpu,
                    r.threads,
                    r.batch,
                    format!("{:?}", r.ctk).to_lowercase(),
                    r.test.n_prompt,
                    r.test.n_gen,
                    r.test.n_depth,
                    r.test.name(),
                    mean,
                    sd,
                    r.load.as_secs_f64() * 1e3,
                    r.peak_rss,
                    levels.join("/"),
                    r.kv_bytes,
                    r.kv_bytes_full,
                    r.threshold,
                    r.pool,
                    r.ubatch
                );
            }
            Format::Jsonl => say!("{}", r.json()),
            Format::Json => self.rows.push(r.json()),
        }
    }

    fn finish(&self) {
        if self.format == Format::Json {
            say!(
                "{}",
                serde_json::to_string_pretty(&self.rows).expect("plain values")
            );
        }
    }
}

/// Runs `t` once; returns its time and the session's level counts / KV bytes.
fn run_once(s: &mut Session, t: Test, rng: &mut SplitMix64) -> Result<Duration, subllm::Error> {
    let n_vocab = s.model().hparams.n_vocab;
    s.truncate(t.n_depth);
    let prompt = tokens(rng, t.n_prompt, n_vocab);
    let gen = tokens(rng, t.n_gen, n_vocab);
    let t0 = Instant::now();
    if !prompt.is_empty() {
        s.eval(&prompt, Logits::Last)?;
    }
    for &g in &gen {
        s.eval(&[g], Logits::Last)?;
    }
    Ok(t0.elapsed())
}

fn bench(p: &Plan) -> Result<(), String> {
    // which files are SUBLLM decides the table's columns
    let mut subllm_any = false;
    for m in &p.models {
        let f = subllm::gguf::GgufFile::open(m).map_err(|e| format!("{}: {e}", m.display()))?;
        subllm_any |= f.get_str("general.architecture").ok() == Some("subllm");
    }
    let mut out = Printer {
        format: p.format,
        subllm: subllm_any,
        thresholds: p.thresholds.iter().any(|&t| t != 0.0),
        rows: Vec::new(),
    };
    out.header();
    let cpu = subllm::kernels::cpu::level().name();
    for path in &p.models {
        let t0 = Instant::now();
        let model = Model::load(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let load = t0.elapsed();
        let f = model.gguf();
        let params: u64 = f.tensors().iter().map(|t| t.n_elements()).sum();
        let size: u64 = f.tensors().iter().map(|t| t.size).sum();
        let ft = f
            .get_u64("general.file_type")
            .map(ftype_name)
            .unwrap_or_default();
        let model_type = format!(
            "{} {} {}",
            model.arch,
            human_params(params).replace(' ', ""),
            ft
        );
        let is_subllm = model.arch == "subllm";
        for &threads in &p.threads {
            for (&batch, &ubatch) in p
                .batches
                .iter()
                .flat_map(|b| p.ubatches.iter().map(move |u| (b, u)))
            {
                for (&ctk, &threshold) in p
                    .ctk
                    .iter()
                    .flat_map(|c| p.thresholds.iter().map(move |t| (c, t)))
                {
                    for &depth in &p.depths {
                        let max_test = p.tests.iter().map(|(a, b)| a + b).max().unwrap_or(0);
                        let sp = SessionParams {
                            n_ctx: depth + max_test,
                            // the tokens of one graph run: a batch goes in
                            // micro-batches, as in llama.cpp
                            n_batch: batch.min(ubatch),
                            kv_type: ctk,
                            upstream_nested_positions: false,
                            n_threads: threads,
                            subsample_threshold: threshold,
                        };
                        let mut s = Session::new(&model, sp).map_err(|e| e.to_string())?;
                        let mut rng = SplitMix64::new(p.seed);
                        if depth > 0 {
                            if p.verbose {
                                eprintln!("filling the cache with {depth} tokens");
                            }
                            let fill = tokens(&mut rng, depth, model.hparams.n_vocab);
                            s.eval(&fill, Logits::Last).map_err(|e| e.to_string())?;
                        }
                        for &(n_prompt, n_gen) in &p.tests {
                            let test = Test {
                                n_prompt,
                                n_gen,
                                n_depth: depth,
                            };
                            // warm-up: a short version of the test
                            let warm = Test {
                                n_prompt: n_prompt.min(batch).min(64),
                                n_gen: n_gen.min(1),
                                n_depth: depth,
                            };
                            run_once(&mut s, warm, &mut rng).map_err(|e| e.to_string())?;
                            let mut samples = Vec::new();
                            for rep in 0..p.reps {
                                let d =
                                    run_once(&mut s, test, &mut rng).map_err(|e| e.to_string())?;
                                if p.verbose {
                                    eprintln!(
                                        "{} rep {rep}: {:.3} s",
                                        test.name(),
                                        d.as_secs_f64()
                                    );
                                }
                                samples.push(d);
                            }
                            let st = s.stats();
                            out.row(&Row {
                                model: path.display().to_string(),
                                model_type: model_type.clone(),
                                size,
                                params,
                                cpu,
                                pool: s.pool_name(),
                                // what ran: requests beyond the machine's
                                // hardware threads are clamped
                                threads: s.n_threads(),
                                batch,
                                ubatch,
                                ctk,
                                test,
                                samples,
                                load,
                                tokens_per_level: st.tokens_per_level,
                                kv_bytes: st.kv_bytes,
                                kv_bytes_full: st.kv_bytes_full,
                                subllm: is_subllm,
                                threshold,
                                peak_rss: peak_rss(),
                            });
                        }
                    }
                }
            }
        }
    }
    out.finish();
    Ok(())
}

/// Read bandwidth: `threads` threads each sum their part of a `mib` MiB
/// buffer, each as one sequential stream or as four in lockstep; the best
/// of five passes of each layout, in GB/s, as (one stream, four streams).
fn membw(mib: usize, threads: usize) -> (f64, f64) {
    let n = mib * (1 << 20) / 8;
    let buf: Vec<u64> = (0..n as u64).collect();
    let part = n.div_ceil(threads);
    let mut best = [0.0f64; 2];
    // the layouts alternate, so a noisy minute costs both alike
    for _ in 0..5 {
        for (four, b) in [false, true].into_iter().zip(best.iter_mut()) {
            let t0 = Instant::now();
            let total: u64 = std::thread::scope(|sc| {
                let hs: Vec<_> = buf
                    .chunks(part)
                    .map(|c| sc.spawn(move || subllm_kernels::fp::stream_sum(c, four)))
                    .collect();
                hs.into_iter()
                    .map(|h| h.join().unwrap_or(0))
                    .fold(0u64, |x, y| x.wrapping_add(y))
            });
            std::hint::black_box(total);
            *b = b.max((n * 8) as f64 / t0.elapsed().as_secs_f64() / 1e9);
        }
    }
    (best[0], best[1])
}

/// Writes one line of the report to stdout. A reader that went away
/// (`| head`) ends the run quietly with the status SIGPIPE gives; any other
/// write error ends it with one line on stderr.
fn emit(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{line}").and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(141);
        }
        eprintln!("error: writing the report: {e}");
        std::process::exit(1);
    }
}
fn main() -> ExitCode {
    let args = match Args::try_parse_from(normalize_args(std::env::args())) {
        Ok(a) => a,
        Err(e) => e.exit(),
    };
    if let Some(mib) = args.membw {
        let threads = match &args.threads {
            Some(t) => match list("-t", t, 1, MAX_THREADS) {
                Ok(v) => v[0],
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            },
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        if !(64..=16384).contains(&mib) {
            eprintln!("error: --membw: {mib} MiB is not in 64..=16384");
            return ExitCode::FAILURE;
        }
        let (one, four) = membw(mib, threads);
        say!(
            "{{\"threads\": {threads}, \"read_gbps\": {:.2}, \"one_stream_gbps\": {one:.2}, \"four_streams_gbps\": {four:.2}}}",
            one.max(four)
        );
        return ExitCode::SUCCESS;
    }
    let result = plan(args).and_then(|p| bench(&p));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Plan, String> {
        let argv = normalize_args(
            std::iter::once("subllm-bench".to_string()).chain(args.iter().map(|s| s.to_string())),
        );
        Args::try_parse_from(argv)
            .map_err(|e| e.to_string())
            .and_then(plan)
    }

    #[test]
    fn lists_and_llama_bench_spellings() {
        let p = parse(&[
            "-m", "a.gguf", "-m", "b.gguf", "-p", "128,512", "-n", "0", "-pg", "64,16", "-t",
            "1,2", "-d", "0,4096", "-ctk", "f16,q8_0", "-r", "3", "-o", "json", "-ub", "128,256",
        ])
        .unwrap();
        assert_eq!(p.ubatches, vec![128, 256]);
        assert_eq!(p.models.len(), 2);
        assert_eq!(p.tests, vec![(128, 0), (512, 0), (64, 16)]);
        assert_eq!(p.threads, vec![1, 2]);
        assert_eq!(p.depths, vec![0, 4096]);
        assert_eq!(p.ctk, vec![KvType::F16, KvType::Q8_0]);
        assert_eq!((p.reps, p.format), (3, Format::Json));
        assert_eq!(p.thresholds, vec![0.0]);
        let p = parse(&["-m", "a", "--subsample-threshold", "-0.5,0,0.25"]).unwrap();
        assert_eq!(p.thresholds, vec![-0.5, 0.0, 0.25]);
    }

    #[test]
    fn defaults_follow_llama_bench() {
        let p = parse(&["-m", "a.gguf"]).unwrap();
        assert_eq!(p.tests, vec![(512, 0), (0, 128)]);
        assert_eq!(
            (p.reps, p.format, p.batches.clone(), p.ubatches.clone()),
            (5, Format::Md, vec![2048], vec![512])
        );
        assert_eq!(p.depths, vec![0]);
    }

    #[test]
    fn bad_values_are_named() {
        for (args, want) in [
            (vec!["-m", "a", "-t", "0"], "-t"),
            (vec!["-m", "a", "-t", "4294967295"], "-t"),
            (vec!["-m", "a", "-p", "x"], "-p"),
            (vec!["-m", "a", "-p", "0", "-n", "0"], "no test"),
            (vec!["-m", "a", "-pg", "5"], "-pg"),
            (vec!["-m", "a", "-ctk", "q4_0"], "-ctk"),
            (vec!["-m", "a", "-o", "xml"], "-o"),
            (vec!["-m", "a", "-r", "0"], "-r"),
            (vec!["-m", "a", "-ub", "0"], "-ub"),
            (vec!["-m", "a", "-d", "-5"], ""),
            (
                vec!["-m", "a", "--subsample-threshold", "nan"],
                "--subsample-threshold",
            ),
            (
                vec!["-m", "a", "--subsample-threshold", "0,inf"],
                "--subsample-threshold",
            ),
            (
                vec!["-m", "a", "--subsample-threshold", "x"],
                "--subsample-threshold",
            ),
        ] {
            let e = parse(&args).unwrap_err();
            assert!(e.contains(want), "{args:?}: {e}");
        }
        assert!(parse(&[]).is_err(), "a model is required");
    }

    #[test]
    fn test_names_are_llama_benchs() {
        let t = |p, n, d| {
            Test {
                n_prompt: p,
                n_gen: n,
                n_depth: d,
            }
            .name()
        };
        assert_eq!(t(512, 0, 0), "pp512");
        assert_eq!(t(0, 128, 0), "tg128");
        assert_eq!(t(0, 32, 4096), "tg32 @ d4096");
        assert_eq!(t(512, 128, 0), "pp512+tg128");
    }
}
