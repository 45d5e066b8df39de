//! The GGUF reader on arbitrary bytes; for a file it accepts, every tensor
//! dequantized, then the model (hyper-parameters, tensor shapes, tokenizer,
//! chat template) loaded from it and its tokenizer and template run once.
#![no_main]

use libfuzzer_sys::fuzz_target;
use subllm::chat::{self, Message};
use subllm::gguf::GgufFile;
use subllm::Model;

fuzz_target!(|data: &[u8]| {
    let Ok(file) = GgufFile::from_bytes(data.to_vec()) else {
        return;
    };
    let names: Vec<String> = file.tensors().iter().map(|t| t.name.clone()).collect();
    for name in &names {
        let _ = file.dequantize(name);
    }
    let Ok(model) = Model::from_gguf(file) else {
        return;
    };
    if let Some(tok) = model.tokenizer() {
        if let Ok(ids) = tok.encode("Hello <|im_start|> wörld 123", true, true) {
            let _ = tok.decode(&ids, true);
        }
    }
    if let Some(t) = model.chat_template() {
        let _ = chat::apply(t, &[Message::new("user", "hi")], "<s>", "</s>", true);
    }
});
