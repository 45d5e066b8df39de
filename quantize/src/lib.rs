//! subllm-quantize: re-quantizes a GGUF file to another type, choosing each
//! tensor's type as llama.cpp's `llama-quantize` does (its per-tensor
//! mixtures for the `_S` / `_M` types, the output and embedding rules, and
//! the fallbacks for rows that are not a whole number of blocks), with
//! ggml's reference quantizers, so the tensors come out byte for byte as
//! llama.cpp writes them.
//!
//! The rules (llama.cpp's `llama_tensor_get_type`, for the types here and
//! for dense models; no mixture-of-experts):
//! - A tensor is quantized if it has two or more dimensions, its name ends
//!   in `weight` and is not a norm (`_norm.weight`), and it is not
//!   `output.weight` under `--leave-output-tensor`. Anything else (norms,
//!   SUBLLM's scorer and bypass vectors) is copied as it is.
//! - `--token-embedding-type` / `--output-tensor-type` set those tensors'
//!   types outright. Otherwise, unless `--pure`:
//! - `output.weight` (or `token_embd.weight` when the model has no separate
//!   output) becomes Q6_K, or Q8_0 when its rows are not a whole number of
//!   the type's blocks or the type is Q8_0 already.
//! - `attn_v` (and fused `attn_qkv`): Q4_K_M and Q5_K_M use Q6_K in the
//!   "more bits" layers (the first and last eighth, and every third layer
//!   between); Q4_K_S uses Q5_K in the first four; a 70B Llama (80 blocks)
//!   gets Q5_K instead of Q4_K.
//! - `ffn_down`: Q4_K_M and Q5_K_M use Q6_K in the more-bits layers; Q4_K_S
//!   uses Q5_K in the first eighth.
//! - Then, for every quantized tensor, a row that is not a whole number of
//!   blocks falls back: Q4_K to Q5_0, Q5_K to Q5_1, Q6_K to Q8_0, and to F16
//!   where even that does not divide it.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

mod imatrix;
pub use imatrix::Imatrix;

use rayon::prelude::*;
use subllm_gguf::{GgufFile, GgufWriter, MetaValue, TensorInfo};
use subllm_kernels::kernels_for;
use subllm_kernels::GgmlType;

#[derive(Debug, thiserror::Error)]
pub enum QuantizeError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Gguf(#[from] subllm_gguf::GgufError),
    #[error("{0}")]
    Engine(#[from] subllm::Error),
    #[error(transparent)]
    Quant(#[from] subllm_kernels::QuantError),
    #[error("unknown type '{0}' (one of: Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K_S, Q4_K_M, Q5_K_S, Q5_K_M, Q6_K, F16, BF16, F32)")]
    UnknownType(String),
    #[error("unknown tensor type '{0}' (one of: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K)")]
    UnknownTensorType(String),
    #[error("tensor '{name}' is {from}: requantizing an already quantized tensor loses precision twice; pass --allow-requantize to do it anyway")]
    Requantize { name: String, from: GgmlType },
    #[error(
        "tensor '{name}': rows of {row} elements are not a whole number of {ty} blocks ({block})"
    )]
    Shape {
        name: String,
        row: u64,
        ty: GgmlType,
        block: usize,
    },
    #[error("tensor '{name}': element {index} is {value} (not finite) after dequantizing")]
    NotFinite {
        name: String,
        index: usize,
        value: f32,
    },
    #[error("the file written cannot be loaded back: {0}")]
    Unloadable(String),
    #[error("importance matrix {path}: {why}")]
    Imatrix { path: PathBuf, why: String },
    #[error("importance matrix: {values} values for {name}, whose rows have {row}")]
    ImatrixSize {
        name: String,
        values: usize,
        row: u64,
    },
}

pub use subllm_gguf::ftype::Ftype;

