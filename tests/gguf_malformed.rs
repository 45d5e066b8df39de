//! Hostile GGUF files: each hand-made malformed file gives its typed error;
//! truncation at every byte and random corruption never panic.

use subllm::gguf::{GgufError, GgufFile, MAX_NESTING};

/// Hand-assembles GGUF bytes, independently of our writer.
#[derive(Clone, Default)]
struct Raw(Vec<u8>);

impl Raw {
    fn header(version: u32, n_tensors: u64, n_kv: u64) -> Raw {
        let mut r = Raw(b"GGUF".to_vec());
        r.u32(version).u64(n_tensors).u64(n_kv);
        r
    }
    fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.0.extend_from_slice(b);
        self
    }
    fn str(&mut self, s: &str) -> &mut Self {
        self.u64(s.len() as u64).bytes(s.as_bytes())
    }
    fn kv_u32(&mut self, key: &str, v: u32) -> &mut Self {
        self.str(key).u32(4).u32(v)
    }
    fn tensor(&mut self, name: &str, dims: &[u64], ty: u32, offset: u64) -> &mut Self {
        self.str(name).u32(dims.len() as u32);
        for &d in dims {
            self.u64(d);
        }
        self.u32(ty).u64(offset)
    }
    fn pad(&mut self, align: usize) -> &mut Self {
        while !self.0.len().is_multiple_of(align) {
            self.0.push(0);
        }
        self
    }
    fn zeros(&mut self, n: usize) -> &mut Self {
        self.0.resize(self.0.len() + n, 0);
        self
    }
    fn parse(&self) -> Result<GgufFile, GgufError> {
        GgufFile::from_bytes(self.0.clone())
    }
}

/// A valid file: two keys and two F32 tensors of 32 and 16 elements.
fn valid() -> Raw {
    let mut r = Raw::header(3, 2, 2);
    r.kv_u32("a.count", 7).str("a.name").u32(8).str("tiny");
    r.tensor("x", &[32], 0, 0).tensor("y", &[4, 4], 0, 128);
    r.pad(32).zeros(128 + 64);
    r
}

fn err(r: &Raw) -> GgufError {
    match r.parse() {
        Ok(_) => panic!("a malformed file parsed"),
        Err(e) => e,
    }
}

macro_rules! expect {
    ($raw:expr, $pat:pat) => {{
        let e = err(&$raw);
        assert!(
            matches!(e, $pat),
            "expected {}, got {e:?}",
            stringify!($pat)
        );
        assert!(!e.to_string().is_empty());
        e
    }};
}

#[test]
fn the_valid_base_file_parses() {
    let f = valid().parse().unwrap();
    assert_eq!(f.tensors().len(), 2);
    assert_eq!(f.get_u64("a.count").unwrap(), 7);
    assert_eq!(f.dequantize("y").unwrap().len(), 16);
}

#[test]
fn header_errors() {
    expect!(Raw(vec![]), GgufError::Truncated { .. });
    expect!(Raw(b"GGUG".to_vec()), GgufError::BadMagic(_));
    expect!(Raw(b"GGUF\x03\x00".to_vec()), GgufError::Truncated { .. });
    expect!(Raw::header(1, 0, 0), GgufError::UnsupportedVersion(1));
    expect!(Raw::header(4, 0, 0), GgufError::UnsupportedVersion(4));
    expect!(Raw::header(3u32.swap_bytes(), 0, 0), GgufError::BigEndian);
    let mut r = Raw(b"GGUF".to_vec());
    r.u32(3).u32(0); // tensor count cut short
    expect!(r, GgufError::Truncated { .. });
    let mut r = Raw(b"GGUF".to_vec());
    r.u32(3).u64(0).u32(1); // metadata count cut short
    expect!(r, GgufError::Truncated { .. });
}

