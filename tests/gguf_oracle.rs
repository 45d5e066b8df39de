//! subllm's GGUF reader, writer and quantizers against ggml's own Python
//! package `gguf` (tests/py/oracle.py).

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use common::*;
use subllm::gguf::{GgufFile, GgufWriter, MetaArray, MetaValue};
use subllm::kernels::{kernels_for, quant::TABLE};
use subllm::GgmlType;

/// Types `gguf` can quantize, with the file the oracle wrote their bytes to.
const QUANTIZABLE: &[&str] = &["F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"];

/// The oracle's reference directory, made once per test process.
fn reference_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = scratch_dir("gguf-py-reference");
        oracle(&["write-reference", dir.to_str().unwrap()]);
        dir
    })
}

#[test]
fn reads_a_file_written_by_gguf_py_exactly_as_gguf_py_does() {
    let path = reference_dir().join("reference.gguf");
    let f = GgufFile::open(&path).unwrap();
    let theirs = oracle(&["describe", path.to_str().unwrap()]);
    assert_same_description(&describe(&f), &theirs);

    // spot checks in plain terms, independent of the description format
    assert_eq!(f.get("test.u64"), Some(&MetaValue::U64((1 << 63) + 5)));
    assert_eq!(f.get("test.i8"), Some(&MetaValue::I8(-100)));
    assert_eq!(f.get_str("test.string").unwrap(), "héllo wörld ✓");
    assert_eq!(
        f.get("test.array_nested"),
        Some(&MetaValue::Array(MetaArray::Array(vec![
            MetaArray::I32(vec![1, 2]),
            MetaArray::I32(vec![3])
        ])))
    );
    let t = f.tensor_info("t.3d").unwrap();
    assert_eq!(t.dims, vec![32, 3, 2]);
    assert_eq!(f.dequantize("t.3d").unwrap()[95], 95.0);
}

#[test]
fn tensor_bytes_equal_gguf_py_quantizer_output() {
    let f = GgufFile::open(reference_dir().join("reference.gguf")).unwrap();
    for name in QUANTIZABLE {
        let expected = std::fs::read(reference_dir().join(format!("quant_{name}.bin"))).unwrap();
        let (_, bytes) = f.tensor_bytes(&format!("t.{name}")).unwrap();
        assert!(bytes == expected.as_slice(), "{name}: tensor bytes differ");
    }
}

#[test]
fn dequantization_equals_gguf_py_for_every_type() {
    let f = GgufFile::open(reference_dir().join("reference.gguf")).unwrap();
    let mut checked = Vec::new();
    for t in f.tensors() {
        let expected = reference_dir().join(format!("expected_{}.npy", t.name));
        if t.ty == GgmlType::Q8K {
            assert!(!expected.exists());
            continue; // gguf cannot dequantize Q8_K: llama.cpp's goldens cover it
        }
        let ours = f.dequantize(&t.name).unwrap();
        assert_bits_equal(&t.name, &ours, &read_npy(&expected));
        checked.push(t.ty);
    }
    for k in TABLE {
        if k.ty != GgmlType::Q8K && k.ty != GgmlType::Q8_1 {
            assert!(checked.contains(&k.ty), "{} was not checked", k.ty);
        }
    }
}

#[test]
fn quantizing_equals_gguf_py_bit_for_bit() {
    let rows = read_npy(&reference_dir().join("rows.npy"));
    for name in QUANTIZABLE {
        let ty = GgmlType::from_name(name).unwrap();
        let k = kernels_for(ty).unwrap();
        let mut ours = vec![0u8; ty.row_bytes(rows.len() as u64).unwrap() as usize];
        k.quantize(&rows, &mut ours).unwrap();
        let theirs = std::fs::read(reference_dir().join(format!("quant_{name}.bin"))).unwrap();
        assert_eq!(ours.len(), theirs.len(), "{name}");
        if let Some(i) = ours.iter().zip(&theirs).position(|(a, b)| a != b) {
            panic!("{name}: byte {i} (block {}) differs", i / ty.block_bytes());
        }
    }
}

#[test]
fn block_sizes_equal_gguf_py_table() {
    let table = oracle(&["quant-sizes"]);
    let mut seen = 0;
    for line in table.lines() {
        let p: Vec<&str> = line.split_whitespace().collect();
        let id: u32 = p[1].parse().unwrap();
        if let Some(t) = GgmlType::from_id(id) {
            assert_eq!(t.name(), p[0], "name of type {id}");
            if t == GgmlType::Q8_1 {
                // gguf-py still lists the old 40-byte layout (two f32); ggml's
                // block_q8_1 is two halves and 32 int8 (static_assert in
                // ggml-common.h). Q8_1 is an activation type, never stored.
                assert_eq!(t.block_bytes(), 2 * 2 + 32);
                continue;
            }
            assert_eq!(t.block_len().to_string(), p[2], "{} block length", p[0]);
            assert_eq!(t.block_bytes().to_string(), p[3], "{} block bytes", p[0]);
            seen += 1;
        }
    }
    assert!(seen >= 33, "only {seen} types compared");
}

