//! The subllm-quantize command line: one line on stderr and a non-zero exit
//! for every refusal; the summary on success.

use std::process::Command;

fn run(args: &[&str]) -> (i32, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_subllm-quantize"))
        .args(args)
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn refusals_and_a_summary() {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("quantize-cli");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let spec = subllm_convert::synthetic::SynthSpec::parse(
        "tiny-llama,d=256,layers=2,heads=2,ff=256,vocab=16,ctx=16",
    )
    .unwrap();
    let f16 = dir.join("f16.gguf");
    subllm_convert::synthetic::synthesize(&spec, &f16, subllm::GgmlType::F16, None, &mut |_| {})
        .unwrap();
    let (f, out) = (f16.to_str().unwrap(), dir.join("o.gguf"));
    let out = out.to_str().unwrap();

    let (code, err) = run(&[f, out, "Q3_K_M"]);
    assert_eq!(code, 1);
    assert!(
        err.starts_with("error: unknown type 'Q3_K_M'") && err.lines().count() == 1,
        "{err}"
    );
    let (code, err) = run(&[f, out, "Q4_K_M", "--imatrix", "x.dat"]);
    assert_eq!(code, 1);
    assert!(
        err.starts_with("error: importance matrix x.dat: No such file") && err.lines().count() == 1,
        "{err}"
    );
    // an imatrix made for another shape (its ffn_down rows have 320 values)
    let golden_im = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/golden/imatrix-synthetic.gguf"
    );
    let (code, err) = run(&[f, out, "Q4_0", "--imatrix", golden_im, "-q"]);
    assert_eq!(code, 1);
    assert!(
        err.contains(
            "importance matrix: 320 values for blk.0.ffn_down.weight, whose rows have 256"
        ),
        "{err}"
    );
    let (code, err) = run(&[f, out, "Q8_0", "--output-tensor-type", "q9"]);
    assert_eq!(code, 1);
    assert!(err.contains("unknown tensor type"), "{err}");
    let (code, err) = run(&["/nonexistent.gguf", out, "Q8_0"]);
    assert_eq!(code, 1);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(!std::path::Path::new(out).exists());

    let (code, err) = run(&[f, out, "q4_k", "1", "-q"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("(Q4_K_M)") && err.contains("Q6_K") && err.contains("Q4_K"),
        "{err}"
    );
    // the output is quantized, so going again needs --allow-requantize
    let again = dir.join("p.gguf");
    let (code, err) = run(&[out, again.to_str().unwrap(), "Q8_0"]);
    assert_eq!(code, 1);
    assert!(err.contains("--allow-requantize"), "{err}");
    let (code, _) = run(&[out, again.to_str().unwrap(), "Q8_0", "--allow-requantize"]);
    assert_eq!(code, 0);
}
