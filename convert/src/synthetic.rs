//! Random-weight GGUFs of any shape, without a checkpoint: `llama` files
//! that llama.cpp loads and `subllm` files with any structure string, for
//! benchmarks (`subllm-convert --synthetic SPEC`).
//!
//! Scales. Matrices are uniform with the standard deviation that keeps a
//! unit-variance input at unit variance (1/sqrt(n_in)); the two projections
//! that write into the residual stream (`attn_output`, `ffn_down`) are
//! further divided by sqrt(2 * n_layer), as GPT-2 initialises them, so the
//! residual stream grows by a small factor over all blocks instead of
//! doubling per block. Embedding values have unit variance; norm gains are 1.
//!
//! Retention. A SUBLLM scorer is a linear map of the hidden state with no
//! bias, so a random one keeps an arbitrary fraction of tokens. Instead the
//! generator reserves residual channels the blocks never write (their rows
//! of `attn_output` and `ffn_down` are zero, and the upsample blend keeps
//! what the inner blocks kept): channel 0 holds 1 for every token and
//! channel 1 + r a standard normal value z_r(token) drawn per vocabulary
//! entry. Region r's scorer is `alpha_r * e_0 + e_(1+r)`, so a token scores
//! `alpha_r + z_r(token)` and is kept with probability Phi(alpha_r); alpha is
//! the normal quantile of the fraction asked for (default 0.64 per level,
//! the paper's training target). Scores near 0 get blend weights near 0, as
//! a trained scorer's would. On random prompts each level then keeps that
//! fraction of the tokens reaching it (0.64 and 0.41 for two nested levels),
//! within sampling noise; quantization of the embedding moves it slightly,
//! and `subllm-bench` prints what was really kept.

use std::io::BufWriter;
use std::path::Path;

use subllm::rng::SplitMix64;
use subllm_gguf::{GgufWriter, MetaArray, MetaValue};
use subllm_kernels::kernels_for;
use subllm_kernels::GgmlType;
use subllm_models::structure::Structure;

use crate::error::ConvertError;
use crate::{plan, Event, Summary};

/// The shape of a synthetic model.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthSpec {
    /// A `subllm` structure string; `None` for a Llama.
    pub structure: Option<String>,
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub n_ff: usize,
    pub n_vocab: usize,
    pub n_ctx: usize,
    /// Fraction of the tokens reaching each region that it keeps.
    pub keep: f64,
    pub seed: u64,
}

/// Named shapes: `llama-110m`, `llama-1.1b` (TinyLlama), `subllm-1.3b` (the
/// paper's) and `llama-1.3b` (its Llama twin), plus `tiny-llama` and
/// `tiny-subllm` for tests.
pub const PRESETS: &[&str] = &[
    "llama-110m",
    "llama-1.1b",
    "subllm-1.3b",
    "llama-1.3b",
    "tiny-llama",
    "tiny-subllm",
];

fn preset(name: &str) -> Option<SynthSpec> {
    let base = SynthSpec {
        structure: None,
        n_layer: 12,
        n_embd: 768,
        n_head: 12,
        n_head_kv: 12,
        n_ff: 3072,
        n_vocab: 32000,
        n_ctx: 4096,
        keep: 0.64,
        seed: 42,
    };
    let paper = SynthSpec {
        n_layer: 24,
        n_embd: 2048,
        n_head: 16,
        n_head_kv: 16,
        n_ff: 5504,
        n_ctx: 8192,
        ..base.clone()
    };
    Some(match name {
        "llama-110m" => base,
        "llama-1.1b" => SynthSpec {
            n_layer: 22,
            n_embd: 2048,
            n_head: 32,
            n_head_kv: 4,
            n_ff: 5632,
            n_ctx: 8192,
            ..base
        },
        "llama-1.3b" => paper,
        "subllm-1.3b" => SynthSpec {
            structure: Some("TTTTT(TTTTT(TTTT)TTTTT)TTTTT".into()),
            ..paper
        },
        "tiny-llama" => SynthSpec {
            n_layer: 4,
            n_embd: 128,
            n_head: 4,
            n_head_kv: 2,
            n_ff: 256,
            n_vocab: 512,
            n_ctx: 1024,
            ..base
        },
        "tiny-subllm" => SynthSpec {
            structure: Some("T(T(TT)T)T".into()),
            n_layer: 6,
            n_embd: 128,
            n_head: 4,
            n_head_kv: 4,
            n_ff: 256,
            n_vocab: 512,
            n_ctx: 1024,
            ..base
        },
        _ => return None,
    })
}

