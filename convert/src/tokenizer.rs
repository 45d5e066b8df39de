//! Tokenizer metadata, stored the way llama.cpp stores it (`tokenizer.ggml.*`),
//! plus the verbatim `tokenizer.json` under `tokenizer.huggingface.json`.
//!
//! - `tokenizer.model` (SentencePiece): model `llama`, pieces, scores, types.
//! - `tokenizer.json` with a byte-level BPE model: model `gpt2`, tokens,
//!   types (added special tokens are CONTROL), merges.
//! - `tokenizer_config.json`: `chat_template`, `add_bos_token`, `add_eos_token`.

use std::path::Path;

use serde_json::Value;
use subllm_gguf::{MetaArray, MetaValue};

use crate::error::ConvertError;

/// llama.cpp's token types.
pub const NORMAL: i32 = 1;
pub const CONTROL: i32 = 3;
pub const USER_DEFINED: i32 = 4;
pub const UNUSED: i32 = 5;

fn tok_err(m: impl Into<String>) -> ConvertError {
    ConvertError::Tokenizer(m.into())
}

pub type Kv = Vec<(String, MetaValue)>;

fn strings(v: Vec<String>) -> MetaValue {
    MetaValue::Array(MetaArray::String(v))
}

/// Reads whatever tokenizer files `dir` has. `vocab` is the model's
/// vocabulary size: shorter vocabularies are padded as llama.cpp pads them.
pub fn from_dir(dir: &Path, vocab: u64) -> Result<Kv, ConvertError> {
    let mut kv = Kv::new();
    let json_path = dir.join("tokenizer.json");
    let spm_path = dir.join("tokenizer.model");
    let read = |p: &Path| crate::read_small(p);
    if spm_path.exists() {
        kv.extend(from_sentencepiece(&read(&spm_path)?, vocab)?);
    }
    if json_path.exists() {
        let text = String::from_utf8(read(&json_path)?)
            .map_err(|_| tok_err("tokenizer.json is not UTF-8"))?;
        let v: Value = serde_json::from_str(&text).map_err(|e| ConvertError::Json {
            path: json_path.clone(),
            source: e,
        })?;
        if !spm_path.exists() {
            kv.extend(from_hf_json(&v, vocab)?);
        }
        kv.push(("tokenizer.huggingface.json".into(), MetaValue::String(text)));
    }
    let cfg_path = dir.join("tokenizer_config.json");
    if cfg_path.exists() && !kv.is_empty() {
        let v: Value =
            serde_json::from_slice(&read(&cfg_path)?).map_err(|e| ConvertError::Json {
                path: cfg_path.clone(),
                source: e,
            })?;
        if let Some(t) = v.get("chat_template").and_then(Value::as_str) {
            kv.push((
                "tokenizer.chat_template".into(),
                MetaValue::String(t.into()),
            ));
        }
        for (json_key, key) in [
            ("add_bos_token", "tokenizer.ggml.add_bos_token"),
            ("add_eos_token", "tokenizer.ggml.add_eos_token"),
        ] {
            if let Some(b) = v.get(json_key).and_then(Value::as_bool) {
                kv.push((key.into(), MetaValue::Bool(b)));
            }
        }
    }
    Ok(kv)
}

fn pad_to(
    tokens: &mut Vec<String>,
    types: &mut Vec<i32>,
    scores: Option<&mut Vec<f32>>,
    vocab: u64,
) -> Result<(), ConvertError> {
    if tokens.len() as u64 > vocab {
        return Err(tok_err(format!(
            "{} tokens, but the model's vocabulary is {vocab}",
            tokens.len()
        )));
    }
    let n = tokens.len();
    for i in n..vocab as usize {
        tokens.push(format!("[PAD{i}]"));
        types.push(UNUSED);
    }
    if let Some(s) = scores {
        s.resize(vocab as usize, 0.0);
    }
    Ok(())
}

