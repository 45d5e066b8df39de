//! A checkpoint in memory: `config.json` and a safetensors file, split at
//! the first NUL byte, converted to GGUF bytes (config checks, the tensor
//! plan, loading and quantizing every tensor) and the result loaded back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use subllm::GgmlType;
use subllm_convert::source::Source;

fuzz_target!(|data: &[u8]| {
    let Some(split) = data.iter().position(|&b| b == 0) else {
        return;
    };
    let (config, weights) = (&data[..split], &data[split + 1..]);
    let Ok(src) = Source::safetensors_from_bytes("fuzz.safetensors", weights.to_vec()) else {
        return;
    };
    // the output type comes from the config's length, so each is reached
    let ty = [GgmlType::F32, GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::F16][config.len() % 4];
    let _ = subllm_convert::convert_in_memory(config, &src, ty);
});
