//! Tokenizers, built from what a GGUF carries:
//!
//! - `tokenizer.huggingface.json` (written by subllm-convert): the HF
//!   tokenizer itself, through the `tokenizers` crate;
//! - else `tokenizer.ggml.model = gpt2`: byte-level BPE rebuilt from
//!   `tokens` and `merges`, with the pre-tokenizer regexes llama.cpp uses
//!   for `tokenizer.ggml.pre`;
//! - else `llama`: SentencePiece BPE by scores with byte fallback, as
//!   llama.cpp's SPM tokenizer.
//!
//! Special tokens (control and user-defined types) are found in the text
//! first when `parse_special` is set, as llama.cpp does; BOS is added when
//! the vocabulary asks for it.

use std::collections::{BinaryHeap, HashMap};

use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::SplitDelimiterBehavior;

use crate::error::{Error, Result};
use crate::gguf::{GgufFile, MetaArray, MetaValue};

const CONTROL: i32 = 3;
const USER_DEFINED: i32 = 4;
const BYTE: i32 = 6;

fn tok_err(m: impl Into<String>) -> Error {
    Error::Tokenizer(m.into())
}

enum Kind {
    Hf(Box<tokenizers::Tokenizer>),
    Spm {
        scores: Vec<f32>,
        byte_tokens: Box<[u32; 256]>,
        add_space_prefix: bool,
    },
    Bpe(Box<tokenizers::Tokenizer>),
}

pub struct Tokenizer {
    kind: Kind,
    tokens: Vec<String>,
    types: Vec<i32>,
    index: HashMap<String, u32>,
    /// Special token strings, longest first, for partitioning.
    /// Control and user-defined tokens (text, id, user-defined), longest
    /// first: user-defined ones split the text always, control ones only
    /// when special tokens are parsed (as llama.cpp does).
    specials: Vec<(String, u32, bool)>,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    /// End-of-turn token (`<|im_end|>`, `<|eot_id|>`, ...) when the vocabulary has one.
    pub eot: Option<u32>,
    pub add_bos: bool,
    byte_decoder: HashMap<char, u8>,
}

/// GPT-2's byte <-> printable character map.
fn bytes_to_unicode() -> Vec<(u8, char)> {
    let mut bs: Vec<u32> = (b'!' as u32..=b'~' as u32)
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut cs = bs.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !bs.contains(&b) {
            bs.push(b);
            cs.push(256 + n);
            n += 1;
        }
    }
    bs.into_iter()
        .zip(cs)
        .map(|(b, c)| (b as u8, char::from_u32(c).expect("valid")))
        .collect()
}

/// llama.cpp's pre-tokenizer regexes by `tokenizer.ggml.pre`.
fn pre_regexes(pre: &str) -> Vec<&'static str> {
    const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
    match pre {
        "llama3" | "llama-bpe" | "llama-v3" | "falcon3" | "pixtral" | "superbpe" => vec![
            r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
        ],
        "qwen2" | "stablelm2" | "hunyuan" => vec![
            r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
        ],
        "starcoder" | "refact" | "command-r" | "smollm" | "codeshell" | "exaone" | "minerva-7b" => {
            vec![r"\p{N}", GPT2]
        }
        "gpt-2" | "mpt" | "olmo" | "jais" | "trillion" => vec![GPT2],
        "qwen35" => vec![
            r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
        ],
        "falcon" => vec![r"[\p{P}\$\+<=>\^~\|`]+", GPT2, "[0-9][0-9][0-9]"],
        "deepseek-coder" => vec![
            r"[\r\n]",
            r"\s?\p{L}+",
            r"\s?\p{P}+",
            "[\u{4e00}-\u{9fa5}\u{0800}-\u{4e00}\u{ac00}-\u{d7ff}]+",
            r"\p{N}",
        ],
        // DeepSeek's letter class is the cased letters (upper, lower, title)
        "deepseek-llm" => vec![
            r"[\r\n]",
            r"\s?[\p{Lu}\p{Ll}\p{Lt}]+",
            "\\s?[!-/:-~\u{ff01}-\u{ff0f}\u{ff1a}-\u{ff5e}\u{2018}-\u{201f}\u{3000}-\u{3002}]+",
            r"\s+$",
            "[\u{4e00}-\u{9fa5}\u{0800}-\u{4e00}\u{ac00}-\u{d7ff}]+",
            r"\p{N}+",
        ],
        _ => vec![r"[\p{P}\$\+<=>\^~\|]+", GPT2, r"\p{N}+", "[0-9][0-9][0-9]"],
    }
}

