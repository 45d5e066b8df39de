//! subllm-cli as llama-cli users drive it: special tokens in prompts,
//! llama-cli's flags, the REPL fed through a pipe, and Ctrl-C in a
//! pseudo-terminal.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::*;

/// Runs the CLI on SmolLM2 with `args` and `stdin`; (status, stdout, stderr).
fn cli(args: &[&str], stdin: &str) -> (Option<i32>, String, String) {
    let m = smollm2_path();
    let mut child = Command::new(env!("CARGO_BIN_EXE_subllm-cli"))
        .arg("-m")
        .arg(&m)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const CHATML_Q: &str =
    "<|im_start|>user\\nWhat is the capital of France?<|im_end|>\\n<|im_start|>assistant\\n";

#[test]
fn special_tokens_in_the_prompt_are_parsed_as_llama_cpp_does() {
    let (code, out, err) = cli(
        &[
            "-p",
            CHATML_Q,
            "-e",
            "--temp",
            "0",
            "-n",
            "16",
            "--no-display-prompt",
            "--verbose-prompt",
        ],
        "",
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("The capital of France is Paris."), "{out}");
    assert!(err.contains("       1 -> \"<|im_start|>\""), "{err}");
    // --no-parse-special: the same text is plain characters
    let (code, _, err) = cli(
        &[
            "-p",
            CHATML_Q,
            "-e",
            "--temp",
            "0",
            "-n",
            "1",
            "--no-parse-special",
            "--verbose-prompt",
        ],
        "",
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(!err.contains("       1 -> \"<|im_start|>\""), "{err}");
}

#[test]
fn llama_cli_flags_are_accepted() {
    let dir = scratch_dir("cli-flags");
    let f = dir.join("prompt.txt");
    std::fs::write(&f, "Once upon a time").unwrap();
    let (code, out, err) = cli(
        &[
            "-f",
            f.to_str().unwrap(),
            "-n",
            "-1",
            "-c",
            "24",
            "-ngl",
            "99",
            "-s",
            "-1",
            "--temp",
            "0.7",
            "--ignore-eos",
            "-sys",
            "be brief",
            "-r",
            "zzzz",
        ],
        "",
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(out.starts_with("Once upon a time"), "{out}");
    assert!(err.contains("-ngl 99 has no effect"), "{err}");
    assert!(err.contains("seed: "), "{err}");
    // -n -1 with --ignore-eos runs into the context, and says so
    assert!(err.contains("context of 24 tokens is full"), "{err}");
    assert!(
        err.contains("prompt eval time") && err.contains("eval time"),
        "{err}"
    );
    // a prompt longer than the context: one line, nothing echoed
    let (code, out, err) = cli(&["-p", &"word ".repeat(100), "-c", "16"], "");
    assert_eq!(code, Some(1));
    assert!(out.is_empty(), "{out}");
    assert!(err.contains("more than the context"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    // an empty prompt
    let (code, _, err) = cli(&["-p", ""], "");
    assert_eq!(code, Some(1));
    assert!(err.contains("empty"), "{err}");
}

#[test]
fn the_repl_runs_commands_and_keeps_the_conversation() {
    let (code, out, err) = cli(
        &["-i", "--chat-template", "chatml", "--temp", "0", "-n", "24"],
        "\n/help\n/bogus\nWhat is the capital of France?\n/stats\n/exit\nnever read\n",
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("/reset"), "{err}");
    assert!(err.contains("unknown command /bogus"), "{err}");
    assert!(out.contains("Paris"), "{out}");
    assert!(err.contains("tokens: "), "{err}");
    assert!(!out.contains("never"), "{out}");
    // -i -p: the prompt is the first turn
    let (code, out, err) = cli(
        &[
            "-i",
            "-p",
            "What is the capital of France?",
            "--chat-template",
            "chatml",
            "--temp",
            "0",
            "-n",
            "24",
        ],
        "",
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("Paris"), "{out}");
}

#[test]
fn ctrl_c_in_a_terminal_stops_the_reply_and_keeps_the_repl() {
    // a pseudo-terminal, so that Ctrl-C is the terminal's SIGINT to the
    // foreground process while the reply streams (tests/py/repl_ctrl_c.py)
    let out = Command::new(python())
        .arg(repo_root().join("tests/py/repl_ctrl_c.py"))
        .arg(env!("CARGO_BIN_EXE_subllm-cli"))
        .arg(smollm2_path())
        .output()
        .unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "ok",
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn context_shift_goes_past_a_full_context() {
    // without it: stops at the context, says so, exit 0
    let args = [
        "-p",
        "Once upon a time",
        "-n",
        "120",
        "-c",
        "48",
        "--ignore-eos",
        "--temp",
        "0",
    ];
    let (code, _, err) = cli(&args, "");
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("context of 48 tokens is full"), "{err}");
    assert!(err.contains("--context-shift"), "{err}");
    // with it: all 120 tokens, no note
    let mut with: Vec<&str> = args.to_vec();
    with.extend(["--context-shift", "--keep", "-1"]);
    let (code, out, err) = cli(&with, "");
    assert_eq!(code, Some(0), "{err}");
    assert!(!err.contains("is full"), "{err}");
    // llama.cpp's timings: the 120th token is sampled, never evaluated
    let eval_line = err
        .lines()
        .find(|l| l.trim_start().starts_with("eval time"))
        .unwrap_or_else(|| panic!("{err}"));
    assert!(eval_line.contains("/   119 tokens"), "{eval_line}");
    assert!(out.len() > 200, "{out}");
    let (code, _, err) = cli(&["-p", "hi", "--keep", "-2"], "");
    assert_eq!(code, Some(1));
    assert!(err.contains("--keep"), "{err}");
}
