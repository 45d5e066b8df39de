//! Chat template rendering with a hostile template: the input up to the
//! first NUL byte is the template, the rest a user message. Rendering must
//! end (fuel), stay within its output bound, and never panic.
//!
//! This runs `chat::render`, the in-process rendering, so that libFuzzer
//! sees its coverage: `chat::apply` renders in a forked child, whose
//! coverage the fuzzer never sees. The one class `apply` adds a bound for,
//! values grown past the memory budget, shows up here as an out-of-memory
//! finding; each such input goes to fuzz/regressions/chat_template/, where
//! a test checks that `apply` refuses it with one line.
#![no_main]

use libfuzzer_sys::fuzz_target;
use subllm::chat::{self, Message};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (template, content) = text.split_once('\0').unwrap_or((&text, "hi"));
    let messages = [
        Message::new("system", "You are helpful."),
        Message::new("user", content),
        Message::new("assistant", "Hello."),
    ];
    let _ = chat::render(template, &messages, "<s>", "</s>", true);
});