fn strings(f: &GgufFile, key: &str) -> Result<Vec<String>> {
    match f.get(key) {
        Some(MetaValue::Array(MetaArray::String(v))) => Ok(v.clone()),
        Some(_) => Err(tok_err(format!("{key} is not an array of strings"))),
        None => Err(tok_err(format!("{key} is missing"))),
    }
}

impl Tokenizer {
    /// Builds the tokenizer a GGUF describes, or `None` if it carries none.
    pub fn from_gguf(f: &GgufFile) -> Result<Option<Tokenizer>> {
        let model = match f.get("tokenizer.ggml.model").and_then(MetaValue::as_str) {
            None | Some("none") | Some("no_vocab") => {
                if f.get("tokenizer.huggingface.json").is_none() {
                    return Ok(None);
                }
                "hf"
            }
            Some(m) => m,
        };
        let tokens = if f.get("tokenizer.ggml.tokens").is_some() {
            strings(f, "tokenizer.ggml.tokens")?
        } else {
            Vec::new()
        };
        let types: Vec<i32> = match f.get("tokenizer.ggml.token_type") {
            Some(MetaValue::Array(MetaArray::I32(v))) if v.len() == tokens.len() => v.clone(),
            Some(_) => {
                return Err(tok_err(
                    "tokenizer.ggml.token_type does not match the tokens",
                ))
            }
            None => vec![1; tokens.len()],
        };
        let id = |k: &str| f.get(k).and_then(MetaValue::as_u64).map(|v| v as u32);
        let flag = |k: &str| f.get(k).and_then(MetaValue::as_bool);
        let kind = if let Some(json) = f
            .get("tokenizer.huggingface.json")
            .and_then(MetaValue::as_str)
        {
            let t = tokenizers::Tokenizer::from_bytes(json.as_bytes())
                .map_err(|e| tok_err(format!("tokenizer.huggingface.json: {e}")))?;
            Kind::Hf(Box::new(t))
        } else {
            match model {
                "gpt2" => Kind::Bpe(Box::new(build_bpe(f, &tokens)?)),
                "llama" => {
                    let scores = match f.get("tokenizer.ggml.scores") {
                        Some(MetaValue::Array(MetaArray::F32(v))) if v.len() == tokens.len() => {
                            v.clone()
                        }
                        _ => {
                            return Err(tok_err(
                                "tokenizer.ggml.scores is missing or does not match the tokens",
                            ))
                        }
                    };
                    let mut byte_tokens = [u32::MAX; 256];
                    for (i, t) in tokens.iter().enumerate() {
                        if types[i] == BYTE && t.len() == 6 && t.starts_with("<0x") {
                            if let Ok(b) = u8::from_str_radix(&t[3..5], 16) {
                                byte_tokens[b as usize] = i as u32;
                            }
                        }
                    }
                    Kind::Spm {
                        scores,
                        byte_tokens: Box::new(byte_tokens),
                        add_space_prefix: flag("tokenizer.ggml.add_space_prefix").unwrap_or(true),
                    }
                }
                "bert" => {
                    return Err(tok_err(
                        "tokenizer model 'bert' (WordPiece) belongs to encoder models, which subllm does not run",
                    ))
                }
                other => {
                    return Err(tok_err(format!(
                        "tokenizer model '{other}' is not supported (subllm reads 'llama' SentencePiece, 'gpt2' BPE and Hugging Face JSON tokenizers, those of the llama and subllm architectures)"
                    )))
                }
            }
        };
        let index: HashMap<String, u32> = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        let mut specials: Vec<(String, u32, bool)> = tokens
            .iter()
            .zip(&types)
            .enumerate()
            .filter(|(_, (t, &ty))| (ty == CONTROL || ty == USER_DEFINED) && !t.is_empty())
            .map(|(i, (t, &ty))| (t.clone(), i as u32, ty == USER_DEFINED))
            .collect();
        specials.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.1.cmp(&b.1)));
        let eot = [
            "<|im_end|>",
            "<|eot_id|>",
            "<|end|>",
            "<end_of_turn>",
            "<|endoftext|>",
        ]
        .iter()
        .find_map(|s| index.get(*s).copied())
        .or(id("tokenizer.ggml.eot_token_id"));
        let add_bos =
            flag("tokenizer.ggml.add_bos_token").unwrap_or(matches!(kind, Kind::Spm { .. }));
        Ok(Some(Tokenizer {
            kind,
            byte_decoder: bytes_to_unicode()
                .into_iter()
                .map(|(b, c)| (c, b))
                .collect(),
            tokens,
            types,
            index,
            specials,
            bos: id("tokenizer.ggml.bos_token_id"),
            eos: id("tokenizer.ggml.eos_token_id"),
            eot,
            add_bos,
        }))
    }

    /// Token ids of `text`. `add_special` adds BOS when the vocabulary
    /// wants it; `parse_special` turns special-token text into its id.
    pub fn encode(&self, text: &str, add_special: bool, parse_special: bool) -> Result<Vec<u32>> {
        let mut out = Vec::new();
        if add_special && self.add_bos {
            out.extend(self.bos);
        }
        let mut rest = text;
        let mut after_special = true;
        while !rest.is_empty() {
            // the earliest special token (longest at a tie) splits the text
            let found = self
                .specials
                .iter()
                .filter(|(_, _, user)| parse_special || *user)
                .filter_map(|(s, id, _)| rest.find(s.as_str()).map(|p| (p, s.len(), *id)))
                .min_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
            let (frag, special) = match found {
                Some((p, len, id)) => (&rest[..p], Some((len, id, p))),
                None => (rest, None),
            };
            if !frag.is_empty() {
                self.encode_fragment(frag, after_special, &mut out)?;
            }
            match special {
                Some((len, id, p)) => {
                    out.push(id);
                    rest = &rest[p + len..];
                    after_special = true;
                }
                None => break,
            }
        }
        Ok(out)
    }

    fn encode_fragment(&self, text: &str, at_start: bool, out: &mut Vec<u32>) -> Result<()> {
        match &self.kind {
            Kind::Hf(t) | Kind::Bpe(t) => {
                let enc = t.encode(text, false).map_err(|e| tok_err(e.to_string()))?;
                out.extend_from_slice(enc.get_ids());
            }
            Kind::Spm {
                scores,
                byte_tokens,
                add_space_prefix,
            } => {
                let mut s = String::with_capacity(text.len() + 3);
                if *add_space_prefix && at_start {
                    s.push(' ');
                }
                s.push_str(text);
                let s = s.replace(' ', "\u{2581}");
                self.spm(&s, scores, byte_tokens, out);
            }
        }
        Ok(())
    }

    /// llama.cpp's SentencePiece BPE: merge the adjacent pair whose merged
    /// text is the highest-scoring token (leftmost at a tie) until none is
    /// left, then map symbols to tokens. A pair is merged only when its text
    /// is a token, so a final symbol is a token unless it is a single
    /// character the vocabulary lacks: those fall back to their bytes.
    fn spm(&self, text: &str, scores: &[f32], byte_tokens: &[u32; 256], out: &mut Vec<u32>) {
        struct Sym {
            start: usize,
            len: usize,
            prev: Option<usize>,
            next: Option<usize>,
        }
        #[derive(PartialEq)]
        struct Bigram {
            score: f32,
            left: usize,
            right: usize,
            len: usize,
        }
        impl Eq for Bigram {}
        impl PartialOrd for Bigram {
            fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
                Some(self.cmp(o))
            }
        }
        impl Ord for Bigram {
            fn cmp(&self, o: &Self) -> std::cmp::Ordering {
                self.score.total_cmp(&o.score).then(o.left.cmp(&self.left))
            }
        }
        let mut syms: Vec<Sym> = Vec::new();
        for (i, (start, c)) in text.char_indices().enumerate() {
            syms.push(Sym {
                start,
                len: c.len_utf8(),
                prev: i.checked_sub(1),
                next: None,
            });
            if i > 0 {
                syms[i - 1].next = Some(i);
            }
        }
        let mut heap = BinaryHeap::new();
        let try_add = |l: usize, r: usize, syms: &[Sym], heap: &mut BinaryHeap<Bigram>| {
            let piece = &text[syms[l].start..syms[r].start + syms[r].len];
            if let Some(&id) = self.index.get(piece) {
                heap.push(Bigram {
                    score: scores[id as usize],
                    left: l,
                    right: r,
                    len: piece.len(),
                });
            }
        };
        for i in 1..syms.len() {
            try_add(i - 1, i, &syms, &mut heap);
        }
        while let Some(b) = heap.pop() {
            let (l, r) = (b.left, b.right);
            if syms[l].len == 0 || syms[r].len == 0 || syms[l].len + syms[r].len != b.len {
                continue; // stale
            }
            syms[l].len += syms[r].len;
            syms[r].len = 0;
            syms[l].next = syms[r].next;
            if let Some(n) = syms[r].next {
                syms[n].prev = Some(l);
            }
            if let Some(p) = syms[l].prev {
                try_add(p, l, &syms, &mut heap);
            }
            if let Some(n) = syms[l].next {
                try_add(l, n, &syms, &mut heap);
            }
        }
        let mut i = if syms.is_empty() { None } else { Some(0) };
        while let Some(k) = i {
            let piece = &text[syms[k].start..syms[k].start + syms[k].len];
            match self.index.get(piece) {
                Some(&id) => out.push(id),
                None => out.extend(
                    piece
                        .bytes()
                        .map(|b| byte_tokens[b as usize])
                        .filter(|&id| id != u32::MAX),
                ),
            }
            i = syms[k].next;
        }
    }

    /// The bytes token `id` stands for (special tokens give their text only
    /// when `special` is set). Streaming callers join bytes before decoding
    /// UTF-8, since one character may span tokens.
    pub fn token_bytes(&self, id: u32, special: bool) -> Vec<u8> {
        let i = id as usize;
        if let Kind::Hf(t) = &self.kind {
            if self.tokens.is_empty() {
                return t
                    .decode(&[id], !special)
                    .map(String::into_bytes)
                    .unwrap_or_default();
            }
        }
        let Some(text) = self.tokens.get(i) else {
            return Vec::new();
        };
        let ty = self.types[i];
        if ty == CONTROL || ty == USER_DEFINED {
            return if special || ty == USER_DEFINED {
                text.clone().into_bytes()
            } else {
                Vec::new()
            };
        }
        match &self.kind {
            Kind::Spm { .. } => {
                if ty == BYTE && text.len() == 6 {
                    if let Ok(b) = u8::from_str_radix(&text[3..5], 16) {
                        return vec![b];
                    }
                }
                text.replace('\u{2581}', " ").into_bytes()
            }
            _ => text
                .chars()
                .map(|c| self.byte_decoder.get(&c).copied().unwrap_or(b'?'))
                .collect(),
        }
    }

    /// Text of a whole sequence (lossy where bytes are not UTF-8).
    pub fn decode(&self, ids: &[u32], special: bool) -> String {
        let bytes: Vec<u8> = ids
            .iter()
            .flat_map(|&id| self.token_bytes(id, special))
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    pub fn n_tokens(&self) -> usize {
        self.tokens.len()
    }

    /// Whether `id` ends generation (EOS or end of turn).
    pub fn is_eog(&self, id: u32) -> bool {
        Some(id) == self.eos || Some(id) == self.eot
    }
}