fn from_hf_json(v: &Value, vocab: u64) -> Result<Kv, ConvertError> {
    let model = v
        .get("model")
        .ok_or_else(|| tok_err("tokenizer.json has no 'model'"))?;
    let ty = model.get("type").and_then(Value::as_str).unwrap_or("");
    let byte_level = v.get("pre_tokenizer").is_some_and(|p| {
        p.get("type").and_then(Value::as_str) == Some("ByteLevel")
            || p.get("pretokenizers")
                .and_then(Value::as_array)
                .is_some_and(|a| {
                    a.iter()
                        .any(|x| x.get("type").and_then(Value::as_str) == Some("ByteLevel"))
                })
    });
    if ty != "BPE" || !byte_level {
        // the engine still has tokenizer.huggingface.json; llama.cpp cannot use it
        return Ok(Kv::new());
    }
    let vmap = model
        .get("vocab")
        .and_then(Value::as_object)
        .ok_or_else(|| tok_err("BPE model without a vocab"))?;
    let mut tokens: Vec<Option<String>> = Vec::new();
    let mut place = |tok: &str, id: &Value| -> Result<(), ConvertError> {
        let id = id
            .as_u64()
            .ok_or_else(|| tok_err(format!("token {tok:?} has a bad id")))?
            as usize;
        if id as u64 >= vocab.max(1 << 24) {
            return Err(tok_err(format!("token id {id} is out of range")));
        }
        if tokens.len() <= id {
            tokens.resize(id + 1, None);
        }
        tokens[id] = Some(tok.to_string());
        Ok(())
    };
    for (tok, id) in vmap {
        place(tok, id)?;
    }
    let mut special = std::collections::HashMap::new();
    for a in v
        .get("added_tokens")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let (Some(content), Some(id)) = (a.get("content").and_then(Value::as_str), a.get("id"))
        else {
            return Err(tok_err("an added token lacks content or id"));
        };
        place(content, id)?;
        let is_special = a.get("special").and_then(Value::as_bool).unwrap_or(false);
        special.insert(id.as_u64().unwrap_or(0) as usize, is_special);
    }
    let mut types = Vec::with_capacity(tokens.len());
    let mut out = Vec::with_capacity(tokens.len());
    for (i, t) in tokens.into_iter().enumerate() {
        let t = t.ok_or_else(|| tok_err(format!("no token has id {i}")))?;
        types.push(match special.get(&i) {
            Some(true) => CONTROL,
            Some(false) => USER_DEFINED,
            None => NORMAL,
        });
        out.push(t);
    }
    pad_to(&mut out, &mut types, None, vocab)?;
    let merges: Vec<String> = model
        .get("merges")
        .and_then(Value::as_array)
        .ok_or_else(|| tok_err("BPE model without merges"))?
        .iter()
        .map(|m| match m {
            Value::String(s) => Ok(s.clone()),
            Value::Array(p) if p.len() == 2 => Ok(format!(
                "{} {}",
                p[0].as_str().unwrap_or(""),
                p[1].as_str().unwrap_or("")
            )),
            _ => Err(tok_err("a merge is neither \"a b\" nor [a, b]")),
        })
        .collect::<Result<_, _>>()?;
    Ok(vec![
        (
            "tokenizer.ggml.model".into(),
            MetaValue::String("gpt2".into()),
        ),
        (
            "tokenizer.ggml.pre".into(),
            MetaValue::String("default".into()),
        ),
        ("tokenizer.ggml.tokens".into(), strings(out)),
        (
            "tokenizer.ggml.token_type".into(),
            MetaValue::Array(MetaArray::I32(types)),
        ),
        ("tokenizer.ggml.merges".into(), strings(merges)),
    ])
}

/// A protobuf field: (field number, wire type, payload).
enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed32(u32),
    Fixed64,
}

fn varint(b: &[u8], p: &mut usize) -> Result<u64, ConvertError> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b
            .get(*p)
            .ok_or_else(|| tok_err("tokenizer.model is truncated"))?;
        *p += 1;
        v |= ((byte & 0x7f) as u64) << shift;
        if byte & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(tok_err("tokenizer.model has an overlong varint"))
}

