//! Model configs: the official SUBLLM `config.json` and Hugging Face
//! `LlamaForCausalLM`'s, reduced to what conversion needs.

use serde_json::Value;

use crate::error::ConvertError;

/// Hyper-parameters common to both inputs, in engine terms.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub kind: Kind,
    pub vocab: u64,
    pub dim: u64,
    pub ffn: u64,
    pub layers: u64,
    pub heads: u64,
    pub kv_heads: u64,
    pub context: u64,
    pub rms_eps: f32,
    pub rope_base: f32,
    pub tied: bool,
    pub qk_bias: bool,
    /// The SUBLLM structure string (`T` repeated for a Llama).
    pub structure: String,
    pub bos: Option<u64>,
    pub eos: Option<u64>,
    pub pad: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The official SUBLLM checkpoint format (`decoder.*` names).
    Subllm,
    /// Hugging Face LlamaForCausalLM (`model.*` names).
    HfLlama,
}

impl ModelConfig {
    pub fn head_dim(&self) -> u64 {
        self.dim / self.heads
    }

    /// Whether the model has subsampled regions (else it is a plain Llama).
    pub fn has_regions(&self) -> bool {
        self.structure.contains('(')
    }
}

fn cfg_err(m: impl Into<String>) -> ConvertError {
    ConvertError::Config(m.into())
}

fn uint(v: &Value, keys: &[&str]) -> Result<Option<u64>, ConvertError> {
    for k in keys {
        match v.get(*k) {
            None | Some(Value::Null) => continue,
            Some(x) => {
                return x.as_u64().map(Some).ok_or_else(|| {
                    cfg_err(format!("'{k}' must be a non-negative integer, found {x}"))
                })
            }
        }
    }
    Ok(None)
}

fn req(v: &Value, keys: &[&str]) -> Result<u64, ConvertError> {
    uint(v, keys)?.ok_or_else(|| cfg_err(format!("'{}' is missing", keys[0])))
}

fn boolean(v: &Value, key: &str, default: bool) -> Result<bool, ConvertError> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(x) => Err(cfg_err(format!("'{key}' must be true or false, found {x}"))),
    }
}

fn float(v: &Value, key: &str, default: f64) -> Result<f64, ConvertError> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(x) => x
            .as_f64()
            .ok_or_else(|| cfg_err(format!("'{key}' must be a number, found {x}"))),
    }
}

/// An id field that may be an integer or a list of integers (first taken).
fn token_id(v: &Value, key: &str) -> Result<Option<u64>, ConvertError> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(a)) => Ok(a.first().and_then(Value::as_u64)),
        Some(x) => x
            .as_u64()
            .map(Some)
            .ok_or_else(|| cfg_err(format!("'{key}' must be a token id, found {x}"))),
    }
}

pub fn parse(v: &Value) -> Result<ModelConfig, ConvertError> {
    if !v.is_object() {
        return Err(cfg_err("config.json is not a JSON object"));
    }
    let is_subllm = v.get("structure").is_some() || v.get("decoder_embed_dim").is_some();
    let archs = v.get("architectures").and_then(Value::as_array);
    let is_llama = v.get("model_type").and_then(Value::as_str) == Some("llama")
        || archs.is_some_and(|a| a.iter().any(|x| x.as_str() == Some("LlamaForCausalLM")));
    let c = if is_subllm {
        parse_subllm(v)?
    } else if is_llama {
        parse_llama(v)?
    } else {
        return Err(cfg_err(
            "neither a SUBLLM config (no 'structure') nor a Hugging Face LlamaForCausalLM config",
        ));
    };
    if c.heads == 0 || c.dim % c.heads != 0 || c.head_dim() % 2 != 0 {
        return Err(cfg_err(format!(
            "{} heads do not split a width of {} into even head sizes",
            c.heads, c.dim
        )));
    }
    if c.kv_heads == 0 || c.heads % c.kv_heads != 0 {
        return Err(cfg_err(format!(
            "{} heads are not a multiple of {} key/value heads",
            c.heads, c.kv_heads
        )));
    }
    // every size is written as a GGUF u32 and must be one the engine can
    // run: bounded here, before anything is allocated from it
    for (name, x, max) in [
        ("vocabulary", c.vocab, MAX_VOCAB),
        ("width (hidden size)", c.dim, MAX_WIDTH),
        ("ffn width", c.ffn, MAX_WIDTH * 8),
        ("layers", c.layers, MAX_LAYERS),
        ("attention heads", c.heads, MAX_WIDTH),
        ("context length", c.context, u32::MAX as u64),
    ] {
        if x == 0 || x > max {
            return Err(cfg_err(format!("{name} is {x}; it must be in 1..={max}")));
        }
    }
    if !(c.rms_eps.is_finite() && c.rms_eps > 0.0 && c.rms_eps < 1.0) {
        return Err(cfg_err(format!(
            "rms_norm_eps is {}; it must be in (0, 1)",
            c.rms_eps
        )));
    }
    if !(c.rope_base.is_finite() && c.rope_base > 1.0) {
        return Err(cfg_err(format!(
            "rope_theta is {}; it must be a finite number above 1",
            c.rope_base
        )));
    }
    Ok(c)
}

