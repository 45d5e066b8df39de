//! The real SmolLM2-135M-Instruct Q4_1 GGUF made by llama.cpp: it parses as
//! gguf-py parses it, and every tensor dequantizes to gguf-py's values.

mod common;

use common::*;
use subllm::gguf::GgufFile;

#[test]
fn smollm2_metadata_and_tensor_table_match_gguf_py() {
    let path = smollm2_path();
    let f = GgufFile::open(&path).unwrap();
    assert_eq!(f.get_str("general.architecture").unwrap(), "llama");
    assert_eq!(f.get_u64("llama.block_count").unwrap(), 30);
    assert_eq!(f.tensors().len(), 272);
    let theirs = oracle(&["describe", path.to_str().unwrap(), "--no-data"]);
    assert_same_description(&describe_with(&f, false), &theirs);
}

#[test]
fn smollm2_every_tensor_dequantizes_like_gguf_py() {
    let path = smollm2_path();
    let f = GgufFile::open(&path).unwrap();
    let dir = scratch_dir("smollm2-dequantized");
    oracle(&["dequantize", path.to_str().unwrap(), dir.to_str().unwrap()]);
    let mut elements = 0u64;
    for (i, t) in f.tensors().iter().enumerate() {
        let theirs = read_f32_raw(&dir.join(format!("{i:05}.f32")));
        let ours = f.dequantize(&t.name).unwrap();
        assert_bits_equal(&t.name, &ours, &theirs);
        elements += t.n_elements();
    }
    assert_eq!(elements, 134_515_008);
    let _ = std::fs::remove_dir_all(&dir);
}
