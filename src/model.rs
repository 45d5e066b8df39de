//! A loaded model: the mapped GGUF, its hyper-parameters, the architecture's
//! graph, and every weight checked for presence, shape and type.

use std::collections::HashMap;
use std::path::Path;

use subllm_kernels::{kernels_for, GgmlType, TypeKernels};
use subllm_models::graph::{Graph, Node};
use subllm_models::structure::Structure;
use subllm_models::{decoder, HParams};

use crate::error::{Error, Result};
use crate::gguf::GgufFile;

/// A weight matrix viewed in the mapped file: `n_out` rows of `n_in`.
#[derive(Clone, Copy)]
pub struct Weight<'a> {
    pub name: &'a str,
    pub ty: GgmlType,
    pub n_in: usize,
    pub n_out: usize,
    pub bytes: &'a [u8],
    pub kernels: &'static TypeKernels,
    /// The same rows re-laid out in groups of sixteen
    /// (`subllm_kernels::repack`), where this type and shape have packed
    /// kernels on this CPU.
    pub packed: Option<&'a [u8]>,
}

impl Weight<'_> {
    pub fn row_bytes(&self) -> usize {
        self.n_in / self.ty.block_len() * self.ty.block_bytes()
    }
    pub fn row(&self, j: usize) -> &[u8] {
        let b = self.row_bytes();
        &self.bytes[j * b..(j + 1) * b]
    }
}

pub struct Model {
    file: GgufFile,
    pub arch: String,
    pub hparams: HParams,
    pub graph: Graph,
    /// For each node, the values whose last use it is (freed after it runs).
    pub(crate) drops: Vec<Vec<usize>>,
    /// The matrices the graph reads, by id.
    matrices: Vec<Matrix>,
    /// Vector weights (norm gains, biases, scorers, bypass scales) as f32,
    /// by id.
    vectors: Vec<Vec<f32>>,
    /// For each node, the ids of its matrix and its vector (resolved at
    /// load, so a run looks nothing up by name).
    node_weights: Vec<(Option<usize>, Option<usize>)>,
    /// Ids by name, for [`Model::weight`] and [`Model::vector`].
    matrix_ids: HashMap<String, usize>,
    vector_ids: HashMap<String, usize>,
    tokenizer: Option<crate::tokenizer::Tokenizer>,
}

/// A matrix the graph reads: where its tensor is in the file, and its
/// copy re-laid out for the packed kernels (made at its first use, so
/// loading stays a map-and-check; `None` inside once found not packable),
/// where its type and shape have them.
struct Matrix {
    tensor: usize,
    packed: Option<std::sync::OnceLock<Option<Vec<u8>>>>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("arch", &self.arch)
            .field("hparams", &self.hparams)
            .finish()
    }
}

fn hp_err(m: impl Into<String>) -> Error {
    Error::HParams(m.into())
}

/// Upper bounds that keep a hostile file from asking for absurd buffers
/// (the converter refuses configs beyond them too).
pub const MAX_WIDTH: u64 = 1 << 17;
pub const MAX_LAYERS: u64 = 4096;
pub const MAX_VOCAB: u64 = 1 << 22;

