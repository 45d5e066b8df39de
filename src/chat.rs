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

/// Memory a rendering may allocate (on Linux, where it is enforced).
pub const TEMPLATE_MEMORY: u64 = 256 << 20;

/// Renders `messages` with `template`, ending with the assistant's turn
/// opened when `add_generation_prompt` is set.
///
/// The template usually comes from a model file, so it is hostile input:
/// its instructions are bounded by [`TEMPLATE_FUEL`], its nesting by
/// [`TEMPLATE_RECURSION`], its output by four times the messages' bytes
/// plus [`TEMPLATE_OUTPUT_SLACK`], and sizes it hands to filters by
/// [`TEMPLATE_MAX_PAD`]; crossing a bound is an [`Error::Template`] saying
/// which. Fuel bounds steps, not the size of each value (a few `~` of
/// `'x' * 99999999` make gigabytes), so on Linux the rendering runs in a
/// forked child whose address space may grow by [`TEMPLATE_MEMORY`] only
/// (see [`isolated`]); a child that runs out is "the template needed more
/// than N MiB". Elsewhere it runs in-process, without the memory bound.
pub fn apply(
    template: &str,
    messages: &[Message],
    bos: &str,
    eos: &str,
    add_generation_prompt: bool,
) -> Result<String> {
    #[cfg(all(
        target_os = "linux",
        any(target_arch = "x86_64", target_arch = "aarch64")
    ))]
    {
        isolated::run(TEMPLATE_MEMORY, || {
            render(template, messages, bos, eos, add_generation_prompt)
        })
    }
    #[cfg(not(all(
        target_os = "linux",
        any(target_arch = "x86_64", target_arch = "aarch64")
    )))]
    {
        render(template, messages, bos, eos, add_generation_prompt)
    }
}