#[test]
fn counts_larger_than_the_file() {
    expect!(Raw::header(3, 0, u64::MAX), GgufError::CountTooLarge { .. });
    expect!(Raw::header(3, 0, 1 << 40), GgufError::CountTooLarge { .. });
    expect!(Raw::header(3, u64::MAX, 0), GgufError::CountTooLarge { .. });
    let mut r = Raw::header(3, 3, 0);
    r.tensor("only-one", &[32], 0, 0);
    expect!(r, GgufError::CountTooLarge { .. });
    // an array claiming 2^60 u32 elements
    let mut r = Raw::header(3, 0, 1);
    r.str("arr").u32(9).u32(4).u64(1 << 60).u32(1);
    expect!(r, GgufError::CountTooLarge { .. });
    // an array of strings claiming more strings than 8-byte length fields fit
    let mut r = Raw::header(3, 0, 1);
    r.str("arr").u32(9).u32(8).u64(1000).str("a").str("b");
    expect!(r, GgufError::CountTooLarge { .. });
}

#[test]
fn huge_string_lengths() {
    let mut r = Raw::header(3, 0, 1);
    r.u64(1 << 63).bytes(b"key").zeros(16);
    let e = expect!(r, GgufError::Truncated { .. });
    assert!(e.to_string().contains("byte 32"), "{e}");
    let mut r = Raw::header(3, 0, 1);
    r.str("k").u32(8).u64(u64::MAX).bytes(b"abc").zeros(16);
    expect!(r, GgufError::Truncated { .. });
}

#[test]
fn truncated_in_each_section() {
    // (bytes remain for the counts' lower bound, so the cut itself is found)
    let mut r = Raw::header(3, 0, 1);
    r.u64(20).bytes(b"abcdefghijklm"); // in a key
    expect!(r, GgufError::Truncated { .. });
    let mut r = Raw::header(3, 0, 1);
    r.str("k").u32(10).bytes(&[1, 2, 3]); // in a u64 value
    expect!(r, GgufError::Truncated { .. });
    let mut r = Raw::header(3, 0, 1);
    r.str("key").u32(9).u32(5).u64(4).u32(1).u32(2); // in an i32 array: the bound catches it
    expect!(r, GgufError::CountTooLarge { count: 4, .. });
    let mut r = Raw::header(3, 0, 1);
    r.str("key")
        .u32(9)
        .u32(8)
        .u64(2)
        .str("abc")
        .u64(50)
        .bytes(b"xy"); // in a string array
    expect!(r, GgufError::Truncated { .. });
    // in the tensor table, in the data section
    let full = valid();
    let mut r = Raw::header(3, 1, 0);
    r.str("a-long-tensor-name").u32(2).u64(32); // second dimension missing
    expect!(r, GgufError::Truncated { .. });
    let len = full.0.len();
    expect!(
        Raw(full.0[..len - 1].to_vec()),
        GgufError::TensorOutOfBounds { .. }
    );
}

#[test]
fn bad_values() {
    let mut r = Raw::header(3, 0, 1);
    r.str("k").u32(13).u32(0);
    expect!(r, GgufError::UnknownValueType { id: 13, .. });
    let mut r = Raw::header(3, 0, 1);
    r.str("k").u32(9).u32(77).u64(0);
    expect!(r, GgufError::UnknownValueType { id: 77, .. });
    let mut r = Raw::header(3, 0, 1);
    r.str("k").u32(7).u8(2);
    expect!(r, GgufError::InvalidBool { value: 2, .. });
    let mut r = Raw::header(3, 0, 1);
    r.u64(2).bytes(&[0xff, 0xfe]).u32(4).u32(0);
    expect!(r, GgufError::InvalidUtf8 { .. });
    let mut r = Raw::header(3, 0, 1);
    r.str("k").u32(8).u64(3).bytes(&[b'a', 0xc3, b'(']);
    expect!(r, GgufError::InvalidUtf8 { .. });
    let mut r = Raw::header(3, 0, 2);
    r.kv_u32("same", 1).kv_u32("same", 2);
    expect!(r, GgufError::DuplicateKey(_));
}

#[test]
fn deep_array_nesting() {
    let mut r = Raw::header(3, 0, 1);
    r.str("deep").u32(9);
    for _ in 0..MAX_NESTING + 1 {
        r.u32(9).u64(1);
    }
    r.u32(4).u64(0);
    expect!(r, GgufError::NestingTooDeep { .. });
    // exactly at the limit is fine
    let mut r = Raw::header(3, 0, 1);
    r.str("deep").u32(9);
    for _ in 0..MAX_NESTING - 1 {
        r.u32(9).u64(1);
    }
    r.u32(4).u64(0);
    assert!(r.parse().is_ok());
}