fn build_bpe(f: &GgufFile, tokens: &[String]) -> Result<tokenizers::Tokenizer> {
    let merges: Vec<(String, String)> = strings(f, "tokenizer.ggml.merges")?
        .into_iter()
        .map(|m| {
            let mut it = m.splitn(2, ' ');
            match (it.next(), it.next()) {
                (Some(a), Some(b)) => Ok((a.to_string(), b.to_string())),
                _ => Err(tok_err(format!("bad merge {m:?}"))),
            }
        })
        .collect::<Result<_>>()?;
    let vocab: tokenizers::models::bpe::Vocab = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect();
    let pre = f
        .get("tokenizer.ggml.pre")
        .and_then(MetaValue::as_str)
        .unwrap_or("default");
    let ignore_merges = matches!(pre, "llama3" | "llama-bpe" | "llama-v3");
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .ignore_merges(ignore_merges)
        .build()
        .map_err(|e| tok_err(format!("BPE: {e}")))?;
    let mut steps: Vec<PreTokenizerWrapper> = Vec::new();
    for re in pre_regexes(pre) {
        let split = Split::new(
            SplitPattern::Regex(re.to_string()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(|e| tok_err(format!("regex: {e}")))?;
        steps.push(split.into());
    }
    steps.push(ByteLevel::new(false, false, false).into());
    let mut t = tokenizers::Tokenizer::new(bpe);
    t.with_pre_tokenizer(Some(Sequence::new(steps)));
    Ok(t)
}
