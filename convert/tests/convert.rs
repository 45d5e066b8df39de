//! subllm-convert end to end: reference fixtures, the official PyTorch
//! checkpoint, a real Llama round trip, and bad inputs.

#[path = "../../tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};

use common::*;
use subllm::GgmlType;
use subllm_convert::{convert, ConvertError, Options};
use subllm_gguf::GgufFile;

fn run(dir: &Path, out: &Path, outtype: GgmlType) -> Result<subllm_convert::Summary, ConvertError> {
    let opts = Options {
        model_dir: dir.to_path_buf(),
        output: out.to_path_buf(),
        outtype,
        weights: None,
        name: Some("test".into()),
    };
    convert(&opts, &mut |_| {})
}

#[test]
fn fixtures_convert_to_f32_exactly_as_an_independent_check_expects() {
    let out = scratch_dir("convert-fixtures");
    for name in FIXTURES {
        let gguf = out.join(format!("{name}.gguf"));
        let s = run(&fixtures_dir().join(name), &gguf, GgmlType::F32).unwrap();
        assert_eq!(
            s.architecture,
            if *name == "llama" { "llama" } else { "subllm" }
        );
        // tests/py/check_converted.py reads the GGUF with gguf-py and rebuilds
        // every tensor from the safetensors itself
        let ok = run_py(
            "tests/py/check_converted.py",
            &[
                fixtures_dir().join(name).to_str().unwrap(),
                gguf.to_str().unwrap(),
            ],
        );
        assert!(ok.starts_with("ok "), "{name}: {ok}");
        let f = GgufFile::open(&gguf).unwrap();
        assert!(f
            .get_str("tokenizer.huggingface.json")
            .unwrap()
            .contains("\"BPE\""));
        assert_eq!(f.get_str("tokenizer.ggml.model").unwrap(), "gpt2");
    }
}

#[test]
fn quantized_outputs_use_the_requested_type_with_documented_fallbacks() {
    let out = scratch_dir("convert-quantized");
    let gguf = out.join("k256.q4k.gguf");
    run(&fixtures_dir().join("k256"), &gguf, GgmlType::Q4K).unwrap();
    let f = GgufFile::open(&gguf).unwrap();
    for t in f.tensors() {
        let want = if t.dims.len() == 1 {
            GgmlType::F32
        } else {
            GgmlType::Q4K
        };
        assert_eq!(t.ty, want, "{}", t.name);
    }
    // rows of 64 are no whole Q4_K block: Q5_0, as llama.cpp falls back
    let gguf = out.join("nested.q4k.gguf");
    run(&fixtures_dir().join("nested"), &gguf, GgmlType::Q4K).unwrap();
    let f = GgufFile::open(&gguf).unwrap();
    assert_eq!(
        f.tensor_info("blk.0.attn_q.weight").unwrap().ty,
        GgmlType::Q5_0
    );
    assert_eq!(
        f.tensor_info("blk.0.ffn_down.weight").unwrap().ty,
        GgmlType::F16
    ); // rows of 172
    assert_eq!(f.get_u64("general.file_type").unwrap(), 14);
}

fn official() -> PathBuf {
    repo_root().join("../shared/fixtures/official-checkpoint")
}

