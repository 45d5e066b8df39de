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

#[test]
fn command_r() {
    check("command-r");
}

#[test]
fn phi_3() {
    check("phi-3");
}

#[test]
fn starcoder() {
    check("starcoder");
}

#[test]
fn deepseek_coder() {
    check("deepseek-coder");
}

#[test]
fn deepseek_llm() {
    check("deepseek-llm");
}

#[test]
fn falcon() {
    check("falcon");
}

#[test]
fn mpt() {
    check("mpt");
}

#[test]
fn qwen35() {
    check("qwen35");
}

/// The suites whose tokenizer models belong to no architecture subllm runs:
/// refused with a line that says so, not mis-tokenized.
fn refused(name: &str, why: &str) {
    let path = repo_root().join(format!("assets/vocab/ggml-vocab-{name}.gguf"));
    let f = GgufFile::open(&path).unwrap();
    match Tokenizer::from_gguf(&f) {
        Err(e) => assert!(e.to_string().contains(why), "{name}: {e}"),
        Ok(_) => panic!("{name}: accepted"),
    }
}

#[test]
fn bert_bge() {
    refused("bert-bge", "encoder models");
}

#[test]
fn gemma_4() {
    refused("gemma-4", "'gemma4' is not supported");
}