/// Parses a file type name (any case; `Q4_K` and `Q5_K` mean the `_M`
/// mixtures, as in llama-quantize) or llama.cpp's file type number.
pub fn parse_ftype(s: &str) -> Result<Ftype, QuantizeError> {
    let u = s.to_ascii_uppercase();
    let u = match u.as_str() {
        "Q4_K" => "Q4_K_M",
        "Q5_K" => "Q5_K_M",
        other => other,
    };
    Ftype::from_name(u)
        .or_else(|| s.parse::<u32>().ok().and_then(Ftype::from_id))
        .ok_or_else(|| QuantizeError::UnknownType(s.into()))
}

/// The tensor types subllm-quantize writes.
pub const TENSOR_TYPES: [GgmlType; 11] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q4K,
    GgmlType::Q5K,
    GgmlType::Q6K,
];

/// A tensor type for `--output-tensor-type` / `--token-embedding-type`.
pub fn parse_tensor_type(s: &str) -> Result<GgmlType, QuantizeError> {
    GgmlType::from_name(s)
        .filter(|t| TENSOR_TYPES.contains(t))
        .ok_or_else(|| QuantizeError::UnknownTensorType(s.into()))
}

#[derive(Clone, Debug)]
pub struct Options {
    pub ftype: Ftype,
    /// Quantize tensors that are already quantized (else an error).
    pub allow_requantize: bool,
    /// Every quantizable tensor gets the default type: no mixture.
    pub pure: bool,
    /// Copy `output.weight` as it is.
    pub leave_output_tensor: bool,
    pub output_tensor_type: Option<GgmlType>,
    pub token_embedding_type: Option<GgmlType>,
    /// Worker threads (0: one per hardware thread).
    pub threads: usize,
    /// Importance weights for the quantizers that take them.
    pub imatrix: Option<std::sync::Arc<Imatrix>>,
}

impl Options {
    pub fn new(ftype: Ftype) -> Options {
        Options {
            ftype,
            allow_requantize: false,
            pure: false,
            leave_output_tensor: false,
            output_tensor_type: None,
            token_embedding_type: None,
            threads: 0,
            imatrix: None,
        }
    }
}

/// One tensor's plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Planned {
    pub name: String,
    pub dims: Vec<u64>,
    pub from: GgmlType,
    pub to: GgmlType,
    /// The mixture's type did not fit the rows and this is its fallback.
    pub fallback: bool,
    /// Quantized with importance weights from the imatrix.
    pub weighted: bool,
    /// An imatrix was given, the type takes weights, but the imatrix has
    /// none for this tensor (llama-quantize goes on without, too).
    pub no_weights: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Category {
    Output,
    TokenEmbd,
    AttnV,
    FfnDown,
    Other,
}

fn category(name: &str) -> Category {
    if name == "output.weight" {
        Category::Output
    } else if name == "token_embd.weight" {
        Category::TokenEmbd
    } else if name.contains("attn_v.weight") || name.contains("attn_qkv.weight") {
        Category::AttnV
    } else if name.contains("ffn_down") {
        Category::FfnDown
    } else {
        Category::Other
    }
}

fn allows_quantization(t: &TensorInfo, opts: &Options) -> bool {
    t.dims.len() >= 2
        && t.name.ends_with("weight")
        && !t.name.contains("_norm.weight")
        && !(opts.leave_output_tensor && t.name == "output.weight")
}

/// The first and last eighth of the layers, and every third in between.
fn use_more_bits(i: usize, n: usize) -> bool {
    i < n / 8 || i >= 7 * n / 8 || (i as isize - (n / 8) as isize).rem_euclid(3) == 2
}

struct Counters {
    imatrix: bool,
    n_attn_v: usize,
    i_attn_v: usize,
    n_layer: usize,
    i_ffn_down: usize,
    tied: bool,
    is_70b: bool,
}

