//! The C ABI's tokenize and detokenize (`subllm_tokenize`,
//! `subllm_detokenize`) on arbitrary bytes, which need not be UTF-8, with
//! buffers that may be too small. The ABI's source is compiled into this
//! binary (libsubllm is a cdylib/staticlib, not a Rust dependency). The
//! model is SmolLM2 (`SUBLLM_FUZZ_MODEL` to change it). First byte: flags
//! and the output capacity; the rest: text, and read as i32s, tokens.
#![no_main]

#[allow(dead_code, clippy::all)]
#[path = "../../capi/src/lib.rs"]
mod abi;

use std::ffi::CString;
use std::sync::OnceLock;

use abi::*;
use libfuzzer_sys::fuzz_target;

struct Handle(usize);

fn model() -> *const SubllmModel {
    static M: OnceLock<Handle> = OnceLock::new();
    M.get_or_init(|| {
        let path = std::env::var("SUBLLM_FUZZ_MODEL").unwrap_or_else(|_| {
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../assets/SmolLM2-135M-Instruct.Q4_1.gguf"
            )
            .into()
        });
        let c = CString::new(path.clone()).unwrap();
        let mut m = std::ptr::null_mut();
        // SAFETY: valid string and out-pointer
        let s = unsafe { subllm_model_load(c.as_ptr(), std::ptr::null(), &mut m) };
        assert_eq!(
            s,
            SubllmStatus::SubllmOk,
            "{path} (run scripts/fetch-assets.sh)"
        );
        Handle(m as usize)
    })
    .0 as *const SubllmModel
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let m = model();
    let cap = [0usize, 1, 4, 4096][(sel >> 2) as usize & 3];
    let mut toks = vec![0i32; cap];
    let mut n = 0usize;
    // SAFETY: `rest` and `toks` are valid for the lengths passed
    let s = unsafe {
        subllm_tokenize(
            m,
            rest.as_ptr().cast(),
            rest.len(),
            sel & 1 != 0,
            sel & 2 != 0,
            toks.as_mut_ptr(),
            cap,
            &mut n,
        )
    };
    match s {
        SubllmStatus::SubllmOk => assert!(n <= cap),
        SubllmStatus::SubllmErrBufferTooSmall => assert!(n > cap),
        SubllmStatus::SubllmErrInvalidArgument => assert!(std::str::from_utf8(rest).is_err()),
        other => panic!("tokenize gave {other:?}"),
    }
    let ids: Vec<i32> = if s == SubllmStatus::SubllmOk {
        toks[..n].to_vec()
    } else {
        rest.chunks_exact(4)
            .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    };
    let mut buf = vec![0u8; cap * 4];
    let mut nb = 0usize;
    // SAFETY: as above
    let s = unsafe {
        subllm_detokenize(
            m,
            ids.as_ptr(),
            ids.len(),
            sel & 16 != 0,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut nb,
        )
    };
    assert!(matches!(
        s,
        SubllmStatus::SubllmOk
            | SubllmStatus::SubllmErrBufferTooSmall
            | SubllmStatus::SubllmErrInvalidToken
    ));
});
