//! The C ABI as a C program sees it: libsubllm (built from capi/) linked by
//! the system C compiler into tests/c/abi_test.c (hostile arguments to every
//! function, 4 threads against sequential runs) and into the example
//! examples/c/simple.c, whose greedy answer must equal the Rust API's (and
//! examples/python/simple.py's, through ctypes).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use subllm::generate::{generate, GenerateParams};
use subllm::sampler::SamplerParams;
use subllm::{Model, Session, SessionParams};

/// Builds libsubllm in this test's profile and returns its directory.
fn lib_dir() -> PathBuf {
    let root = common::repo_root();
    // the test binary lives in <target>/<profile>/deps
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
    let release = profile_dir.file_name().unwrap() == "release";
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    // the whole workspace, so that the engine is built with the features the
    // test run already built it with (only libsubllm is linked anew)
    cmd.current_dir(&root)
        .args(["build", "--workspace", "--lib"]);
    if release {
        cmd.arg("--release");
    }
    let st = cmd.status().expect("cargo runs");
    assert!(st.success(), "building subllm-capi failed");
    assert!(profile_dir.join("libsubllm.so").exists());
    profile_dir
}

fn compile(src: &str, out: &Path, lib: &Path) {
    let root = common::repo_root();
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let o = Command::new(&cc)
        .args([
            "-std=c11",
            "-O1",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-pedantic",
        ])
        .arg(format!("-I{}", root.join("include").display()))
        .arg(root.join(src))
        .arg(format!("-L{}", lib.display()))
        .args(["-lsubllm", "-lpthread", "-lm"])
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .arg("-o")
        .arg(out)
        .output()
        .unwrap_or_else(|e| panic!("cannot run the C compiler {cc}: {e}"));
    assert!(
        o.status.success(),
        "{src} does not compile against include/subllm.h:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn c_programs_use_the_abi_as_documented() {
    let lib = lib_dir();
    let dir = common::scratch_dir("capi");
    let model = common::smollm2_path();

    let abi = dir.join("abi_test");
    compile("tests/c/abi_test.c", &abi, &lib);
    let o = Command::new(&abi).arg(&model).output().unwrap();
    assert!(
        o.status.success(),
        "abi_test failed:\n{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );

    let simple = dir.join("simple");
    compile("examples/c/simple.c", &simple, &lib);
    let prompt =
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n";
    let o = Command::new(&simple)
        .arg(&model)
        .arg(prompt)
        .arg("24")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let c_text = String::from_utf8(o.stdout).unwrap();

    // the same through the Rust API
    let m = Model::load(&model).unwrap();
    let tok = m.tokenizer().unwrap();
    let ids = tok.encode(prompt, true, true).unwrap();
    let mut s = Session::new(
        &m,
        SessionParams {
            n_ctx: 512,
            ..Default::default()
        },
    )
    .unwrap();
    let gp = GenerateParams {
        n_predict: 24,
        sampler: SamplerParams {
            temperature: 0.0,
            ..Default::default()
        },
        ..Default::default()
    };
    let g = generate(&mut s, Some(tok), &ids, &gp, &mut |_| Ok(())).unwrap();
    assert_eq!(c_text, format!("{prompt}{}\n", g.text));
    assert!(g.text.contains("Paris"), "{}", g.text);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("KV cache:"), "{stderr}");

    // and through Python's ctypes (examples/python/simple.py)
    let o = Command::new(common::python())
        .arg(common::repo_root().join("examples/python/simple.py"))
        .arg(&model)
        .arg(prompt)
        .arg("24")
        .env("SUBLLM_LIB", lib.join("libsubllm.so"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(String::from_utf8(o.stdout).unwrap(), c_text);
}

#[test]
fn the_committed_header_is_what_cbindgen_writes() {
    // CI installs cbindgen and sets SUBLLM_REQUIRE_CBINDGEN; elsewhere the
    // check is skipped with a note when cbindgen is missing
    let root = common::repo_root();
    let Ok(o) = Command::new("cbindgen")
        .current_dir(&root)
        .args([
            "--config",
            "capi/cbindgen.toml",
            "--crate",
            "subllm-capi",
            "--quiet",
        ])
        .output()
    else {
        assert!(
            std::env::var_os("SUBLLM_REQUIRE_CBINDGEN").is_none(),
            "cbindgen is not installed (cargo install cbindgen)"
        );
        eprintln!("cbindgen is not installed: header check skipped");
        return;
    };
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let committed = std::fs::read_to_string(root.join("include/subllm.h")).unwrap();
    assert!(
        String::from_utf8_lossy(&o.stdout) == committed,
        "include/subllm.h is stale: run cbindgen --config capi/cbindgen.toml --crate subllm-capi --output include/subllm.h"
    );
}