/// The type llama.cpp's mixture gives a quantizable tensor (before the
/// fallback for its row length).
fn mixture(c: &mut Counters, t: &TensorInfo, ftype: Ftype, mut ty: GgmlType) -> GgmlType {
    use Ftype::*;
    let cat = category(&t.name);
    if cat == Category::Output || (c.tied && cat == Category::TokenEmbd) {
        let row = t.dims[0];
        if !row.is_multiple_of(ty.block_len() as u64) {
            ty = GgmlType::Q8_0;
        } else if ty != GgmlType::Q8_0 {
            ty = GgmlType::Q6K;
        }
    } else if cat == Category::AttnV {
        if matches!(ftype, Q4_K_M | Q5_K_M) && use_more_bits(c.i_attn_v, c.n_attn_v) {
            ty = GgmlType::Q6K;
        } else if ftype == Q4_K_S && c.i_attn_v < 4 {
            ty = GgmlType::Q5K;
        }
        if c.is_70b && ty == GgmlType::Q4K {
            ty = GgmlType::Q5K;
        }
        c.i_attn_v += 1;
    } else if cat == Category::FfnDown {
        let (i, n) = (c.i_ffn_down, c.n_layer);
        if matches!(ftype, Q4_K_M | Q5_K_M) && use_more_bits(i, n) {
            ty = GgmlType::Q6K;
        } else if ftype == Q4_K_S && i < n / 8 {
            ty = GgmlType::Q5K;
        } else if matches!(ftype, Q4_0 | Q5_0) && c.imatrix && i < n / 8 {
            // llama.cpp guards the first eighth of ffn_down when weighted
            ty = if ftype == Q4_0 {
                GgmlType::Q4_1
            } else {
                GgmlType::Q5_1
            };
        }
        c.i_ffn_down += 1;
    }
    ty
}

fn block_count(f: &GgufFile) -> usize {
    let arch = f.get_str("general.architecture").unwrap_or("llama");
    f.get_u64(&format!("{arch}.block_count"))
        .map_or(0, |n| n as usize)
}

/// The block number of `blk.N.*` names; -1 for the others.
fn layer_of(name: &str) -> i64 {
    let Some(rest) = name.strip_prefix("blk.") else {
        return -1;
    };
    let digits: String = rest
        .chars()
        .enumerate()
        .take_while(|&(i, c)| c.is_ascii_digit() || (i == 0 && (c == '-' || c == '+')))
        .map(|(_, c)| c)
        .collect();
    digits.parse().unwrap_or(-1)
}

/// The tensors in llama.cpp's order: by block number (tensors outside the
/// blocks first), then by name. The mixture counts attn_v and ffn_down
/// tensors in this order, and the output is written in it.
fn ordered(f: &GgufFile) -> Vec<&TensorInfo> {
    let mut v: Vec<&TensorInfo> = f.tensors().iter().collect();
    v.sort_by(|a, b| {
        (layer_of(&a.name), a.name.as_bytes()).cmp(&(layer_of(&b.name), b.name.as_bytes()))
    });
    v
}