fn read_hparams(f: &GgufFile, arch: &str) -> Result<HParams> {
    let key = |k: &str| format!("{arch}.{k}");
    let get = |k: &str| f.get_u64(&key(k)).map_err(Error::from);
    let bounded = |k: &str, max: u64| -> Result<usize> {
        let v = get(k)?;
        if v == 0 || v > max {
            return Err(hp_err(format!("{arch}.{k} = {v} is out of range")));
        }
        Ok(v as usize)
    };
    let n_embd = bounded("embedding_length", MAX_WIDTH)?;
    let n_ff = bounded("feed_forward_length", MAX_WIDTH * 8)?;
    let n_layer = bounded("block_count", MAX_LAYERS)?;
    let n_head = bounded("attention.head_count", MAX_WIDTH)?;
    let n_head_kv = match f.get(&key("attention.head_count_kv")) {
        Some(_) => bounded("attention.head_count_kv", MAX_WIDTH)?,
        None => n_head,
    };
    let head_dim = match f.get(&key("attention.key_length")) {
        Some(_) => bounded("attention.key_length", MAX_WIDTH)?,
        None => n_embd / n_head,
    };
    if head_dim * n_head != n_embd || head_dim % 2 != 0 || n_head % n_head_kv != 0 {
        return Err(hp_err(format!(
            "{n_head} heads of {head_dim} with {n_head_kv} KV heads do not fit a width of {n_embd}"
        )));
    }
    if let Some(v) = f.get(&key("rope.dimension_count")) {
        if v.as_u64() != Some(head_dim as u64) {
            return Err(hp_err(format!(
                "partial RoPE ({arch}.rope.dimension_count = {v}) is not supported"
            )));
        }
    }
    let float = |k: &str, default: f64| -> Result<f32> {
        match f.get(&key(k)) {
            None => Ok(default as f32),
            Some(_) => Ok(f.get_f64(&key(k))? as f32),
        }
    };
    let rms_eps = float("attention.layer_norm_rms_epsilon", 1e-5)?;
    let rope_base = float("rope.freq_base", 10000.0)?;
    if !(rms_eps > 0.0 && rms_eps < 1.0 && rope_base > 1.0 && rope_base.is_finite()) {
        return Err(hp_err(format!(
            "eps {rms_eps} or rope base {rope_base} out of range"
        )));
    }
    if f.get(&key("rope.scaling.type"))
        .and_then(|v| v.as_str())
        .is_some_and(|t| t != "none")
    {
        return Err(hp_err("RoPE scaling is not supported yet"));
    }
    let embd = f
        .tensor_info("token_embd.weight")
        .ok_or_else(|| Error::MissingTensor("token_embd.weight".into()))?;
    let n_vocab = match f.get(&key("vocab_size")) {
        Some(_) => bounded("vocab_size", MAX_VOCAB)?,
        None => embd.dims.get(1).copied().unwrap_or(0) as usize,
    };
    if n_vocab == 0 || n_vocab as u64 > MAX_VOCAB {
        return Err(hp_err(format!("vocabulary of {n_vocab}")));
    }
    let structure = if arch == "subllm" {
        Structure::parse(f.get_str("subllm.structure")?, n_layer)?
    } else {
        Structure::plain(n_layer)
    };
    let n_ctx_train = f
        .get_u64(&key("context_length"))
        .unwrap_or(4096)
        .min(1 << 24) as usize;
    Ok(HParams {
        n_vocab,
        n_embd,
        n_ff,
        n_head,
        n_head_kv,
        head_dim,
        rms_eps,
        rope_base,
        n_ctx_train,
        structure,
        qk_bias: f.tensor_info("blk.0.attn_q.bias").is_some(),
        tied_output: f.tensor_info("output.weight").is_none(),
    })
}

/// How a model is loaded.
#[derive(Clone, Debug)]
pub struct LoadParams {
    /// Re-lay Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K and Q6_K matrices into 16-row
    /// groups for the packed kernels where the CPU has them (faster; the 32-element
    /// types then sum in the packed order, see `subllm_kernels::repack`). Off: every matmul
    /// follows ggml's vec_dot order, bit for bit. Default: on, unless
    /// `SUBLLM_REPACK=0`.
    pub repack: bool,
}

impl Default for LoadParams {
    fn default() -> Self {
        LoadParams {
            repack: std::env::var("SUBLLM_REPACK").map_or(true, |v| v != "0"),
        }
    }
}

impl Model {
    /// Maps and validates a GGUF model.
    pub fn load(path: impl AsRef<Path>) -> Result<Model> {
        Self::load_with(path, &LoadParams::default())
    }

    /// Maps and validates a GGUF model as `params` say.
    pub fn load_with(path: impl AsRef<Path>, params: &LoadParams) -> Result<Model> {
        Self::from_gguf_with(GgufFile::open(path)?, params)
    }

    pub fn from_gguf(file: GgufFile) -> Result<Model> {
        Self::from_gguf_with(file, &LoadParams::default())
    }

