//! Chat templates: the Jinja template a GGUF carries
//! (`tokenizer.chat_template`), rendered with minijinja.

use minijinja::{context, Environment, Value};

use crate::error::{Error, Result};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn new(role: &str, content: &str) -> Message {
        Message {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// Renders `messages` with `template`, ending with the assistant's turn
/// opened when `add_generation_prompt` is set.
pub fn apply(
    template: &str,
    messages: &[Message],
    bos: &str,
    eos: &str,
    add_generation_prompt: bool,
) -> Result<String> {
    let mut env = Environment::new();
    env.add_function(
        "raise_exception",
        |msg: String| -> std::result::Result<Value, minijinja::Error> {
            Err(minijinja::Error::new(
                minijinja::ErrorKind::InvalidOperation,
                msg,
            ))
        },
    );
    env.add_template("chat", template)
        .map_err(|e| Error::Template(e.to_string()))?;
    let msgs: Vec<Value> = messages
        .iter()
        .map(|m| context! { role => m.role.clone(), content => m.content.clone() })
        .collect();
    env.get_template("chat")
        .and_then(|t| {
            t.render(context! {
                messages => msgs,
                add_generation_prompt => add_generation_prompt,
                bos_token => bos,
                eos_token => eos,
            })
        })
        .map_err(|e| Error::Template(e.to_string()))
}

/// ChatML, for models that carry no template.
pub const CHATML: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chatml() {
        let s = apply(CHATML, &[Message::new("user", "Hi")], "", "", true).unwrap();
        assert_eq!(s, "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
        assert!(apply("{{ raise_exception('no') }}", &[], "", "", true).is_err());
        assert!(apply("{% for %}", &[], "", "", true).is_err());
    }
}