#[test]
fn official_pytorch_and_safetensors_checkpoints_convert_to_identical_bytes() {
    let src = official();
    assert!(src.join("model.pt").exists(), "{} missing", src.display());
    let out = scratch_dir("convert-official");
    let mut files = Vec::new();
    for weights in ["model.pt", "model_wrapped.pt", "model.safetensors"] {
        let dir = out.join(weights.replace('.', "_"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(src.join("config.json"), dir.join("config.json")).unwrap();
        std::fs::copy(src.join(weights), dir.join(weights)).unwrap();
        let gguf = out.join(format!("{weights}.gguf"));
        run(&dir, &gguf, GgmlType::F32).unwrap();
        files.push(std::fs::read(&gguf).unwrap());
    }
    assert!(files[0] == files[1], "model.pt and model_wrapped.pt differ");
    assert!(
        files[0] == files[2],
        "model.pt and model.safetensors differ"
    );
    let f = GgufFile::from_bytes(files.remove(0)).unwrap();
    assert_eq!(f.get_str("subllm.structure").unwrap(), "T(TT)T");
    assert_eq!(f.get_str("tokenizer.ggml.model").unwrap(), "none");
}

#[test]
fn smollm2_round_trips_through_an_hf_directory() {
    let src = smollm2_path();
    let dir = scratch_dir("convert-smollm2");
    let hf = dir.join("hf");
    run_py(
        "tests/py/gguf_to_hf.py",
        &[src.to_str().unwrap(), hf.to_str().unwrap(), "--shards", "2"],
    );
    let out = dir.join("smollm2.f32.gguf");
    let s = run(&hf, &out, GgmlType::F32).unwrap();
    assert_eq!(s.architecture, "llama");
    let orig = GgufFile::open(&src).unwrap();
    let conv = GgufFile::open(&out).unwrap();
    assert_eq!(conv.tensors().len(), orig.tensors().len());
    for t in orig.tensors() {
        let c = conv
            .tensor_info(&t.name)
            .unwrap_or_else(|| panic!("{} missing", t.name));
        assert_eq!(c.dims, t.dims, "{}", t.name);
        assert_eq!(c.ty, GgmlType::F32);
        assert_bits_equal(
            &t.name,
            &conv.dequantize(&t.name).unwrap(),
            &orig.dequantize(&t.name).unwrap(),
        );
    }
    for key in [
        "llama.attention.head_count_kv",
        "llama.block_count",
        "llama.rope.dimension_count",
    ] {
        assert_eq!(
            conv.get_u64(key).unwrap(),
            orig.get_u64(key).unwrap(),
            "{key}"
        );
    }
    assert_eq!(
        conv.get_f64("llama.rope.freq_base").unwrap(),
        orig.get_f64("llama.rope.freq_base").unwrap()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

// ---- bad inputs: one clear error, and no output file left behind ----

/// A copy of the `nested` fixture whose files a test may then break.
fn broken_copy(tag: &str) -> PathBuf {
    let dir = scratch_dir(&format!("broken-{tag}"));
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixtures_dir().join("nested").join(f), dir.join(f)).unwrap();
    }
    dir
}

fn edit_config(dir: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let p = dir.join("config.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(&p, serde_json::to_vec(&v).unwrap()).unwrap();
}

/// Rewrites model.safetensors through `f` over (name, dtype, shape, bytes).
fn edit_weights(dir: &Path, f: impl FnOnce(&mut Vec<(String, String, Vec<usize>, Vec<u8>)>)) {
    let p = dir.join("model.safetensors");
    let bytes = std::fs::read(&p).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut ts: Vec<(String, String, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| {
            (
                n,
                format!("{:?}", v.dtype()),
                v.shape().to_vec(),
                v.data().to_vec(),
            )
        })
        .collect();
    ts.sort_by(|a, b| a.0.cmp(&b.0));
    f(&mut ts);
    let mut header = serde_json::Map::new();
    let mut off = 0;
    for (n, d, s, b) in &ts {
        header.insert(
            n.clone(),
            serde_json::json!({"dtype": d, "shape": s, "data_offsets": [off, off + b.len()]}),
        );
        off += b.len();
    }
    let mut h = serde_json::to_vec(&header).unwrap();
    while !h.len().is_multiple_of(8) {
        h.push(b' ');
    }
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend(h);
    for (_, _, _, b) in &ts {
        out.extend(b);
    }
    std::fs::write(&p, out).unwrap();
}

fn expect_failure(dir: &Path, check: impl FnOnce(&ConvertError) -> bool) -> String {
    let out = dir.join("out.gguf");
    let e = run(dir, &out, GgmlType::Q8_0).expect_err("conversion should fail");
    assert!(check(&e), "unexpected error: {e:?}");
    let left: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".gguf"))
        .collect();
    assert!(left.is_empty(), "files left behind: {left:?}");
    e.to_string()
}

#[test]
fn missing_tensor() {
    let d = broken_copy("missing");
    edit_weights(&d, |ts| {
        ts.retain(|t| t.0 != "decoder.layers.3.self_attn.v_proj.weight")
    });
    let msg = expect_failure(&d, |e| matches!(e, ConvertError::MissingTensor { .. }));
    assert!(
        msg.contains("decoder.layers.3.self_attn.v_proj.weight"),
        "{msg}"
    );
}

#[test]
fn unexpected_tensor() {
    let d = broken_copy("unexpected");
    edit_weights(&d, |ts| {
        ts.push((
            "decoder.extra.weight".into(),
            "F32".into(),
            vec![2],
            vec![0; 8],
        ))
    });
    let msg = expect_failure(&d, |e| matches!(e, ConvertError::UnexpectedTensors(_)));
    assert!(msg.contains("decoder.extra.weight"), "{msg}");
}

#[test]
fn shape_disagreeing_with_config() {
    let d = broken_copy("shape");
    edit_config(&d, |v| v["decoder_ffn_embed_dim"] = 160.into());
    let msg = expect_failure(&d, |e| matches!(e, ConvertError::Shape { .. }));
    assert!(msg.contains("w12"), "{msg}");
}

#[test]
fn unbalanced_structure_and_wrong_block_count() {
    let d = broken_copy("unbalanced");
    edit_config(&d, |v| v["structure"] = "TT(TT(T)T".into());
    expect_failure(&d, |e| matches!(e, ConvertError::Structure(_)));
    edit_config(&d, |v| v["structure"] = "TT(TT)T)T".into());
    expect_failure(&d, |e| matches!(e, ConvertError::Structure(_)));
    edit_config(&d, |v| v["structure"] = "TT(TT(T)T)TT".into());
    let msg = expect_failure(&d, |e| matches!(e, ConvertError::Structure(_)));
    assert!(
        msg.contains("8 blocks") && msg.contains("7 layers"),
        "{msg}"
    );
}

#[test]
fn unknown_dtype() {
    let d = broken_copy("dtype");
    edit_weights(&d, |ts| {
        let t = ts
            .iter_mut()
            .find(|t| t.0 == "decoder.layer_norm.weight")
            .unwrap();
        t.1 = "I32".into();
    });
    expect_failure(&d, |e| matches!(e, ConvertError::UnknownDtype { .. }));
}

#[test]
fn truncated_safetensors() {
    let d = broken_copy("truncated-st");
    let p = d.join("model.safetensors");
    let b = std::fs::read(&p).unwrap();
    std::fs::write(&p, &b[..b.len() - 1000]).unwrap();
    expect_failure(&d, |e| matches!(e, ConvertError::Safetensors { .. }));
    std::fs::write(&p, &b[..5]).unwrap();
    expect_failure(&d, |e| matches!(e, ConvertError::Safetensors { .. }));
}

#[test]
fn truncated_and_corrupt_pytorch_zip() {
    let d = scratch_dir("broken-zip");
    std::fs::copy(official().join("config.json"), d.join("config.json")).unwrap();
    let b = std::fs::read(official().join("model.pt")).unwrap();
    let p = d.join("model.pt");
    for cut in [b.len() - 10, b.len() / 2, 100, 0] {
        std::fs::write(&p, &b[..cut]).unwrap();
        expect_failure(&d, |e| matches!(e, ConvertError::BadZip(_)));
    }
    // a flipped byte inside a tensor's storage fails its CRC
    let mut c = b.clone();
    c[6000] ^= 0x40;
    std::fs::write(&p, &c).unwrap();
    let msg = expect_failure(&d, |e| matches!(e, ConvertError::BadZip(_)));
    assert!(msg.contains("CRC"), "{msg}");
}

#[test]
fn pickle_that_calls_anything_else_is_refused() {
    // a protocol-2 pickle doing `os.system("true")`: GLOBAL, then REDUCE
    let evil = b"\x80\x02cos\nsystem\nq\x00X\x04\x00\x00\x00trueq\x01\x85q\x02Rq\x03.";
    let e = subllm_convert::pickle::load_state_dict(evil).unwrap_err();
    assert!(e.to_string().contains("os.system"), "{e}");
    // random bytes never panic
    let mut s = 7u64;
    for _ in 0..2000 {
        let v: Vec<u8> = (0..64)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1);
                (s >> 56) as u8
            })
            .collect();
        let _ = subllm_convert::pickle::load_state_dict(&v);
    }
}

