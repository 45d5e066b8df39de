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

/// Instructions a template may execute per render (minijinja's fuel).
/// Real chat templates spend a few hundred per message; a loop meant to
/// hang the caller runs out within a fraction of a second.
pub const TEMPLATE_FUEL: u64 = 2_000_000;
/// Nesting of macro calls, includes and blocks a template may reach.
pub const TEMPLATE_RECURSION: usize = 64;
/// Bytes a rendering may write beyond the messages' own bytes (whose
/// content a template copies, usually once).
pub const TEMPLATE_OUTPUT_SLACK: usize = 1 << 20;

/// Largest `indent` width, `batch` size and printf width
/// or precision a template may ask for. minijinja's own filters hand these
/// numbers to `str::repeat` or an allocation unchecked, so one filter call
/// could reserve gigabytes; real chat templates use single digits.
pub const TEMPLATE_MAX_PAD: usize = 1024;

fn too_large(what: &str, n: usize) -> minijinja::Error {
    minijinja::Error::new(
        minijinja::ErrorKind::InvalidOperation,
        format!("{what} {n} is larger than {TEMPLATE_MAX_PAD}"),
    )
}

/// Replaces the builtin filters that take a size from the template with
/// versions that bound it by [`TEMPLATE_MAX_PAD`] first.
fn add_bounded_filters(env: &mut Environment<'_>) {
    use minijinja::filters;
    use minijinja::value::{Kwargs, Rest, StringInput};
    use minijinja::State;
    type R = std::result::Result<Value, minijinja::Error>;
    env.add_filter(
        "indent",
        |v: StringInput<'_>,
         width: Option<usize>,
         first: Option<bool>,
         blank: Option<bool>,
         kw: Kwargs|
         -> R {
            let w = match width {
                Some(w) => Some(w),
                None => kw.get::<Option<usize>>("width")?,
            };
            if let Some(w) = w.filter(|&w| w > TEMPLATE_MAX_PAD) {
                return Err(too_large("indent width", w));
            }
            filters::indent(v, width, first, blank, kw)
        },
    );
    env.add_filter(
        "batch",
        |state: &State, v: Value, count: usize, fill: Option<Value>| -> R {
            if count > TEMPLATE_MAX_PAD {
                return Err(too_large("batch size", count));
            }
            filters::batch(state, v, count, fill)
        },
    );
    env.add_filter(
        "format",
        |state: &State, f: &Value, args: Rest<Value>| -> R {
            if let Some(spec) = f.as_str() {
                check_printf(spec)?;
            }
            filters::format(state, f, args)
        },
    );
}

/// Refuses printf conversions whose width or precision is `*` (taken from
/// the arguments) or a number above [`TEMPLATE_MAX_PAD`].
fn check_printf(spec: &str) -> std::result::Result<(), minijinja::Error> {
    let mut chars = spec.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            continue;
        }
        let mut n: usize = 0;
        while let Some(&d) = chars.peek() {
            if d == '*' {
                return Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    "format: '*' widths are not supported",
                ));
            }
            if let Some(v) = d.to_digit(10) {
                n = n.saturating_mul(10).saturating_add(v as usize);
                if n > TEMPLATE_MAX_PAD {
                    return Err(too_large("format width", n));
                }
            } else if "-+ #0.".contains(d) {
                n = 0;
            } else {
                break;
            }
            chars.next();
        }
    }
    Ok(())
}

