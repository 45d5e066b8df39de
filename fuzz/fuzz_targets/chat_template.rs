//! Chat template rendering with a hostile template: the input up to the
//! first NUL byte is the template, the rest a user message. Rendering must
//! end (fuel), stay within its output bound, and never panic.
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
    let _ = chat::apply(template, &messages, "<s>", "</s>", true);
});