fn spec_err(m: impl Into<String>) -> ConvertError {
    ConvertError::Config(format!("--synthetic: {}", m.into()))
}

impl SynthSpec {
    /// Parses `PRESET[,key=value...]` or `key=value,...` (keys: `d`,
    /// `layers`, `heads`, `kv_heads`, `ff`, `vocab`, `ctx`, `structure`,
    /// `keep`, `seed`; `structure=` also sets the layer count, and `heads`
    /// sets `kv_heads` too on a multi-head preset unless it is given).
    pub fn parse(s: &str) -> Result<SynthSpec, ConvertError> {
        let mut parts = s.split(',').map(str::trim).filter(|p| !p.is_empty());
        let first = parts.next().ok_or_else(|| spec_err("empty spec"))?;
        let (mut spec, rest): (SynthSpec, Vec<&str>) = if first.contains('=') {
            (
                preset("llama-110m").expect("preset exists"),
                std::iter::once(first).chain(parts).collect(),
            )
        } else {
            let p = preset(first).ok_or_else(|| {
                spec_err(format!(
                    "unknown preset {first:?} (presets: {})",
                    PRESETS.join(", ")
                ))
            })?;
            (p, parts.collect())
        };
        // a multi-head preset stays multi-head when only `heads` changes
        let mha = spec.n_head == spec.n_head_kv;
        let mut kv_given = false;
        for kv in rest {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| spec_err(format!("{kv:?} is not key=value")))?;
            let int = || -> Result<usize, ConvertError> {
                v.parse::<usize>()
                    .map_err(|_| spec_err(format!("{k}={v:?} is not a whole number")))
            };
            match k {
                "d" | "n_embd" => spec.n_embd = int()?,
                "layers" => {
                    spec.n_layer = int()?;
                    if spec.structure.is_some() {
                        return Err(spec_err(
                            "a subllm spec takes its layer count from structure=",
                        ));
                    }
                }
                "heads" => spec.n_head = int()?,
                "kv_heads" => {
                    spec.n_head_kv = int()?;
                    kv_given = true;
                }
                "ff" => spec.n_ff = int()?,
                "vocab" => spec.n_vocab = int()?,
                "ctx" => spec.n_ctx = int()?,
                "seed" => spec.seed = int()? as u64,
                "keep" => {
                    spec.keep = v
                        .parse::<f64>()
                        .map_err(|_| spec_err(format!("keep={v:?} is not a number")))?
                }
                "structure" => {
                    spec.n_layer = v.chars().filter(|&c| c == 'T').count();
                    spec.structure = Some(v.to_string());
                }
                _ => return Err(spec_err(format!("unknown key {k:?}"))),
            }
        }
        if mha && !kv_given {
            spec.n_head_kv = spec.n_head;
        }
        spec.validate()?;
        Ok(spec)
    }

    fn validate(&self) -> Result<(), ConvertError> {
        let in_range = |name: &str, v: usize, lo: usize, hi: usize| {
            if v < lo || v > hi {
                Err(spec_err(format!("{name} = {v} is outside {lo}..={hi}")))
            } else {
                Ok(())
            }
        };
        in_range("d", self.n_embd, 32, 1 << 15)?;
        in_range("layers", self.n_layer, 1, 512)?;
        in_range("heads", self.n_head, 1, 1024)?;
        in_range("kv_heads", self.n_head_kv, 1, self.n_head)?;
        in_range("ff", self.n_ff, 32, 1 << 17)?;
        in_range("vocab", self.n_vocab, 16, 1 << 20)?;
        in_range("ctx", self.n_ctx, 16, 1 << 20)?;
        if !self.n_embd.is_multiple_of(self.n_head)
            || !(self.n_embd / self.n_head).is_multiple_of(2)
            || !self.n_head.is_multiple_of(self.n_head_kv)
        {
            return Err(spec_err(format!(
                "{} heads ({} KV) do not divide a width of {} into even head sizes",
                self.n_head, self.n_head_kv, self.n_embd
            )));
        }
        if !self.n_embd.is_multiple_of(32) || !self.n_ff.is_multiple_of(32) {
            return Err(spec_err("d and ff must be multiples of 32"));
        }
        if !(self.keep > 0.0 && self.keep < 1.0) {
            return Err(spec_err(format!("keep = {} is not in (0, 1)", self.keep)));
        }
        if let Some(s) = &self.structure {
            let st = Structure::parse(s, self.n_layer)?;
            if st.n_regions + 1 > self.n_embd / 2 {
                return Err(spec_err("too many regions for the width"));
            }
        }
        Ok(())
    }

    pub fn head_dim(&self) -> usize {
        self.n_embd / self.n_head
    }

    fn n_regions(&self) -> usize {
        self.structure
            .as_ref()
            .map(|s| s.chars().filter(|&c| c == '(').count())
            .unwrap_or(0)
    }

    fn arch(&self) -> &'static str {
        if self.structure.is_some() {
            "subllm"
        } else {
            "llama"
        }
    }
}

