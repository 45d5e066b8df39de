//! subllm-convert: official SUBLLM checkpoints (safetensors or PyTorch zip)
//! and Hugging Face Llama directories to one GGUF file.
//!
//! Keys, tensor names and the RoPE convention are documented in
//! docs/gguf-subllm.md.

pub mod config;
pub mod error;
pub mod pickle;
pub mod plan;
pub mod source;
pub mod synthetic;
pub mod tokenizer;
pub mod zip;

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use serde_json::Value;
use subllm_gguf::GgufWriter;
use subllm_kernels::kernels_for;
use subllm_kernels::GgmlType;

pub use config::{Kind, ModelConfig};
pub use error::ConvertError;
use plan::Planned;
use source::Source;

/// What to convert and how.
#[derive(Debug, Clone)]
pub struct Options {
    pub model_dir: PathBuf,
    pub output: PathBuf,
    pub outtype: GgmlType,
    /// A weights file to use instead of searching `model_dir`.
    pub weights: Option<PathBuf>,
    /// `general.name`; defaults to the model directory's name.
    pub name: Option<String>,
}

/// Progress reports, one per tensor.
pub enum Event<'a> {
    Start {
        tensors: usize,
        bytes: u64,
    },
    Tensor {
        name: &'a str,
        ty: GgmlType,
        bytes: u64,
    },
}

/// What was written.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub architecture: String,
    pub parameters: u64,
    pub bytes: u64,
    /// (type, tensors, parameters)
    pub per_type: Vec<(GgmlType, usize, u64)>,
}

/// Adds each planned tensor (name, ggml dims, type) to the writer's table,
/// counts it, and reports the start of the data; the summary of what will
/// be written.
pub(crate) fn add_tensors<'a>(
    w: &mut GgufWriter,
    arch: &str,
    tensors: impl Iterator<Item = (&'a str, &'a [u64], GgmlType)>,
    on_event: &mut dyn FnMut(Event),
) -> Result<Summary, ConvertError> {
    let mut s = Summary {
        architecture: arch.into(),
        ..Default::default()
    };
    let mut count = 0;
    for (name, dims, ty) in tensors {
        w.add_tensor(name, dims, ty)?;
        let n: u64 = dims.iter().product();
        s.parameters += n;
        s.bytes += ty.row_bytes(n).expect("planned rows fit their type");
        match s.per_type.iter_mut().find(|e| e.0 == ty) {
            Some(e) => {
                e.1 += 1;
                e.2 += n;
            }
            None => s.per_type.push((ty, 1, n)),
        }
        count += 1;
    }
    on_event(Event::Start {
        tensors: count,
        bytes: s.bytes,
    });
    Ok(s)
}

/// Largest config or tokenizer file read into memory.
pub const MAX_SMALL_FILE: u64 = 256 << 20;

/// Opens a checkpoint file: regular files only (`subllm::files`).
pub(crate) fn open_regular(path: &Path) -> Result<File, ConvertError> {
    subllm_gguf::files::open_regular(path).map_err(|e| ConvertError::io(path, e))
}

/// Reads a config or tokenizer file: a regular file of at most
/// [`MAX_SMALL_FILE`] bytes.
pub(crate) fn read_small(path: &Path) -> Result<Vec<u8>, ConvertError> {
    subllm_gguf::files::read_bounded(path, MAX_SMALL_FILE).map_err(|e| ConvertError::io(path, e))
}

fn read_json(path: &Path) -> Result<Value, ConvertError> {
    let b = read_small(path)?;
    serde_json::from_slice(&b).map_err(|e| ConvertError::Json {
        path: path.into(),
        source: e,
    })
}

