//! `subllm-cli inspect` on a file written by gguf-py.

mod common;

use std::process::Command;

use common::*;

fn cli(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_subllm-cli"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn inspect_shows_metadata_tensors_and_totals() {
    let dir = scratch_dir("cli-inspect");
    oracle(&["write-reference", dir.to_str().unwrap()]);
    let file = dir.join("reference.gguf");
    let (ok, out, err) = cli(&["inspect", file.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(out.contains("GGUF v3"), "{out}");
    assert!(out.contains("test.string"));
    assert!(out.contains("t.Q6_K"));
    assert!(out.contains("Q6_K") && out.contains("[512, 4]"));
    // 12 tensors of 512x4 plus one of 32x3x2
    assert!(
        out.contains(&format!("total: {} parameters", 12 * 2048 + 192)),
        "{out}"
    );
}

#[test]
fn inspect_dumps_a_dequantized_tensor_that_numpy_reads() {
    let dir = scratch_dir("cli-dump");
    oracle(&["write-reference", dir.to_str().unwrap()]);
    let file = dir.join("reference.gguf");
    let npy = dir.join("q4k.npy");
    let (ok, _, err) = cli(&[
        "inspect",
        file.to_str().unwrap(),
        "--tensor",
        "t.Q4_K",
        "--out",
        npy.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let ours = read_npy(&npy);
    assert_bits_equal("t.Q4_K", &ours, &read_npy(&dir.join("expected_t.Q4_K.npy")));
    let info = oracle(&["npy-info", npy.to_str().unwrap()]);
    let sum: f64 = ours.iter().map(|&v| v as f64).sum();
    let expect = format!(
        "float32 4,512 {}",
        sum.to_le_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    assert_eq!(info.trim(), expect);
}

#[test]
fn inspect_reports_errors_cleanly() {
    let dir = scratch_dir("cli-errors");
    let bad = dir.join("bad.gguf");
    std::fs::write(&bad, b"GGUF\x01\x00\x00\x00").unwrap();
    let (ok, _, err) = cli(&["inspect", bad.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("version 1"), "{err}");
    let (ok, _, err) = cli(&["inspect", dir.join("missing.gguf").to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("missing.gguf"), "{err}");
}
