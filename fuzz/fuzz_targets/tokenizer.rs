//! Tokenizer encode and decode on arbitrary input, for each vocabulary in
//! `SUBLLM_FUZZ_VOCABS` (colon-separated GGUF paths; by default SmolLM2's
//! BPE and llama.cpp's SentencePiece, GPT-2 and Qwen2 test vocabularies
//! under assets/). The first byte picks the vocabulary and the flags; the
//! rest is text to encode and, read as little-endian u32s, ids to decode.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use subllm::gguf::GgufFile;
use subllm::tokenizer::Tokenizer;

fn vocabs() -> &'static [Tokenizer] {
    static V: OnceLock<Vec<Tokenizer>> = OnceLock::new();
    V.get_or_init(|| {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../assets");
        let default = [
            "SmolLM2-135M-Instruct.Q4_1.gguf",
            "vocab/ggml-vocab-llama-spm.gguf",
            "vocab/ggml-vocab-gpt-2.gguf",
            "vocab/ggml-vocab-qwen2.gguf",
        ]
        .map(|p| format!("{root}/{p}"))
        .join(":");
        let paths = std::env::var("SUBLLM_FUZZ_VOCABS").unwrap_or(default);
        let v: Vec<Tokenizer> = paths
            .split(':')
            .map(|p| {
                let f = GgufFile::open(p)
                    .unwrap_or_else(|e| panic!("{p}: {e} (run scripts/fetch-assets.sh)"));
                Tokenizer::from_gguf(&f)
                    .unwrap_or_else(|e| panic!("{p}: {e}"))
                    .unwrap_or_else(|| panic!("{p}: no tokenizer"))
            })
            .collect();
        assert!(!v.is_empty(), "no vocabularies");
        v
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let v = vocabs();
    let tok = &v[(sel as usize >> 2) % v.len()];
    let (add_special, parse_special) = (sel & 1 != 0, sel & 2 != 0);
    let text = String::from_utf8_lossy(rest);
    if let Ok(ids) = tok.encode(&text, add_special, parse_special) {
        for &id in &ids {
            assert!(
                (id as usize) < tok.n_tokens(),
                "id {id} out of the vocabulary"
            );
        }
        let _ = tok.decode(&ids, true);
    }
    let ids: Vec<u32> = rest
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let _ = tok.decode(&ids, true);
    let _ = tok.decode(&ids, false);
});
