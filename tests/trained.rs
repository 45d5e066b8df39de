//! The trained SUBLLM and its Llama twin (trained/, made by train/): the
//! converted files in subllm against the training framework's own inference
//! of the same checkpoints (trained/golden, written by train/golden.py).

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::*;
use subllm::{KvType, Logits, Model, Session, SessionParams};

fn trained_dir() -> PathBuf {
    std::env::var("SUBLLM_TRAINED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo_root().join("trained"))
}

struct Golden {
    text: String,
    ids: Vec<u32>,
    kept: Vec<Vec<u32>>,
    logits: Vec<f32>,
    n_vocab: usize,
}

fn golden(kind: &str) -> Golden {
    let dir = trained_dir().join("golden");
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join(format!("{kind}.json"))).unwrap())
            .unwrap();
    let nums = |v: &serde_json::Value| -> Vec<u32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect()
    };
    Golden {
        text: j["text"].as_str().unwrap().to_string(),
        ids: nums(&j["ids"]),
        kept: j["kept"].as_array().unwrap().iter().map(nums).collect(),
        logits: read_f32_raw(&dir.join(format!("{kind}.f32"))),
        n_vocab: j["n_vocab"].as_u64().unwrap() as usize,
    }
}

fn file(kind: &str, ty: &str) -> PathBuf {
    trained_dir().join(format!("{kind}-austen-9m.{ty}.gguf"))
}

fn eval(model: &Model, ids: &[u32], kv: KvType, n_batch: usize) -> (Vec<f32>, Vec<Vec<u32>>) {
    let mut s = Session::new(
        model,
        SessionParams {
            kv_type: kv,
            n_batch,
            ..Default::default()
        },
    )
    .unwrap();
    let l = s.eval(ids, Logits::All).unwrap();
    (l, s.kept_positions().to_vec())
}

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()))
}

fn argmax(r: &[f32]) -> usize {
    (0..r.len()).max_by(|&i, &j| r[i].total_cmp(&r[j])).unwrap()
}

#[test]
fn f16_files_equal_the_frameworks_inference() {
    for kind in ["subllm", "llama"] {
        let g = golden(kind);
        let model = Model::load(file(kind, "f16")).unwrap();
        assert_eq!(model.arch, kind);
        // the engine's tokenizer reproduces the one the model was trained with
        let ids = model
            .tokenizer()
            .unwrap()
            .encode(&g.text, true, false)
            .unwrap();
        assert_eq!(ids, g.ids, "{kind}: token ids");
        assert_eq!(model.hparams.n_vocab, g.n_vocab);
        for n_batch in [512, 7] {
            let (logits, kept) = eval(&model, &ids, KvType::F32, n_batch);
            let e = max_abs(&logits, &g.logits);
            eprintln!("{kind} batch {n_batch}: max |logit - JAX| = {e:.2e}");
            assert!(e <= 1e-4, "{kind} batch {n_batch}: {e}");
            if kind == "subllm" {
                assert_eq!(kept, g.kept, "kept positions");
                assert!(
                    g.kept.iter().all(|k| !k.is_empty()),
                    "every level keeps some"
                );
                assert!(g.kept[0].len() < ids.len(), "level 1 drops some");
            }
        }
    }
}

#[test]
fn q8_0_files_stay_near_f16() {
    for kind in ["subllm", "llama"] {
        let g = golden(kind);
        let (a, _) = eval(
            &Model::load(file(kind, "f16")).unwrap(),
            &g.ids,
            KvType::F16,
            512,
        );
        let (b, _) = eval(
            &Model::load(file(kind, "q8_0")).unwrap(),
            &g.ids,
            KvType::F16,
            512,
        );
        let v = g.n_vocab;
        let n = g.ids.len();
        let same = (0..n)
            .filter(|&i| argmax(&a[i * v..(i + 1) * v]) == argmax(&b[i * v..(i + 1) * v]))
            .count();
        let e = max_abs(&a, &b);
        eprintln!("{kind}: Q8_0 vs F16 max |d| {e:.3}, same top token at {same}/{n}");
        assert!(same * 10 >= n * 9, "{kind}: {same}/{n}");
        assert!(e < 1.0, "{kind}: {e}");
    }
}

#[test]
fn perplexity_reports_what_the_subllm_kept() {
    let m = file("subllm", "f16");
    let text =
        std::fs::read_to_string(repo_root().join("tests/golden/austen-persuasion.txt")).unwrap();
    let dir = scratch_dir("trained-ppl");
    let f = dir.join("t.txt");
    std::fs::write(&f, &text[..12000]).unwrap();
    let run = |t: &str| {
        let o = Command::new(env!("CARGO_BIN_EXE_subllm-perplexity"))
            .args(["-m", m.to_str().unwrap(), "-f", f.to_str().unwrap()])
            .args(["-c", "256", "--chunks", "4", "-t", "2"])
            .args(["--subsample-threshold", t])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let out = String::from_utf8(o.stdout).unwrap();
        let line = out
            .lines()
            .find(|l| l.starts_with("kept per level = "))
            .unwrap_or_else(|| panic!("no kept line in {out}"))
            .to_string();
        let kept: Vec<f64> = line["kept per level = ".len()..]
            .split(' ')
            .next()
            .unwrap()
            .split('/')
            .map(|x| x.parse().unwrap())
            .collect();
        let ppl: f64 = out
            .lines()
            .find_map(|l| l.strip_prefix("Final estimate: PPL = "))
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        (kept, ppl)
    };
    let (k0, p0) = run("0");
    let (klo, _) = run("-0.5");
    let (khi, _) = run("0.5");
    assert_eq!(k0.len(), 3);
    assert_eq!(k0[0], 100.0);
    assert!(k0[1] > 0.0 && k0[1] < 100.0 && k0[2] <= k0[1], "{k0:?}");
    assert!(klo[1] >= k0[1] && khi[1] <= k0[1], "{klo:?} {k0:?} {khi:?}");
    assert!(p0.is_finite() && p0 > 1.0);
}