/// Each tensor's type in the output, in llama.cpp's order ([`ordered`]).
pub fn plan(f: &GgufFile, opts: &Options) -> Result<Vec<Planned>, QuantizeError> {
    let default = opts.ftype.default_type();
    let arch = f.get_str("general.architecture").unwrap_or("llama");
    let n_layer = block_count(f);
    let mut c = Counters {
        imatrix: opts.imatrix.is_some(),
        n_attn_v: f
            .tensors()
            .iter()
            .filter(|t| category(&t.name) == Category::AttnV)
            .count(),
        i_attn_v: 0,
        n_layer,
        i_ffn_down: 0,
        tied: f.tensor_info("output.weight").is_none(),
        is_70b: arch == "llama" && n_layer == 80,
    };
    let mut out = Vec::with_capacity(f.tensors().len());
    for t in ordered(f) {
        let mut fell_back = false;
        let to = if !allows_quantization(t, opts) {
            t.ty
        } else if let (Some(ty), Category::TokenEmbd) =
            (opts.token_embedding_type, category(&t.name))
        {
            ty
        } else if let (Some(ty), Category::Output) = (opts.output_tensor_type, category(&t.name)) {
            ty
        } else if default.block_len() > 1 {
            let mut ty = default;
            if !opts.pure {
                ty = match (opts.output_tensor_type, c.tied, category(&t.name)) {
                    // a tied embedding is quantized as the output would be
                    (Some(o), true, Category::TokenEmbd) => o,
                    _ => mixture(&mut c, t, opts.ftype, ty),
                };
            }
            let fb = ty.fallback_for_row(t.dims[0]);
            fell_back = fb != ty;
            fb
        } else {
            default
        };
        if !t.dims[0].is_multiple_of(to.block_len() as u64) {
            return Err(QuantizeError::Shape {
                name: t.name.clone(),
                row: t.dims[0],
                ty: to,
                block: to.block_len(),
            });
        }
        if to != t.ty && t.ty.block_len() > 1 && !opts.allow_requantize {
            return Err(QuantizeError::Requantize {
                name: t.name.clone(),
                from: t.ty,
            });
        }
        let (mut weighted, mut no_weights) = (false, false);
        if let Some(im) = &opts.imatrix {
            if to != t.ty && kernels_for(to)?.weighted {
                match im.entries.get(&t.name) {
                    // one expert: a 2-D tensor's importance is one row's worth
                    Some(e) if e.len() as u64 == t.dims[0] && t.dims.len() <= 2 => weighted = true,
                    // llama-quantize lets a token embedding of the wrong
                    // size go without weights, and stops on any other
                    Some(_) if category(&t.name) == Category::TokenEmbd => no_weights = true,
                    Some(e) => {
                        return Err(QuantizeError::ImatrixSize {
                            name: t.name.clone(),
                            values: e.len(),
                            row: t.dims[0],
                        })
                    }
                    None => no_weights = true,
                }
            }
        }
        out.push(Planned {
            name: t.name.clone(),
            dims: t.dims.clone(),
            from: t.ty,
            to,
            fallback: fell_back,
            weighted,
            no_weights,
        });
    }
    Ok(out)
}

/// Progress reports.
pub enum Event<'a> {
    Start { tensors: usize },
    Tensor { planned: &'a Planned, bytes: u64 },
}

/// What was written.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub parameters: u64,
    /// (type, tensors, parameters) in the output
    pub per_type: Vec<(GgmlType, usize, u64)>,
    pub fallbacks: usize,
    /// Tensors quantized with importance weights.
    pub weighted: usize,
    /// Tensors the imatrix had no weights for.
    pub no_weights: Vec<String>,
}

/// f32 values per slab: a tensor is dequantized and quantized this many
/// values at a time, so memory stays bounded whatever the tensor's size.
const SLAB: usize = 1 << 24;