#[test]
fn bad_alignment() {
    for a in [0u32, 3, 48] {
        let mut r = Raw::header(3, 0, 1);
        r.kv_u32("general.alignment", a);
        expect!(r, GgufError::BadAlignment(_));
    }
    let mut r = Raw::header(3, 0, 1);
    r.str("general.alignment").u32(8).str("32");
    expect!(r, GgufError::WrongType { .. });
}

fn one_tensor(name: &str, dims: &[u64], ty: u32, offset: u64, data: usize) -> Raw {
    let mut r = Raw::header(3, 1, 0);
    r.tensor(name, dims, ty, offset).pad(32).zeros(data);
    r
}

#[test]
fn bad_tensor_infos() {
    let long = "n".repeat(1000);
    expect!(
        one_tensor(&long, &[32], 0, 0, 128),
        GgufError::NameTooLong { .. }
    );
    expect!(
        one_tensor("t", &[1, 1, 1, 1, 1], 0, 0, 4),
        GgufError::TooManyDims { n_dims: 5, .. }
    );
    expect!(
        one_tensor("t", &[1 << 32, 1 << 32], 0, 0, 0),
        GgufError::ShapeOverflow { .. }
    );
    expect!(
        one_tensor("t", &[1 << 62, 4], 0, 0, 0),
        GgufError::ShapeOverflow { .. }
    );
    expect!(
        one_tensor("t", &[32], 99, 0, 128),
        GgufError::UnknownTensorType { id: 99, .. }
    );
    expect!(
        one_tensor("t", &[32], 4, 0, 128),
        GgufError::UnknownTensorType { id: 4, .. }
    );
    expect!(
        one_tensor("t", &[33], 2, 0, 64),
        GgufError::RowNotBlockAligned { ne0: 33, .. }
    );
    expect!(
        one_tensor("t", &[32], 0, 1, 256),
        GgufError::MisalignedTensor { offset: 1, .. }
    );
    expect!(
        one_tensor("t", &[32], 0, 1 << 20, 128),
        GgufError::TensorOutOfBounds { .. }
    );
    expect!(
        one_tensor("t", &[32], 0, u64::MAX - 31, 128),
        GgufError::TensorOutOfBounds { .. }
    );
    expect!(
        one_tensor("t", &[1 << 40], 0, 0, 128),
        GgufError::TensorOutOfBounds { .. }
    );
}

#[test]
fn duplicate_and_overlapping_tensors() {
    let mut r = Raw::header(3, 2, 0);
    r.tensor("w", &[32], 0, 0)
        .tensor("w", &[32], 0, 128)
        .pad(32)
        .zeros(256);
    expect!(r, GgufError::DuplicateTensor(_));
    let mut r = Raw::header(3, 2, 0);
    r.tensor("a", &[32], 0, 0)
        .tensor("b", &[32], 0, 96)
        .pad(32)
        .zeros(256);
    expect!(r, GgufError::OverlappingTensors(..));
}

#[test]
fn unsupported_types_parse_but_refuse_to_dequantize() {
    // IQ2_XXS (id 16): 256 elements in 66 bytes; inspectable, not computable
    let r = one_tensor("iq", &[256], 16, 0, 66);
    let f = r.parse().unwrap();
    assert!(matches!(f.dequantize("iq"), Err(GgufError::Quant { .. })));
    assert!(matches!(
        f.dequantize("nope"),
        Err(GgufError::MissingTensor(_))
    ));
}

#[test]
fn every_truncation_is_an_error_never_a_panic() {
    let full = valid();
    for cut in 0..full.0.len() {
        assert!(
            Raw(full.0[..cut].to_vec()).parse().is_err(),
            "cut at {cut} parsed"
        );
    }
}

#[test]
fn random_corruption_never_panics() {
    let base = valid();
    let mut s = 0x1234_5678_9abc_def0u64;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    for _ in 0..20_000 {
        let mut r = base.clone();
        for _ in 0..1 + next() % 4 {
            let i = (next() % r.0.len() as u64) as usize;
            r.0[i] = match next() % 3 {
                0 => next() as u8,
                1 => 0xff,
                _ => r.0[i] ^ (1 << (next() % 8)),
            };
        }
        if let Ok(f) = r.parse() {
            for t in f.tensors() {
                let _ = f.dequantize(&t.name);
            }
        }
    }
}