#[test]
fn no_weights_at_all() {
    let d = scratch_dir("broken-empty");
    std::fs::copy(
        fixtures_dir().join("nested/config.json"),
        d.join("config.json"),
    )
    .unwrap();
    expect_failure(&d, |e| matches!(e, ConvertError::NoWeights(_)));
}

#[test]
fn sentencepiece_model_exports_as_llama_cpp_exports_it() {
    // the genuine Llama-2 tokenizer.model (scripts/fetch-assets.sh) against
    // llama.cpp's own conversion of the same vocabulary
    let spm = repo_root().join("assets/llama2-tokenizer.model");
    let vocab = repo_root().join("assets/vocab/ggml-vocab-llama-spm.gguf");
    assert!(
        spm.exists() && vocab.exists(),
        "run scripts/fetch-assets.sh"
    );
    let d = scratch_dir("spm-export");
    std::fs::copy(&spm, d.join("tokenizer.model")).unwrap();
    let kv = subllm_convert::tokenizer::from_dir(&d, 32000).unwrap();
    let theirs = GgufFile::open(&vocab).unwrap();
    for key in [
        "tokenizer.ggml.model",
        "tokenizer.ggml.tokens",
        "tokenizer.ggml.scores",
        "tokenizer.ggml.token_type",
        "tokenizer.ggml.bos_token_id",
        "tokenizer.ggml.eos_token_id",
        "tokenizer.ggml.unknown_token_id",
    ] {
        let ours = &kv
            .iter()
            .find(|(k, _)| k == key)
            .unwrap_or_else(|| panic!("{key} not exported"))
            .1;
        let want = theirs
            .get(key)
            .unwrap_or_else(|| panic!("{key} not in llama.cpp's file"));
        let same = match (ours.as_u64(), want.as_u64()) {
            (Some(a), Some(b)) => a == b,
            _ => ours == want,
        };
        assert!(same, "{key} differs");
    }

    // and a GGUF made of the exported keys tokenizes llama.cpp's golden vectors
    let mut w = subllm_gguf::GgufWriter::new();
    for (k, v) in kv {
        w.set(k, v).unwrap();
    }
    let bytes = w.begin(Vec::new()).unwrap().finish().unwrap();
    let f = GgufFile::from_bytes(bytes).unwrap();
    let tok = subllm::tokenizer::Tokenizer::from_gguf(&f)
        .unwrap()
        .unwrap();
    let inp = std::fs::read_to_string(vocab.with_extension("gguf.inp")).unwrap();
    let out = std::fs::read_to_string(vocab.with_extension("gguf.out")).unwrap();
    for (text, want) in inp.split("\n__ggml_vocab_test__\n").zip(out.lines()) {
        let want: Vec<u32> = want
            .split_whitespace()
            .map(|x| x.parse().unwrap())
            .collect();
        assert_eq!(tok.encode(text, false, false).unwrap(), want, "{text:?}");
    }
}