/// Quantizes `input` to `output` (written atomically: an exclusive
/// temporary beside it, loaded back by the engine before it is renamed).
pub fn quantize(
    input: &Path,
    output: &Path,
    opts: &Options,
    on_event: &mut dyn FnMut(Event),
) -> Result<Summary, QuantizeError> {
    // what the engine cannot run, we do not rewrite; the model's parsed
    // file is the one we read from (mapped and checked once)
    let model = subllm::Model::load(input)?;
    let f = model.gguf();
    let planned = plan(f, opts)?;

    let mut w = GgufWriter::new();
    for (k, v) in f.metadata() {
        w.set(k.clone(), v.clone())?;
    }
    w.set("general.quantization_version", MetaValue::U32(2))?;
    w.set("general.file_type", MetaValue::U32(opts.ftype.id()))?;
    if let Some(im) = &opts.imatrix {
        for (k, v) in im.metadata() {
            w.set(k.to_string(), v)?;
        }
    }
    let mut s = Summary::default();
    for p in &planned {
        w.add_tensor(&p.name, &p.dims, p.to)?;
        let n: u64 = p.dims.iter().product();
        s.parameters += n;
        s.bytes_in += p.from.row_bytes(n).unwrap_or(0);
        s.bytes_out += p.to.row_bytes(n).unwrap_or(0);
        s.fallbacks += p.fallback as usize;
        s.weighted += p.weighted as usize;
        if p.no_weights {
            s.no_weights.push(p.name.clone());
        }
        match s.per_type.iter_mut().find(|e| e.0 == p.to) {
            Some(e) => {
                e.1 += 1;
                e.2 += n;
            }
            None => s.per_type.push((p.to, 1, n)),
        }
    }
    on_event(Event::Start {
        tensors: planned.len(),
    });

    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(subllm::session::effective_threads(opts.threads))
        .build()
        .map_err(|e| QuantizeError::Io {
            path: output.into(),
            source: std::io::Error::other(e),
        })?;
    let io = |e: std::io::Error| QuantizeError::Io {
        path: output.into(),
        source: e,
    };
    let body = |file: File| -> Result<File, QuantizeError> {
        let mut tw = w.begin(BufWriter::with_capacity(1 << 20, file))?;
        for p in &planned {
            let weights = match (&opts.imatrix, p.weighted) {
                (Some(im), true) => im.entries.get(&p.name).map(Vec::as_slice),
                _ => None,
            };
            write_tensor(f, p, weights, &pool, &mut tw)?;
            on_event(Event::Tensor {
                planned: p,
                bytes: p.to.row_bytes(p.dims.iter().product()).unwrap_or(0),
            });
        }
        tw.finish()?.into_inner().map_err(|e| io(e.into_error()))
    };
    let check = |tmp: &Path| {
        subllm::Model::load(tmp)
            .map(drop)
            .map_err(|e| QuantizeError::Unloadable(e.to_string()))
    };
    subllm_gguf::outfile::write_checked(output, body, check, io)?;
    Ok(s)
}

/// Writes one tensor's data: copied when its type stays, else dequantized
/// and quantized slab by slab, rows in parallel.
fn write_tensor<W: std::io::Write>(
    f: &GgufFile,
    p: &Planned,
    weights: Option<&[f32]>,
    pool: &rayon::ThreadPool,
    tw: &mut subllm_gguf::TensorDataWriter<W>,
) -> Result<(), QuantizeError> {
    let info = f
        .tensor_info(&p.name)
        .expect("planned from this file's tensors");
    let data = f.tensor_data(info);
    if p.from == p.to {
        tw.write_chunk(&p.name, data)?;
    } else {
        let row = p.dims[0] as usize;
        let rows_per_slab = (SLAB / row.max(1)).max(1);
        let src_row = p.from.row_bytes(row as u64).expect("checked by the reader") as usize;
        let dst_row = p.to.row_bytes(row as u64).expect("checked by plan") as usize;
        let (from, to) = (kernels_for(p.from)?, kernels_for(p.to)?);
        for slab in data.chunks(rows_per_slab * src_row) {
            let n_rows = slab.len() / src_row;
            let mut out = vec![0u8; n_rows * dst_row];
            let r: Result<(), QuantizeError> = pool.install(|| {
                slab.par_chunks(src_row)
                    .zip(out.par_chunks_mut(dst_row))
                    .enumerate()
                    .try_for_each(|(i, (src, dst))| {
                        let mut x = vec![0f32; row];
                        from.dequantize(src, &mut x)?;
                        if let Some(j) = x.iter().position(|v| !v.is_finite()) {
                            return Err(QuantizeError::NotFinite {
                                name: p.name.clone(),
                                index: (i * row + j),
                                value: x[j],
                            });
                        }
                        match weights {
                            Some(w) => to.quantize_row_weighted(&x, w, dst)?,
                            None => to.quantize(&x, dst)?,
                        }
                        Ok(())
                    })
            });
            r?;
            tw.write_chunk(&p.name, &out)?;
        }
    }
    Ok(())
}
