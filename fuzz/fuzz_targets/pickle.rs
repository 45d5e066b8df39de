//! The restricted unpickler on arbitrary bytes (a state dict's `data.pkl`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = subllm_convert::pickle::load_state_dict(data);
});