    pub fn from_gguf_with(file: GgufFile, params: &LoadParams) -> Result<Model> {
        let arch = file.get_str("general.architecture")?.to_string();
        if arch != "llama" && arch != "subllm" {
            return Err(Error::UnsupportedArch(arch));
        }
        let hparams = read_hparams(&file, &arch)?;
        let graph = decoder::build(&hparams);
        let mut vector_by_name = HashMap::new();
        for (name, dims) in graph.weights() {
            let info = file
                .tensor_info(&name)
                .ok_or_else(|| Error::MissingTensor(name.clone()))?;
            let mut expected: Vec<u64> = dims.iter().map(|&d| d as u64).collect();
            if name == "token_embd.weight" {
                expected = vec![hparams.n_embd as u64, hparams.n_vocab as u64];
            }
            if info.dims != expected {
                return Err(Error::TensorShape {
                    name,
                    found: info.dims.clone(),
                    expected,
                });
            }
            let k = kernels_for(info.ty).map_err(|_| Error::UnsupportedType {
                name: name.clone(),
                ty: info.ty,
            })?;
            if dims.len() == 1 {
                vector_by_name.insert(name.clone(), file.dequantize(&name)?);
            } else if !k.has_vec_dot() {
                return Err(Error::UnsupportedType { name, ty: info.ty });
            }
        }
        let packed = if params.repack && repack_available() {
            packable(&file, &graph)
        } else {
            std::collections::HashSet::new()
        };
        let (mut matrices, mut vectors) = (Vec::new(), Vec::new());
        let (mut matrix_ids, mut vector_ids) = (HashMap::new(), HashMap::new());
        let mut node_weights = Vec::with_capacity(graph.nodes.len());
        for n in &graph.nodes {
            let (m, v) = n.weight_names();
            let m = m.map(|name| {
                *matrix_ids.entry(name.to_string()).or_insert_with(|| {
                    matrices.push(Matrix {
                        tensor: file.tensor_position(name).expect("validated above"),
                        packed: packed.contains(name).then(std::sync::OnceLock::new),
                    });
                    matrices.len() - 1
                })
            });
            let v = v.map(|name| {
                *vector_ids.entry(name.to_string()).or_insert_with(|| {
                    vectors.push(vector_by_name.remove(name).expect("validated above"));
                    vectors.len() - 1
                })
            });
            node_weights.push((m, v));
        }
        let drops = last_uses(&graph);
        let tokenizer = crate::tokenizer::Tokenizer::from_gguf(&file)?;
        if let Some(t) = &tokenizer {
            if t.n_tokens() > hparams.n_vocab {
                return Err(Error::Tokenizer(format!(
                    "{} tokens for a vocabulary of {}",
                    t.n_tokens(),
                    hparams.n_vocab
                )));
            }
        }
        Ok(Model {
            file,
            arch,
            hparams,
            graph,
            drops,
            matrices,
            vectors,
            node_weights,
            matrix_ids,
            vector_ids,
            tokenizer,
        })
    }

    /// A weight matrix the graph reads, by name (`None` for any other).
    pub fn weight(&self, name: &str) -> Option<Weight<'_>> {
        self.matrix_ids.get(name).map(|&id| self.matrix(id))
    }

    /// A vector weight the graph reads, as f32, by name.
    pub fn vector(&self, name: &str) -> Option<&[f32]> {
        self.vector_ids
            .get(name)
            .map(|&id| self.vectors[id].as_slice())
    }

    /// The matrix node `i` of the graph reads.
    ///
    /// # Panics
    /// If the node reads none (the graph says which do).
    pub(crate) fn node_matrix(&self, i: usize) -> Weight<'_> {
        self.matrix(self.node_weights[i].0.expect("this node reads a matrix"))
    }

    /// The vector node `i` of the graph reads.
    ///
    /// # Panics
    /// If the node reads none.
    pub(crate) fn node_vector(&self, i: usize) -> &[f32] {
        &self.vectors[self.node_weights[i].1.expect("this node reads a vector")]
    }

    fn matrix(&self, id: usize) -> Weight<'_> {
        let m = &self.matrices[id];
        let info = &self.file.tensors()[m.tensor];
        let bytes = self.file.tensor_data(info);
        let (n_in, n_out) = (info.dims[0] as usize, info.dims[1] as usize);
        Weight {
            name: &info.name,
            ty: info.ty,
            n_in,
            n_out,
            bytes,
            kernels: kernels_for(info.ty).expect("validated at load"),
            packed: m.packed.as_ref().and_then(|cell| {
                cell.get_or_init(|| {
                    // the original is not read again unless the embedding is
                    // the same tensor (tied output), which reads single rows:
                    // its pages leave the resident set as each part is done
                    let release = |from: usize, len: usize| {
                        if info.name != "token_embd.weight" {
                            self.file.release_tensor_range(info, from, len);
                        }
                    };
                    repack_parallel(info.ty, bytes, n_in, n_out, &release)
                })
                .as_deref()
            }),
        }
    }

    pub fn gguf(&self) -> &GgufFile {
        &self.file
    }

    /// The tokenizer the file carries, if any (else the model runs on ids).
    pub fn tokenizer(&self) -> Option<&crate::tokenizer::Tokenizer> {
        self.tokenizer.as_ref()
    }

    /// The chat template the file carries, if any.
    pub fn chat_template(&self) -> Option<&str> {
        self.file
            .get("tokenizer.chat_template")
            .and_then(|v| v.as_str())
    }
}

