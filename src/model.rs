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
    /// Its id in its model: where a backend's prepared form of the
    /// model ([`crate::backend::Backend::Weights`]) keeps this matrix.
    pub id: usize,
    pub name: &'a str,
    pub ty: GgmlType,
    pub n_in: usize,
    pub n_out: usize,
    pub bytes: &'a [u8],
    pub kernels: &'static TypeKernels,
    /// Whether the matrix is multiplied by (else only its rows are read:
    /// an untied embedding table).
    pub multiplied: bool,
    /// The mapped file and tensor the bytes lie in, where nothing reads
    /// them once a backend has its own copy (`None` for a tied embedding,
    /// whose rows are read again, and for bytes of no file).
    pub source: Option<(&'a GgufFile, &'a subllm_gguf::TensorInfo)>,
}

impl Weight<'_> {
    pub fn row_bytes(&self) -> usize {
        self.n_in / self.ty.block_len() * self.ty.block_bytes()
    }
    pub fn row(&self, j: usize) -> &[u8] {
        let b = self.row_bytes();
        &self.bytes[j * b..(j + 1) * b]
    }
    /// Drops the mapped pages of bytes `from..from + len` from the resident
    /// set, for a backend done reading them (a no-op without a source).
    pub fn release(&self, from: usize, len: usize) {
        if let Some((file, info)) = self.source {
            file.release_tensor_range(info, from, len);
        }
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
    /// Whether backends may re-lay matrices out ([`LoadParams::repack`]).
    repack: bool,
    /// Each backend's prepared form of this model, made by the first
    /// session that asks and shared by the rest ([`Model::prepared`]).
    prepared: std::sync::Mutex<Vec<std::sync::Arc<dyn std::any::Any + Send + Sync>>>,
}

/// A matrix the graph reads: where its tensor is in the file, whether it
/// is multiplied by, and whether its rows are read again after a backend
/// copied it.
struct Matrix {
    tensor: usize,
    multiplied: bool,
    rows_read: bool,
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
        let (mut matrices, mut vectors) = (Vec::new(), Vec::new());
        let (mut matrix_ids, mut vector_ids) = (HashMap::new(), HashMap::new());
        let mut node_weights = Vec::with_capacity(graph.nodes.len());
        for n in &graph.nodes {
            let (m, v) = n.weight_names();
            let m = m.map(|name| {
                let id = *matrix_ids.entry(name.to_string()).or_insert_with(|| {
                    matrices.push(Matrix {
                        tensor: file.tensor_position(name).expect("validated above"),
                        multiplied: false,
                        rows_read: false,
                    });
                    matrices.len() - 1
                });
                match n {
                    Node::Embed { .. } => matrices[id].rows_read = true,
                    _ => matrices[id].multiplied = true,
                }
                id
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
            repack: params.repack,
            prepared: std::sync::Mutex::new(Vec::new()),
        })
    }

    /// Whether backends may re-lay this model's matrices out for their
    /// kernels ([`LoadParams::repack`]).
    pub fn repack_allowed(&self) -> bool {
        self.repack
    }

    /// The matrices the graph reads.
    pub fn n_matrices(&self) -> usize {
        self.matrices.len()
    }

    /// A backend's prepared form of this model (`W`, one per backend type):
    /// made by `make` for the first session that asks, shared by the rest,
    /// so that sessions on one model hold one repacked (or uploaded) copy.
    pub fn prepared<W: Send + Sync + 'static>(
        &self,
        make: impl FnOnce() -> Result<W>,
    ) -> Result<std::sync::Arc<W>> {
        let mut kept = self.prepared.lock().unwrap_or_else(|e| e.into_inner());
        for p in kept.iter() {
            if let Ok(w) = p.clone().downcast::<W>() {
                return Ok(w);
            }
        }
        let w = std::sync::Arc::new(make()?);
        kept.push(w.clone());
        Ok(w)
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

    /// Matrix `id` (below [`Model::n_matrices`]).
    ///
    /// # Panics
    /// If there is no such matrix.
    pub fn matrix(&self, id: usize) -> Weight<'_> {
        let m = &self.matrices[id];
        let info = &self.file.tensors()[m.tensor];
        Weight {
            id,
            name: &info.name,
            ty: info.ty,
            n_in: info.dims[0] as usize,
            n_out: info.dims[1] as usize,
            bytes: self.file.tensor_data(info),
            kernels: kernels_for(info.ty).expect("validated at load"),
            multiplied: m.multiplied,
            source: (!m.rows_read).then_some((&self.file, info)),
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