/// The engine's bounds: a config beyond them converts to a file that
/// would not load.
pub use subllm::model::{MAX_LAYERS, MAX_VOCAB, MAX_WIDTH};

fn parse_subllm(v: &Value) -> Result<ModelConfig, ConvertError> {
    let structure = v
        .get("structure")
        .and_then(Value::as_str)
        .ok_or_else(|| cfg_err("'structure' is missing or not a string"))?
        .to_string();
    let layers = req(v, &["decoder_layers"])?;
    if layers == 0 || layers > MAX_LAYERS {
        return Err(cfg_err(format!(
            "layers is {layers}; it must be in 1..={MAX_LAYERS}"
        )));
    }
    subllm_models::structure::Structure::parse(&structure, layers as usize)?;
    let heads = req(v, &["decoder_attention_heads"])?;
    let ctx = uint(v, &["tokens_per_sample"])?.unwrap_or(4096);
    Ok(ModelConfig {
        kind: Kind::Subllm,
        vocab: req(v, &["num_embeddings", "vocab_size"])?,
        dim: req(v, &["decoder_embed_dim", "hidden_size"])?,
        ffn: req(v, &["decoder_ffn_embed_dim"])?,
        layers,
        heads,
        kv_heads: heads,
        context: ctx,
        rms_eps: 1e-5,
        rope_base: 10000.0,
        // the class defaults are true for both (see the inference doc, section 1)
        tied: boolean(v, "tie_weights", true)?,
        qk_bias: boolean(v, "qk_bias", true)?,
        structure,
        bos: token_id(v, "bos_token_id")?.or(Some(1)),
        eos: token_id(v, "eos_token_id")?.or(Some(2)),
        pad: token_id(v, "padding_idx")?.or(Some(0)),
    })
}

fn parse_llama(v: &Value) -> Result<ModelConfig, ConvertError> {
    if v.get("rope_scaling").is_some_and(|x| !x.is_null()) {
        return Err(cfg_err("'rope_scaling' is not supported yet"));
    }
    if boolean(v, "attention_bias", false)? || boolean(v, "mlp_bias", false)? {
        return Err(cfg_err(
            "attention or MLP biases are not supported for Llama",
        ));
    }
    let dim = req(v, &["hidden_size"])?;
    let heads = req(v, &["num_attention_heads"])?;
    if let Some(hd) = uint(v, &["head_dim"])? {
        if hd * heads != dim {
            return Err(cfg_err(format!(
                "head_dim {hd} x {heads} heads != hidden_size {dim}"
            )));
        }
    }
    let layers = req(v, &["num_hidden_layers"])?;
    if layers == 0 || layers > MAX_LAYERS {
        return Err(cfg_err(format!(
            "layers is {layers}; it must be in 1..={MAX_LAYERS}"
        )));
    }
    Ok(ModelConfig {
        kind: Kind::HfLlama,
        vocab: req(v, &["vocab_size"])?,
        dim,
        ffn: req(v, &["intermediate_size"])?,
        layers,
        heads,
        kv_heads: uint(v, &["num_key_value_heads"])?.unwrap_or(heads),
        context: uint(v, &["max_position_embeddings"])?.unwrap_or(2048),
        rms_eps: float(v, "rms_norm_eps", 1e-6)? as f32,
        rope_base: float(v, "rope_theta", 10000.0)? as f32,
        tied: boolean(v, "tie_word_embeddings", false)?,
        qk_bias: false,
        structure: "T".repeat(layers as usize),
        bos: token_id(v, "bos_token_id")?,
        eos: token_id(v, "eos_token_id")?,
        pad: token_id(v, "pad_token_id")?,
    })
}