/// Renders `messages` with `template`, ending with the assistant's turn
/// opened when `add_generation_prompt` is set.
///
/// The template usually comes from a model file, so it is hostile input:
/// its instructions are bounded by [`TEMPLATE_FUEL`], its nesting by
/// [`TEMPLATE_RECURSION`], and its output by four times the messages'
/// bytes plus [`TEMPLATE_OUTPUT_SLACK`]; crossing a bound is an
/// [`Error::Template`] saying which.
pub fn apply(
    template: &str,
    messages: &[Message],
    bos: &str,
    eos: &str,
    add_generation_prompt: bool,
) -> Result<String> {
    let mut env = Environment::new();
    env.set_fuel(Some(TEMPLATE_FUEL));
    env.set_recursion_limit(TEMPLATE_RECURSION);
    add_bounded_filters(&mut env);
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
    let input: usize = messages
        .iter()
        .map(|m| m.role.len() + m.content.len())
        .sum::<usize>()
        + bos.len()
        + eos.len();
    let mut out = Capped {
        buf: Vec::new(),
        limit: input
            .saturating_mul(4)
            .saturating_add(TEMPLATE_OUTPUT_SLACK),
    };
    let rendered = env.get_template("chat").and_then(|t| {
        t.render_captured_to(
            context! {
                messages => msgs,
                add_generation_prompt => add_generation_prompt,
                bos_token => bos,
                eos_token => eos,
            },
            &mut out,
        )
    });
    match rendered {
        Ok(_) => String::from_utf8(out.buf)
            .map_err(|_| Error::Template("the template wrote invalid UTF-8".into())),
        Err(e) if e.kind() == minijinja::ErrorKind::OutOfFuel => Err(Error::Template(format!(
            "the template ran more than {TEMPLATE_FUEL} instructions; stopped"
        ))),
        Err(e) if e.kind() == minijinja::ErrorKind::WriteFailure => Err(Error::Template(format!(
            "the template wrote more than {} bytes; stopped",
            out.limit
        ))),
        Err(e) => Err(Error::Template(e.to_string())),
    }
}

/// A byte sink that refuses to grow past `limit`.
struct Capped {
    buf: Vec<u8>,
    limit: usize,
}

impl std::io::Write for Capped {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        if self.buf.len() + b.len() > self.limit {
            return Err(std::io::Error::other("template output limit"));
        }
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
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

    fn template_error(t: &str) -> String {
        match apply(t, &[Message::new("user", "hi")], "", "", true) {
            Err(Error::Template(m)) => m,
            other => panic!("{t}: {other:?}"),
        }
    }

    #[test]
    fn hostile_templates_stop_with_one_line() {
        // a loop meant to hang: out of fuel
        let e = template_error(
            "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        );
        assert!(e.contains("instructions"), "{e}");
        // output doubling every step: stopped at the output bound
        let e = template_error("{% for i in range(100000) %}{{ 'x' * 100000 }}{% endfor %}");
        assert!(e.contains("bytes"), "{e}");
        // unbounded recursion: the nesting bound
        let e = template_error("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}");
        assert!(!e.is_empty());
        // a real template with a long conversation is well inside the bounds
        let msgs: Vec<Message> = (0..200)
            .map(|i| {
                Message::new(
                    if i % 2 == 0 { "user" } else { "assistant" },
                    &"word ".repeat(200),
                )
            })
            .collect();
        let s = apply(CHATML, &msgs, "", "", true).unwrap();
        assert!(s.len() > 200 * 1000);
    }

    #[test]
    fn filters_taking_a_size_from_the_template_are_bounded() {
        // minijinja's own indent reserved the whole width up front and
        // aborted the process (an input run through the chat_template fuzz
        // target); batch and format take sizes from the template the same way
        for t in [
            "{{ 'x' | indent(100000000000) }}",
            "{{ 'x' | indent(width=100000000000) }}",
            "{{ [1] | batch(100000000000, 'x') | list }}",
            "{{ '%100000000000d' | format(1) }}",
            "{{ '%.100000000000f' | format(1.5) }}",
            "{{ '%-*d' | format(100000000000, 1) }}",
        ] {
            let e = template_error(t);
            assert!(e.contains("larger than") || e.contains("'*'"), "{t}: {e}");
        }
        // ordinary uses still work as minijinja's filters do
        let ok = |t: &str| apply(t, &[Message::new("user", "a\nb")], "", "", true).unwrap();
        assert_eq!(ok("{{ messages[0].content | indent(2) }}"), "a\n  b");
        assert_eq!(
            ok("{{ messages[0].content | indent(width=2, first=true) }}"),
            "  a\n  b"
        );
        assert_eq!(
            ok("{{ '%05.1f|%-3s|%%' | format(2.25, 'x') }}"),
            "002.2|x  |%"
        );
        assert_eq!(
            ok("{{ [1, 2, 3] | batch(2, 0) | list }}"),
            "[[1, 2], [3, 0]]"
        );
    }
}