/// [`apply`] in this process, with every bound but the memory one.
pub fn render(
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

/// Rendering in a child process with a memory limit (Linux x86-64 and
/// aarch64: the FFI below uses their syscall numbers and struct layouts).
///
/// `fork` copies only the calling thread; the child runs pure Rust code
/// (the template engine) and the allocator, which glibc makes safe to use
/// after `fork`. Before rendering, the child restores the default action
/// for the fatal signals (a sanitizer or fuzzer runtime of the parent must
/// not report the child's end as its own), sends its stderr to /dev/null,
/// and caps its address space at its current size plus the budget. An
/// allocation beyond that fails and the child aborts; the parent sees an
/// abnormal exit and answers with one error line. The result comes back
/// through a pipe: a status byte, then the text or the error message.
#[cfg(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
pub mod isolated {
    use std::ffi::{c_char, c_int, c_ulong};
    use std::fs::File;
    use std::io::{Read, Write};
    use std::os::fd::FromRawFd;

    use crate::error::{Error, Result};

    #[repr(C)]
    struct RLimit {
        cur: c_ulong,
        max: c_ulong,
    }

    const RLIMIT_AS: c_int = 9;
    const O_WRONLY: c_int = 1;
    const O_CLOEXEC: c_int = 0o2000000;
    const SIG_DFL: usize = 0;
    const FATAL: [c_int; 6] = [4, 5, 6, 7, 8, 11]; // ILL TRAP ABRT BUS FPE SEGV

    extern "C" {
        fn fork() -> c_int;
        fn pipe2(fds: *mut c_int, flags: c_int) -> c_int;
        fn waitpid(pid: c_int, status: *mut c_int, options: c_int) -> c_int;
        fn setrlimit(resource: c_int, rlim: *const RLimit) -> c_int;
        fn signal(signum: c_int, handler: usize) -> usize;
        fn open(path: *const c_char, flags: c_int, ...) -> c_int;
        fn dup2(old: c_int, new: c_int) -> c_int;
        fn close(fd: c_int) -> c_int;
        fn _exit(code: c_int) -> !;
    }

    /// This process's address space in bytes (VmSize), 0 if unknown.
    fn address_space() -> u64 {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmSize:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            })
            .map_or(0, |kb| kb * 1024)
    }

    /// Runs `f` in a child whose address space may grow by `budget` bytes.
    pub fn run(budget: u64, f: impl FnOnce() -> Result<String>) -> Result<String> {
        let limit = address_space().saturating_add(budget);
        let mut fds = [0 as c_int; 2];
        // SAFETY: pipe2 writes two descriptors into the array it is given.
        if unsafe { pipe2(fds.as_mut_ptr(), O_CLOEXEC) } != 0 {
            return Err(Error::Io(std::io::Error::last_os_error()));
        }
        // SAFETY: fork(2). The child only renders (pure Rust and the
        // allocator), writes to its pipe and leaves with _exit, never
        // returning into the caller's code or running destructors.
        let pid = unsafe { fork() };
        if pid < 0 {
            let e = std::io::Error::last_os_error();
            // SAFETY: closing the descriptors pipe2 just gave us.
            unsafe {
                close(fds[0]);
                close(fds[1]);
            }
            return Err(Error::Io(e));
        }
        if pid == 0 {
            // SAFETY: in the child: the libc calls take plain values and a
            // NUL-terminated path; fds[1] is ours and becomes the File.
            unsafe {
                for sig in FATAL {
                    signal(sig, SIG_DFL);
                }
                let null = open(c"/dev/null".as_ptr(), O_WRONLY);
                if null >= 0 {
                    dup2(null, 2);
                }
                close(fds[0]);
                let rl = RLimit {
                    cur: limit as c_ulong,
                    max: limit as c_ulong,
                };
                if limit == budget || setrlimit(RLIMIT_AS, &rl) != 0 {
                    _exit(4);
                }
                let mut w = File::from_raw_fd(fds[1]);
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
                let msg = match r {
                    Ok(Ok(s)) => [&[0u8][..], s.as_bytes()].concat(),
                    Ok(Err(e)) => [&[1u8][..], e.to_string().as_bytes()].concat(),
                    Err(_) => _exit(3),
                };
                let ok = w.write_all(&msg).is_ok();
                _exit(if ok { 0 } else { 5 })
            }
        }
        // SAFETY: the parent: closing its copy of the write end, and owning
        // the read end as a File.
        let mut r = unsafe {
            close(fds[1]);
            File::from_raw_fd(fds[0])
        };
        let mut msg = Vec::new();
        let read = r.read_to_end(&mut msg);
        let mut status: c_int = 0;
        loop {
            // SAFETY: waitpid on our own child with a valid status pointer.
            let w = unsafe { waitpid(pid, &mut status, 0) };
            if w == pid {
                break;
            }
            if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
                return Err(Error::Template("lost the template's child process".into()));
            }
        }
        let exited_ok = status & 0x7f == 0 && (status >> 8) & 0xff == 0;
        if read.is_err() || !exited_ok || msg.is_empty() {
            let code = (status >> 8) & 0xff;
            return Err(Error::Template(if status & 0x7f == 0 && code == 4 {
                "cannot limit the template's memory (setrlimit failed)".into()
            } else {
                format!(
                    "the template needed more than {} MiB of memory; stopped",
                    budget >> 20
                )
            }));
        }
        let text = String::from_utf8(msg[1..].to_vec())
            .map_err(|_| Error::Template("the template wrote invalid UTF-8".into()))?;
        if msg[0] == 0 {
            Ok(text)
        } else {
            // the child's Error::Template, already prefixed "chat template: "
            Err(Error::Template(
                text.strip_prefix("chat template: ").unwrap_or(&text).into(),
            ))
        }
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

    #[test]
    fn templates_that_grow_values_without_writing_them_are_bounded() {
        // fuel counts steps, not bytes: three concatenations of 100 MB
        // strings (minijinja's own cap on `*`) made 2 GB in-process
        let t = "{% set a = 'x' * 99999999 %}{% set b = a ~ a ~ a ~ a ~ a %}\
                 {% set c = b ~ b ~ b ~ b %}{{ c | length }}";
        let e = template_error(t);
        if cfg!(target_os = "linux") {
            assert!(e.contains("MiB of memory"), "{e}");
        }
        // the doubling loop through a namespace
        let e = template_error(
            "{% set ns = namespace(s='xxxxxxxx') %}{% for i in range(60) %}\
             {% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s | length }}",
        );
        assert!(!e.is_empty());
        // errors raised inside the child come back as they are
        assert_eq!(
            template_error("{{ raise_exception('no system role') }}"),
            "invalid operation: no system role (in chat:1)"
        );
    }
}