fn fields(b: &[u8]) -> Result<Vec<(u64, Field<'_>)>, ConvertError> {
    let mut out = Vec::new();
    let mut p = 0;
    while p < b.len() {
        let key = varint(b, &mut p)?;
        let f = match key & 7 {
            0 => Field::Varint(varint(b, &mut p)?),
            1 => {
                b.get(p..p + 8).ok_or_else(|| tok_err("truncated"))?;
                p += 8;
                Field::Fixed64
            }
            2 => {
                let n = varint(b, &mut p)? as usize;
                let s = b
                    .get(p..p.saturating_add(n))
                    .ok_or_else(|| tok_err("tokenizer.model is truncated"))?;
                p += n;
                Field::Bytes(s)
            }
            5 => {
                let s = b.get(p..p + 4).ok_or_else(|| tok_err("truncated"))?;
                p += 4;
                Field::Fixed32(u32::from_le_bytes(s.try_into().expect("4 bytes")))
            }
            w => {
                return Err(tok_err(format!(
                    "tokenizer.model: unsupported wire type {w}"
                )))
            }
        };
        out.push((key >> 3, f));
    }
    Ok(out)
}

/// SentencePiece `ModelProto`: pieces (1: piece, 2: score, 3: type),
/// trainer spec (2: unk 40, bos 41, eos 42, pad 43), normalizer spec
/// (3: add_dummy_prefix 3).
pub(crate) fn from_sentencepiece(b: &[u8], vocab: u64) -> Result<Kv, ConvertError> {
    let mut tokens = Vec::new();
    let mut scores = Vec::new();
    let mut types = Vec::new();
    let (mut unk, mut bos, mut eos, mut pad): (i64, i64, i64, i64) = (0, 1, 2, -1);
    let mut add_prefix = true;
    for (num, f) in fields(b)? {
        match (num, f) {
            (1, Field::Bytes(piece)) => {
                let (mut text, mut score, mut ty) = (String::new(), 0.0f32, 1u64);
                for (n, g) in fields(piece)? {
                    match (n, g) {
                        (1, Field::Bytes(s)) => {
                            text = String::from_utf8(s.to_vec())
                                .map_err(|_| tok_err("a piece is not UTF-8"))?
                        }
                        (2, Field::Fixed32(x)) => score = f32::from_bits(x),
                        (3, Field::Varint(t)) => ty = t,
                        _ => {}
                    }
                }
                tokens.push(text);
                scores.push(score);
                // sentencepiece NORMAL=1 UNKNOWN=2 CONTROL=3 USER_DEFINED=4 BYTE=6 UNUSED=5 map to llama.cpp's
                types.push(ty.clamp(1, 6) as i32);
            }
            (2, Field::Bytes(spec)) => {
                for (n, g) in fields(spec)? {
                    if let Field::Varint(x) = g {
                        let x = x as i64 as i32 as i64;
                        match n {
                            40 => unk = x,
                            41 => bos = x,
                            42 => eos = x,
                            43 => pad = x,
                            _ => {}
                        }
                    }
                }
            }
            (3, Field::Bytes(spec)) => {
                for (n, g) in fields(spec)? {
                    if let (3, Field::Varint(x)) = (n, g) {
                        add_prefix = x != 0;
                    }
                }
            }
            _ => {}
        }
    }
    if tokens.is_empty() {
        return Err(tok_err("tokenizer.model holds no pieces"));
    }
    pad_to(&mut tokens, &mut types, Some(&mut scores), vocab)?;
    let mut kv: Kv = vec![
        (
            "tokenizer.ggml.model".into(),
            MetaValue::String("llama".into()),
        ),
        (
            "tokenizer.ggml.pre".into(),
            MetaValue::String("default".into()),
        ),
        ("tokenizer.ggml.tokens".into(), strings(tokens)),
        (
            "tokenizer.ggml.scores".into(),
            MetaValue::Array(MetaArray::F32(scores)),
        ),
        (
            "tokenizer.ggml.token_type".into(),
            MetaValue::Array(MetaArray::I32(types)),
        ),
        (
            "tokenizer.ggml.add_space_prefix".into(),
            MetaValue::Bool(add_prefix),
        ),
    ];
    for (k, id) in [
        ("unknown", unk),
        ("bos", bos),
        ("eos", eos),
        ("padding", pad),
    ] {
        if id >= 0 {
            kv.push((
                format!("tokenizer.ggml.{k}_token_id"),
                MetaValue::U32(id as u32),
            ));
        }
    }
    Ok(kv)
}
