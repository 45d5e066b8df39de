//! Tokenizers rebuilt from GGUF vocabularies against llama.cpp's golden
//! vectors (`ggml-vocab-*.gguf` with `.inp`/`.out`, from the llama-cpp-python
//! source package; scripts/fetch-assets.sh puts them in assets/vocab/).

mod common;

use common::*;
use subllm::gguf::GgufFile;
use subllm::tokenizer::Tokenizer;

fn check(name: &str) {
    let dir = repo_root().join("assets/vocab");
    let path = dir.join(format!("ggml-vocab-{name}.gguf"));
    assert!(
        path.exists(),
        "{} is missing: run scripts/fetch-assets.sh",
        path.display()
    );
    let f = GgufFile::open(&path).unwrap();
    let tok = Tokenizer::from_gguf(&f)
        .unwrap()
        .expect("the vocabulary has a tokenizer");
    let inp = std::fs::read_to_string(dir.join(format!("ggml-vocab-{name}.gguf.inp"))).unwrap();
    let out = std::fs::read_to_string(dir.join(format!("ggml-vocab-{name}.gguf.out"))).unwrap();
    let texts: Vec<&str> = inp.split("\n__ggml_vocab_test__\n").collect();
    let expected: Vec<&str> = out.lines().collect();
    assert_eq!(texts.len() - 1, expected.len(), "{name}: test count");
    let mut failures = Vec::new();
    for (text, want) in texts.iter().zip(&expected) {
        let want: Vec<u32> = want
            .split_whitespace()
            .map(|x| x.parse().unwrap())
            .collect();
        // llama.cpp's test: no BOS, special tokens not parsed
        let got = tok.encode(text, false, false).unwrap();
        if got != want {
            failures.push(format!("{text:?}: got {got:?}, llama.cpp {want:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{name}: {} of {} differ:\n{}",
        failures.len(),
        expected.len(),
        failures.join("\n")
    );
}

#[test]
fn llama_spm() {
    check("llama-spm");
}

#[test]
fn gpt_2() {
    check("gpt-2");
}

#[test]
fn llama_bpe() {
    check("llama-bpe");
}

#[test]
fn qwen2() {
    check("qwen2");
}

#[test]
fn refact() {
    check("refact");
}