fn sample_rows(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 4.0
        })
        .collect()
}

/// A file with every metadata type (including what gguf-py cannot write:
/// empty arrays, arrays of arrays of arrays) and a tensor of every type.
fn write_everything(path: &Path, alignment: Option<u32>) {
    let mut w = GgufWriter::new();
    w.set_str("general.architecture", "subllm-test").unwrap();
    if let Some(a) = alignment {
        w.set_u32("general.alignment", a).unwrap();
    }
    w.set("t.u8", MetaValue::U8(255)).unwrap();
    w.set("t.i8", MetaValue::I8(-128)).unwrap();
    w.set("t.u16", MetaValue::U16(65535)).unwrap();
    w.set("t.i16", MetaValue::I16(-32768)).unwrap();
    w.set("t.u32", MetaValue::U32(u32::MAX)).unwrap();
    w.set("t.i32", MetaValue::I32(i32::MIN)).unwrap();
    w.set("t.f32", MetaValue::F32(-0.0)).unwrap();
    w.set("t.bool", MetaValue::Bool(true)).unwrap();
    w.set("t.str", MetaValue::String("日本語 and ascii".into()))
        .unwrap();
    w.set("t.u64", MetaValue::U64(u64::MAX)).unwrap();
    w.set("t.i64", MetaValue::I64(i64::MIN)).unwrap();
    w.set("t.f64", MetaValue::F64(1e-300)).unwrap();
    w.set("t.a_u8", MetaValue::Array(MetaArray::U8(vec![0, 1, 255])))
        .unwrap();
    w.set(
        "t.a_bool",
        MetaValue::Array(MetaArray::Bool(vec![true, false])),
    )
    .unwrap();
    w.set("t.a_f64", MetaValue::Array(MetaArray::F64(vec![0.1, -2.5])))
        .unwrap();
    w.set(
        "t.a_i64",
        MetaValue::Array(MetaArray::I64(vec![-1, 1 << 40])),
    )
    .unwrap();
    w.set(
        "t.a_str",
        MetaValue::Array(MetaArray::String(vec!["x".into(), "".into()])),
    )
    .unwrap();
    w.set("t.a_empty", MetaValue::Array(MetaArray::F32(vec![])))
        .unwrap();
    let nested = MetaArray::Array(vec![
        MetaArray::Array(vec![
            MetaArray::U16(vec![7]),
            MetaArray::String(vec!["deep".into()]),
        ]),
        MetaArray::Array(vec![]),
    ]);
    w.set("t.a_nested", MetaValue::Array(nested)).unwrap();

    let rows = sample_rows(2 * 512, 5);
    let mut data = Vec::new();
    // Q8_1 is an activation type that files never hold (and gguf-py sizes it wrongly)
    for k in TABLE.iter().filter(|k| k.ty != GgmlType::Q8_1) {
        let name = format!("w.{}", k.ty.name());
        w.add_tensor(&name, &[512, 2], k.ty).unwrap();
        let mut q = vec![0u8; k.ty.row_bytes(1024).unwrap() as usize];
        k.quantize(&rows, &mut q).unwrap();
        data.push((name, q));
    }
    w.add_tensor("w.scalar", &[], GgmlType::F32).unwrap();
    data.push(("w.scalar".into(), 1.5f32.to_le_bytes().to_vec()));
    w.add_tensor("w.4d", &[32, 1, 2, 1], GgmlType::F16).unwrap();
    let mut q = vec![0u8; 128];
    kernels_for(GgmlType::F16)
        .unwrap()
        .quantize(&rows[..64], &mut q)
        .unwrap();
    data.push(("w.4d".into(), q));

    let file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut tw = w.begin(file).unwrap();
    for (name, bytes) in &data {
        // stream in two chunks to exercise chunked writes
        let mid = bytes.len() / 2;
        tw.write_chunk(name, &bytes[..mid]).unwrap();
        tw.write_chunk(name, &bytes[mid..]).unwrap();
    }
    tw.finish().unwrap();
}

#[test]
fn gguf_py_reads_what_subllm_writes() {
    let dir = scratch_dir("subllm-written");
    for (file, alignment) in [("default.gguf", None), ("aligned64.gguf", Some(64))] {
        let path = dir.join(file);
        write_everything(&path, alignment);
        let f = GgufFile::open(&path).unwrap();
        assert_eq!(f.alignment, alignment.unwrap_or(32) as u64);
        assert_eq!(f.data_offset % f.alignment, 0);
        let theirs = oracle(&["describe", path.to_str().unwrap()]);
        assert_same_description(&describe(&f), &theirs);
        assert_eq!(f.dequantize("w.scalar").unwrap(), vec![1.5]);
        assert_eq!(f.tensors().len(), TABLE.len() + 1);
    }
}

#[test]
fn writer_output_is_deterministic() {
    let dir = scratch_dir("determinism");
    write_everything(&dir.join("a.gguf"), None);
    write_everything(&dir.join("b.gguf"), None);
    assert!(
        std::fs::read(dir.join("a.gguf")).unwrap() == std::fs::read(dir.join("b.gguf")).unwrap()
    );
}