/// Finds the weights in `dir`: a sharded safetensors index, one
/// safetensors file, or one PyTorch checkpoint.
pub fn find_weights(dir: &Path, explicit: Option<&Path>) -> Result<Source, ConvertError> {
    let is_torch = |p: &Path| {
        p.extension()
            .is_some_and(|e| e == "pt" || e == "bin" || e == "pth")
    };
    if let Some(p) = explicit {
        return if is_torch(p) {
            Source::torch(p)
        } else {
            Source::safetensors(&[p.to_path_buf()])
        };
    }
    let index = dir.join("model.safetensors.index.json");
    if index.exists() {
        let v = read_json(&index)?;
        let map = v
            .get("weight_map")
            .and_then(Value::as_object)
            .ok_or_else(|| {
                ConvertError::NoWeights(format!("{}: no weight_map", index.display()))
            })?;
        let mut files: Vec<String> = Vec::new();
        for f in map.values() {
            let f = f.as_str().ok_or_else(|| {
                ConvertError::NoWeights("weight_map values must be file names".into())
            })?;
            if f.contains('/') || f.contains('\\') || f.starts_with('.') {
                return Err(ConvertError::NoWeights(format!(
                    "shard name {f:?} leaves the model directory"
                )));
            }
            if !files.iter().any(|x| x == f) {
                files.push(f.to_string());
            }
        }
        files.sort();
        let paths: Vec<PathBuf> = files.iter().map(|f| dir.join(f)).collect();
        return Source::safetensors(&paths);
    }
    let entries = std::fs::read_dir(dir).map_err(|e| ConvertError::io(dir, e))?;
    let mut st = Vec::new();
    let mut pt = Vec::new();
    for e in entries {
        let p = e.map_err(|e| ConvertError::io(dir, e))?.path();
        if p.extension().is_some_and(|e| e == "safetensors") {
            st.push(p);
        } else if is_torch(&p) {
            pt.push(p);
        }
    }
    st.sort();
    pt.sort();
    match (st.len(), pt.len()) {
        (1, _) => Source::safetensors(&st),
        (0, 1) => Source::torch(&pt[0]),
        (0, 0) => Err(ConvertError::NoWeights(format!(
            "{}: no *.safetensors, model.safetensors.index.json or PyTorch checkpoint (*.pt, *.bin)",
            dir.display()
        ))),
        _ => Err(ConvertError::NoWeights(format!(
            "{}: several weight files and no index; name one with --weights",
            dir.display()
        ))),
    }
}

/// Converts as `opts` says, reporting progress to `on_event`. The output
/// appears only when complete (written to a temporary file, then renamed).
pub fn convert(opts: &Options, on_event: &mut dyn FnMut(Event)) -> Result<Summary, ConvertError> {
    let cfg = config::parse(&read_json(&opts.model_dir.join("config.json"))?)?;
    let src = find_weights(&opts.model_dir, opts.weights.as_deref())?;
    let planned = plan::plan(&cfg, &src, opts.outtype)?;
    let tok = tokenizer::from_dir(&opts.model_dir, cfg.vocab)?;

    let arch = if cfg.has_regions() { "subllm" } else { "llama" };
    let name = opts.name.clone().unwrap_or_else(|| {
        opts.model_dir
            .canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| arch.into())
    });
    let (w, summary) = header(&cfg, &name, opts.outtype, tok, &planned, on_event)?;
    write_atomically(&opts.output, |file| {
        let buf = write(
            BufWriter::with_capacity(1 << 20, file),
            w,
            &planned,
            &src,
            on_event,
        )?;
        buf.into_inner()
            .map_err(|e| ConvertError::io(&opts.output, e.into_error()))
    })?;
    Ok(summary)
}

/// Converts a checkpoint held in memory (`config.json`'s bytes and an opened
/// [`Source`]; no tokenizer) to GGUF bytes, which the engine then loads, as
/// [`convert`] does before it commits a file: what the fuzz targets run.
pub fn convert_in_memory(
    config_json: &[u8],
    src: &Source,
    outtype: GgmlType,
) -> Result<Vec<u8>, ConvertError> {
    let value: Value = serde_json::from_slice(config_json).map_err(|e| ConvertError::Json {
        path: "config.json".into(),
        source: e,
    })?;
    let cfg = config::parse(&value)?;
    let planned = plan::plan(&cfg, src, outtype)?;
    let (w, _) = header(
        &cfg,
        "in-memory",
        outtype,
        Vec::new(),
        &planned,
        &mut |_| {},
    )?;
    let bytes = write(Vec::new(), w, &planned, src, &mut |_| {})?;
    let file = subllm_gguf::GgufFile::from_bytes(bytes.clone())
        .map_err(|e| ConvertError::Unloadable(e.to_string()))?;
    subllm::Model::from_gguf(file).map_err(|e| ConvertError::Unloadable(e.to_string()))?;
    Ok(bytes)
}

