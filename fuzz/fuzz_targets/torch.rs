//! A PyTorch zip checkpoint in memory (zip index, pickle, storages, views):
//! every tensor it lists loaded as f32. Under `cfg(fuzzing)` the zip reader
//! skips its CRC check, so mutations reach the pickle and the storages.
#![no_main]

use libfuzzer_sys::fuzz_target;
use subllm_convert::source::Source;

fuzz_target!(|data: &[u8]| {
    let Ok(src) = Source::torch_from_bytes("fuzz.pt", data.to_vec()) else {
        return;
    };
    let names: Vec<String> = src.tensors().iter().map(|t| t.name.clone()).collect();
    for name in &names {
        let _ = src.load(name);
    }
});