/// Whether this CPU has the packed kernels (else repacking cannot pay).
fn repack_available() -> bool {
    subllm_kernels::cpu::level() >= subllm_kernels::cpu::Level::Avx512
}

/// `subllm_kernels::repack::repack` over parts of whole row groups in
/// parallel, straight into one buffer (groups are independent, so the bytes
/// are the same). `release(from, len)` is called for each part of `bytes`
/// once repacked.
fn repack_parallel(
    ty: GgmlType,
    bytes: &[u8],
    n_in: usize,
    n_out: usize,
    release: &(dyn Fn(usize, usize) + Sync),
) -> Option<Vec<u8>> {
    use rayon::prelude::*;
    use subllm_kernels::repack::{packed_len, repack_into, ROWS};
    let mut out = vec![0u8; packed_len(ty, n_in, n_out)?];
    // 64 groups per part, on both sides
    let groups = n_out / ROWS;
    let (src, dst) = (bytes.len() / groups * 64, out.len() / groups * 64);
    let ok = out
        .par_chunks_mut(dst)
        .zip(bytes.par_chunks(src))
        .enumerate()
        .all(|(i, (o, c))| {
            let rows = c.len() / (bytes.len() / n_out);
            let done = repack_into(ty, c, n_in, rows, o);
            release(i * src, c.len());
            done
        });
    ok.then_some(out)
}

/// The matrices the graph multiplies by whose type and shape have packed
/// kernels (repacked lazily, at first use).
fn packable(file: &GgufFile, graph: &Graph) -> std::collections::HashSet<String> {
    let mut out = std::collections::HashSet::new();
    for n in &graph.nodes {
        if let Node::Linear { w, .. } | Node::Logits { w, .. } = n {
            if let Some(info) = file.tensor_info(w) {
                let n_out = info.dims.get(1).copied().unwrap_or(0) as usize;
                if subllm_kernels::repack::supported(info.ty, n_out) {
                    out.insert(w.clone());
                }
            }
        }
    }
    out
}

/// For each node, the values it is the last reader or writer of.
fn last_uses(g: &Graph) -> Vec<Vec<usize>> {
    let mut last = vec![usize::MAX; g.n_values];
    for (i, n) in g.nodes.iter().enumerate() {
        for v in node_values(n) {
            last[v] = i;
        }
    }
    let mut drops = vec![Vec::new(); g.nodes.len()];
    for (v, &i) in last.iter().enumerate() {
        if i != usize::MAX && v != g.logits.0 {
            drops[i].push(v);
        }
    }
    drops
}

fn node_values(n: &Node) -> Vec<usize> {
    match n {
        Node::Embed { out, .. } => vec![out.0],
        Node::RmsNorm { out, x, .. } | Node::Linear { out, x, .. } => vec![out.0, x.0],
        Node::Rope { x, pos, .. } => vec![x.0, pos.0],
        Node::Attention {
            out, q, k, v, pos, ..
        } => vec![out.0, q.0, k.0, v.0, pos.0],
        Node::SwiGlu { out, gate, up } => vec![out.0, gate.0, up.0],
        Node::Add { out, a, b } => vec![out.0, a.0, b.0],
        Node::Subsample {
            x,
            pos,
            rope_pos,
            out_x,
            out_pos,
            out_rope_pos,
            sel,
            ..
        } => {
            vec![
                x.0,
                pos.0,
                rope_pos.0,
                out_x.0,
                out_pos.0,
                out_rope_pos.0,
                sel.0,
            ]
        }
        Node::Upsample {
            out,
            outer,
            inner,
            sel,
            ..
        } => vec![out.0, outer.0, inner.0, sel.0],
        Node::Logits { out, x, .. } => vec![out.0, x.0],
    }
}