/// One generator per tensor: SplitMix64 seeded from the spec's seed and the
/// tensor's name.
struct Rng(SplitMix64);

impl Rng {
    fn new(seed: u64, name: &str) -> Rng {
        let mut h = seed ^ 0x9e37_79b9_7f4a_7c15;
        for b in name.bytes() {
            h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
        }
        Rng(SplitMix64::new(h))
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        self.0.unit()
    }
    /// Uniform with mean 0 and standard deviation `sd`.
    fn uniform(&mut self, sd: f64) -> f32 {
        ((self.unit() * 2.0 - 1.0) * sd * 3f64.sqrt()) as f32
    }
    /// Standard normal (Box-Muller).
    fn normal(&mut self) -> f64 {
        let u1 = self.unit().max(1e-300);
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

/// The standard normal CDF (erfc by Numerical Recipes' Chebyshev fit,
/// relative error below 1.2e-7).
fn normal_cdf(x: f64) -> f64 {
    let z = x.abs() / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.5 * z);
    let erfc = t
        * (-z * z - 1.265_512_23
            + t * (1.000_023_68
                + t * (0.374_091_96
                    + t * (0.096_784_18
                        + t * (-0.186_288_06
                            + t * (0.278_868_07
                                + t * (-1.135_203_98
                                    + t * (1.488_515_87
                                        + t * (-0.822_152_23 + t * 0.170_872_77)))))))))
            .exp();
    if x >= 0.0 {
        1.0 - 0.5 * erfc
    } else {
        0.5 * erfc
    }
}

/// The x with `normal_cdf(x) == p` (bisection).
pub fn normal_quantile(p: f64) -> f64 {
    let (mut lo, mut hi) = (-10.0f64, 10.0f64);
    for _ in 0..100 {
        let mid = 0.5 * (lo + hi);
        if normal_cdf(mid) < p {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

/// One tensor to write: name, ggml dims, storage type.
struct Planned {
    name: String,
    dims: Vec<u64>,
    ty: GgmlType,
}

fn tensors(spec: &SynthSpec, outtype: GgmlType) -> Vec<Planned> {
    let (d, ff, kv) = (
        spec.n_embd as u64,
        spec.n_ff as u64,
        (spec.n_head_kv * spec.head_dim()) as u64,
    );
    let mat = |name: String, n_in: u64, n_out: u64| Planned {
        ty: plan::matrix_type(outtype, n_in),
        name,
        dims: vec![n_in, n_out],
    };
    let vec = |name: String, n: u64| Planned {
        name,
        dims: vec![n],
        ty: GgmlType::F32,
    };
    let mut out = vec![mat("token_embd.weight".into(), d, spec.n_vocab as u64)];
    for l in 0..spec.n_layer {
        let b = |s: &str| format!("blk.{l}.{s}");
        out.push(vec(b("attn_norm.weight"), d));
        out.push(mat(b("attn_q.weight"), d, d));
        out.push(mat(b("attn_k.weight"), d, kv));
        out.push(mat(b("attn_v.weight"), d, kv));
        out.push(mat(b("attn_output.weight"), d, d));
        out.push(vec(b("ffn_norm.weight"), d));
        out.push(mat(b("ffn_gate.weight"), d, ff));
        out.push(mat(b("ffn_up.weight"), d, ff));
        out.push(mat(b("ffn_down.weight"), ff, d));
    }
    for r in 0..spec.n_regions() {
        out.push(vec(format!("sub.{r}.score.weight"), d));
        out.push(vec(format!("sub.{r}.bypass.weight"), d));
    }
    out.push(vec("output_norm.weight".into(), d));
    out.push(mat("output.weight".into(), d, spec.n_vocab as u64));
    out
}

/// The values of one tensor (row-major, rows of `dims[0]`).
fn values(spec: &SynthSpec, t: &Planned) -> Vec<f32> {
    let n_in = t.dims[0] as usize;
    let n: usize = t.dims.iter().product::<u64>() as usize;
    let mut rng = Rng::new(spec.seed, &t.name);
    let reserved = 1 + spec.n_regions();
    let name = t.name.as_str();
    if name.ends_with("_norm.weight") {
        return vec![1.0; n];
    }
    if let Some(r) = name
        .strip_prefix("sub.")
        .and_then(|s| s.strip_suffix(".score.weight"))
    {
        let r: usize = r.parse().expect("our own name");
        let mut w = vec![0.0f32; n];
        w[0] = normal_quantile(spec.keep) as f32;
        w[1 + r] = 1.0;
        return w;
    }
    if name.ends_with(".bypass.weight") {
        return (0..n).map(|_| 0.25 + 0.5 * rng.unit() as f32).collect();
    }
    if name == "token_embd.weight" {
        let mut v: Vec<f32> = (0..n).map(|_| rng.uniform(1.0)).collect();
        for row in v.chunks_mut(n_in) {
            row[0] = 1.0;
            for c in row.iter_mut().take(reserved).skip(1) {
                *c = rng.normal() as f32;
            }
        }
        return v;
    }
    let writes_residual = name.ends_with("attn_output.weight") || name.ends_with("ffn_down.weight");
    let mut sd = 1.0 / (n_in as f64).sqrt();
    if writes_residual {
        sd /= (2.0 * spec.n_layer as f64).sqrt();
    }
    let mut v: Vec<f32> = (0..n).map(|_| rng.uniform(sd)).collect();
    if writes_residual {
        // the reserved channels are output rows 0..reserved
        v[..reserved * n_in].fill(0.0);
    }
    v
}

/// A generated SentencePiece-style vocabulary (`llama` model): unknown,
/// BOS, EOS, the 256 byte tokens, then filler pieces, so that any text
/// tokenizes (mostly as bytes) in llama.cpp and in subllm.
fn generated_vocab(n_vocab: usize) -> Vec<(String, MetaValue)> {
    let mut tokens = vec!["<unk>".to_string(), "<s>".into(), "</s>".into()];
    let mut types = vec![2i32, 3, 3];
    for b in 0..=255u32 {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(6);
    }
    let mut i = 0usize;
    while tokens.len() < n_vocab {
        tokens.push(format!("\u{2581}w{i}"));
        types.push(1);
        i += 1;
    }
    tokens.truncate(n_vocab);
    types.truncate(n_vocab);
    let scores: Vec<f32> = (0..tokens.len()).map(|i| -(i as f32)).collect();
    vec![
        (
            "tokenizer.ggml.model".into(),
            MetaValue::String("llama".into()),
        ),
        (
            "tokenizer.ggml.pre".into(),
            MetaValue::String("default".into()),
        ),
        (
            "tokenizer.ggml.tokens".into(),
            MetaValue::Array(MetaArray::String(tokens)),
        ),
        (
            "tokenizer.ggml.scores".into(),
            MetaValue::Array(MetaArray::F32(scores)),
        ),
        (
            "tokenizer.ggml.token_type".into(),
            MetaValue::Array(MetaArray::I32(types)),
        ),
        ("tokenizer.ggml.unknown_token_id".into(), MetaValue::U32(0)),
        ("tokenizer.ggml.bos_token_id".into(), MetaValue::U32(1)),
        ("tokenizer.ggml.eos_token_id".into(), MetaValue::U32(2)),
    ]
}

/// Writes a synthetic model of `spec` to `output` (atomically), with the
/// SentencePiece `tokenizer.model` at `tokenizer` if given (its size must
/// not exceed the vocabulary) or a generated byte-level vocabulary.
pub fn synthesize(
    spec: &SynthSpec,
    output: &Path,
    outtype: GgmlType,
    tokenizer: Option<&Path>,
    on_event: &mut dyn FnMut(Event),
) -> Result<Summary, ConvertError> {
    spec.validate()?;
    let arch = spec.arch();
    let mut w = GgufWriter::new();
    w.set_str("general.architecture", arch)?;
    w.set_str(
        "general.name",
        format!("synthetic {arch} d{} x{}", spec.n_embd, spec.n_layer),
    )?;
    w.set_u32("general.file_type", plan::file_type(outtype))?;
    if outtype.block_len() > 1 {
        w.set_u32("general.quantization_version", 2)?;
    }
    let k = |s: &str| format!("{arch}.{s}");
    w.set_u32(k("context_length"), spec.n_ctx as u32)?;
    w.set_u32(k("embedding_length"), spec.n_embd as u32)?;
    w.set_u32(k("feed_forward_length"), spec.n_ff as u32)?;
    w.set_u32(k("block_count"), spec.n_layer as u32)?;
    w.set_u32(k("attention.head_count"), spec.n_head as u32)?;
    w.set_u32(k("attention.head_count_kv"), spec.n_head_kv as u32)?;
    w.set_f32(k("attention.layer_norm_rms_epsilon"), 1e-5)?;
    w.set_f32(k("rope.freq_base"), 10000.0)?;
    w.set_u32(k("rope.dimension_count"), spec.head_dim() as u32)?;
    w.set_u32(k("vocab_size"), spec.n_vocab as u32)?;
    if let Some(s) = &spec.structure {
        w.set_str("subllm.structure", s.clone())?;
        w.set_f32("subllm.synthetic.keep", spec.keep as f32)?;
    }
    let tok = match tokenizer {
        Some(p) => {
            let b = std::fs::read(p).map_err(|e| ConvertError::io(p, e))?;
            crate::tokenizer::from_sentencepiece(&b, spec.n_vocab as u64)?
        }
        None => generated_vocab(spec.n_vocab),
    };
    for (key, v) in tok {
        w.set(key, v)?;
    }
    let planned = tensors(spec, outtype);
    let tensors = planned
        .iter()
        .map(|p| (p.name.as_str(), p.dims.as_slice(), p.ty));
    let summary = crate::add_tensors(&mut w, arch, tensors, on_event)?;
    crate::write_atomically(output, |file| {
        let mut tw = w.begin(BufWriter::with_capacity(1 << 20, file))?;
        for p in &planned {
            let data = values(spec, p);
            let bytes = quantize_rows(p.ty, p.dims[0] as usize, &data)?;
            tw.write_tensor(&p.name, &bytes)?;
            on_event(Event::Tensor {
                name: &p.name,
                ty: p.ty,
                bytes: bytes.len() as u64,
            });
        }
        let buf = tw.finish()?;
        buf.into_inner()
            .map_err(|e| ConvertError::io(output, e.into_error()))
    })?;
    Ok(summary)
}

/// Quantizes rows of `row` values in parallel.
fn quantize_rows(ty: GgmlType, row: usize, data: &[f32]) -> Result<Vec<u8>, ConvertError> {
    use rayon::prelude::*;
    let k = kernels_for(ty)?;
    let rb = ty.row_bytes(row as u64).expect("planned") as usize;
    let rows = data.len() / row;
    let mut out = vec![0u8; rows * rb];
    out.par_chunks_mut(rb)
        .zip(data.par_chunks(row))
        .try_for_each(|(o, x)| k.quantize(x, o))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantile_inverts_the_cdf() {
        for p in [0.1, 0.41, 0.5, 0.64, 0.9] {
            let x = normal_quantile(p);
            assert!((normal_cdf(x) - p).abs() < 1e-6, "{p}");
        }
        assert!((normal_quantile(0.64) - 0.358_46).abs() < 1e-4);
        assert!((normal_cdf(1.0) - 0.841_344_746).abs() < 1e-6);
    }

    #[test]
    fn specs_parse_and_reject() {
        let s = SynthSpec::parse("subllm-1.3b").unwrap();
        assert_eq!(s.n_layer, 24);
        assert_eq!(s.n_regions(), 2);
        let s = SynthSpec::parse("llama-1.1b,layers=3,ctx=512").unwrap();
        assert_eq!((s.n_layer, s.n_head_kv, s.n_ctx), (3, 4, 512));
        let s = SynthSpec::parse("d=256,heads=4,ff=512,structure=TT(T)T,keep=0.5").unwrap();
        assert_eq!((s.n_embd, s.n_layer, s.keep), (256, 4, 0.5));
        for bad in [
            "",
            "gpt-5",
            "d=100",
            "heads=7",
            "keep=1.5",
            "structure=TT(T",
            "subllm-1.3b,layers=3",
            "x=1",
            "d=abc",
        ] {
            assert!(SynthSpec::parse(bad).is_err(), "{bad:?} should fail");
        }
    }
}