/// The metadata and tensor table of the file `cfg` and `planned` describe.
fn header(
    cfg: &ModelConfig,
    name: &str,
    outtype: GgmlType,
    tok: tokenizer::Kv,
    planned: &[Planned],
    on_event: &mut dyn FnMut(Event),
) -> Result<(GgufWriter, Summary), ConvertError> {
    let arch = if cfg.has_regions() { "subllm" } else { "llama" };
    let mut w = GgufWriter::new();
    w.set_str("general.architecture", arch)?;
    w.set_str("general.name", name)?;
    w.set_u32("general.file_type", plan::file_type(outtype))?;
    if outtype.block_len() > 1 {
        w.set_u32("general.quantization_version", 2)?;
    }
    let k = |s: &str| format!("{arch}.{s}");
    w.set_u32(k("context_length"), cfg.context as u32)?;
    w.set_u32(k("embedding_length"), cfg.dim as u32)?;
    w.set_u32(k("feed_forward_length"), cfg.ffn as u32)?;
    w.set_u32(k("block_count"), cfg.layers as u32)?;
    w.set_u32(k("attention.head_count"), cfg.heads as u32)?;
    w.set_u32(k("attention.head_count_kv"), cfg.kv_heads as u32)?;
    w.set_f32(k("attention.layer_norm_rms_epsilon"), cfg.rms_eps)?;
    w.set_f32(k("rope.freq_base"), cfg.rope_base)?;
    w.set_u32(k("rope.dimension_count"), cfg.head_dim() as u32)?;
    w.set_u32(k("vocab_size"), cfg.vocab as u32)?;
    if arch == "subllm" {
        w.set_str("subllm.structure", cfg.structure.clone())?;
    }
    if tok.is_empty() {
        // token ids only; llama.cpp calls this vocabulary type "none"
        w.set_str("tokenizer.ggml.model", "none")?;
    }
    for (key, v) in tok {
        w.set(key, v)?;
    }
    let have = |w: &GgufWriter, key: &str| w.has(key);
    for (key, id) in [("bos", cfg.bos), ("eos", cfg.eos), ("padding", cfg.pad)] {
        let key = format!("tokenizer.ggml.{key}_token_id");
        if let Some(id) = id.filter(|&i| i < cfg.vocab) {
            if !have(&w, &key) {
                w.set_u32(key, id as u32)?;
            }
        }
    }

    let tensors = planned
        .iter()
        .map(|p| (p.name.as_str(), p.dims.as_slice(), p.ty));
    let summary = add_tensors(&mut w, arch, tensors, on_event)?;
    Ok((w, summary))
}

/// Writes `output` through `body`, which gets a new temporary file beside
/// it and returns the file when done (`subllm_gguf::outfile`: exclusive random
/// temporary, an existing output replaced only if it is a regular file,
/// synced, renamed; removed on any failure or panic). Before the rename the
/// file is loaded by the engine, so what we write, we can read: anything
/// the engine would reject fails here, at convert time.
pub(crate) fn write_atomically(
    output: &Path,
    body: impl FnOnce(File) -> Result<File, ConvertError>,
) -> Result<(), ConvertError> {
    subllm_gguf::outfile::write_checked(
        output,
        body,
        |tmp| {
            subllm::Model::load(tmp)
                .map(drop)
                .map_err(|e| ConvertError::Unloadable(e.to_string()))
        },
        |e| ConvertError::io(output, e),
    )
}

fn write<W: std::io::Write>(
    sink: W,
    w: GgufWriter,
    planned: &[Planned],
    src: &Source,
    on_event: &mut dyn FnMut(Event),
) -> Result<W, ConvertError> {
    let mut tw = w.begin(sink)?;
    let mut out = Vec::new();
    for p in planned {
        let data = src.load(&p.source)?;
        // rows are the last axis of a matrix; each element of a vector is a "row"
        let shape = src
            .get(&p.source)
            .map(|t| t.shape.as_slice())
            .unwrap_or(&[]);
        let row_len = if shape.len() >= 2 {
            shape[shape.len() - 1] as usize
        } else {
            1
        };
        let data = plan::apply(&p.transform, data, row_len.max(1));
        if let Some(i) = data.iter().position(|x| !x.is_finite()) {
            return Err(ConvertError::BadTensor {
                name: p.source.clone(),
                msg: format!("element {i} is {}", data[i]),
            });
        }
        out.clear();
        out.resize(
            p.ty.row_bytes(data.len() as u64).expect("planned") as usize,
            0,
        );
        kernels_for(p.ty)?.quantize(&data, &mut out)?;
        tw.write_tensor(&p.name, &out)?;
        on_event(Event::Tensor {
            name: &p.name,
            ty: p.ty,
            bytes: out.len() as u64,
        });
    }
    Ok(tw.finish()?)
}