// ---- hostile configs and outputs (issue 10) ----

#[test]
fn config_values_out_of_range_are_refused_before_any_allocation() {
    use serde_json::json;
    for (key, val, want) in [
        ("decoder_layers", json!(1_000_000_000_000u64), "layers is"),
        ("decoder_layers", json!(u64::MAX), "layers is"),
        ("decoder_layers", json!(5_000_000_000u64), "layers is"),
        ("decoder_embed_dim", json!(0), "width"),
        ("tokens_per_sample", json!(1u64 << 32), "context length"),
        (
            "tokens_per_sample",
            json!((1u64 << 32) + 128),
            "context length",
        ),
    ] {
        let d = broken_copy(&format!("cfg-{key}-{val}"));
        edit_config(&d, |v| v[key] = val.clone());
        let e = expect_failure(&d, |e| matches!(e, ConvertError::Config(_)));
        assert!(e.contains(want), "{key} = {val}: {e}");
    }
    // Hugging Face Llama values the engine would reject, or that a u32
    // would silently truncate
    for (key, val, want) in [
        ("rms_norm_eps", json!(1e300), "rms_norm_eps"),
        ("rope_theta", json!(-5), "rope_theta"),
        ("hidden_size", json!(0), "width"),
        ("num_hidden_layers", json!(1_000_000_000_000u64), "layers"),
        ("num_hidden_layers", json!(u64::MAX), "layers"),
        (
            "max_position_embeddings",
            json!(1u64 << 32),
            "context length",
        ),
        (
            "max_position_embeddings",
            json!((1u64 << 32) + 128),
            "context length",
        ),
    ] {
        let d = scratch_dir(&format!("hf-{key}-{val}"));
        let mut cfg = json!({
            "architectures": ["LlamaForCausalLM"], "model_type": "llama",
            "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 4, "vocab_size": 100,
            "max_position_embeddings": 128, "rms_norm_eps": 1e-5, "rope_theta": 10000.0
        });
        cfg[key] = val.clone();
        std::fs::write(d.join("config.json"), serde_json::to_vec(&cfg).unwrap()).unwrap();
        let e = expect_failure(&d, |e| matches!(e, ConvertError::Config(_)));
        assert!(e.contains(want), "{key} = {val}: {e}");
    }
}

#[test]
fn a_garbage_tokenizer_fails_at_convert_time() {
    let d = broken_copy("garbage-tokenizer");
    std::fs::write(
        d.join("tokenizer.json"),
        br#"{"model": {"type": "BPE", "vocab": {"a": 0, "b": 0}, "merges": ["x y z"]}}"#,
    )
    .unwrap();
    expect_failure(&d, |_| true);
}

#[cfg(unix)]
#[test]
fn outputs_that_are_not_regular_files_are_refused_untouched() {
    let d = broken_copy("outputs");
    let victim = d.join("victim");
    std::fs::write(&victim, b"keep").unwrap();
    let link = d.join("link.gguf");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    for out in [
        link.clone(),
        PathBuf::from("/dev/full"),
        PathBuf::from("/dev/null"),
        d.clone(),
    ] {
        let e = run(&d, &out, GgmlType::F32).expect_err("refused");
        assert!(e.to_string().contains("refusing"), "{}: {e}", out.display());
    }
    assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    let left: Vec<_> = std::fs::read_dir(&d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("tmp"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    // a regular file is replaced as before
    let out = d.join("ok.gguf");
    std::fs::write(&out, b"old").unwrap();
    run(&d, &out, GgmlType::F32).unwrap();
    assert!(GgufFile::open(&out).is_ok());
}
