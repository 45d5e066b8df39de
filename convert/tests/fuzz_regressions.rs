//! Every input under fuzz/regressions/TARGET, run through the code its
//! fuzz target runs: each once crashed, hung or exhausted memory, and must
//! now end with an error (or a result), quickly and within bounded memory.

use std::path::PathBuf;

use subllm::chat::{self, Message};
use subllm_convert::source::Source;

fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/regressions")
        .join(target);
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut v: Vec<(String, Vec<u8>)> = rd
        .map(|e| {
            let p = e.unwrap().path();
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn torch_findings_are_errors() {
    let all = inputs("torch");
    assert!(!all.is_empty());
    for (name, bytes) in all {
        let src = match Source::torch_from_bytes(&name, bytes) {
            Ok(s) => s,
            Err(_) => continue,
        };
        let names: Vec<String> = src.tensors().iter().map(|t| t.name.clone()).collect();
        let failures = names.iter().filter(|n| src.load(n).is_err()).count();
        assert!(failures > 0, "{name}: every tensor loaded");
    }
}

#[test]
fn chat_template_findings_are_errors() {
    let all = inputs("chat_template");
    assert!(!all.is_empty());
    for (name, bytes) in all {
        let text = String::from_utf8_lossy(&bytes);
        let (template, content) = text.split_once('\0').unwrap_or((&text, "hi"));
        let r = chat::apply(
            template,
            &[Message::new("user", content)],
            "<s>",
            "</s>",
            true,
        );
        assert!(r.is_err(), "{name}: rendered");
    }
}

#[test]
fn other_findings_end_without_a_panic() {
    for (name, bytes) in inputs("gguf") {
        if let Ok(f) = subllm_gguf::GgufFile::from_bytes(bytes) {
            let names: Vec<String> = f.tensors().iter().map(|t| t.name.clone()).collect();
            for n in &names {
                let _ = f.dequantize(n);
            }
            let _ = subllm::Model::from_gguf(f);
        }
        eprintln!("gguf/{name}: ok");
    }
    for (name, bytes) in inputs("pickle") {
        let _ = subllm_convert::pickle::load_state_dict(&bytes);
        eprintln!("pickle/{name}: ok");
    }
    for (name, bytes) in inputs("safetensors") {
        if let Some(split) = bytes.iter().position(|&b| b == 0) {
            if let Ok(src) = Source::safetensors_from_bytes(&name, bytes[split + 1..].to_vec()) {
                let _ = subllm_convert::convert_in_memory(
                    &bytes[..split],
                    &src,
                    subllm::GgmlType::Q8_0,
                );
            }
        }
        eprintln!("safetensors/{name}: ok");
    }
}
