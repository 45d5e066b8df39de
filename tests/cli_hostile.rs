//! The CLI against hostile arguments, files and outputs: one clear line
//! and a non-zero status, or a quiet stop when the reader goes away.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn cli() -> Command {
    Command::new(env!("CARGO_BIN_EXE_subllm-cli"))
}

fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let out = cli().args(args).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Waits at most `secs` for `child`; a hang fails the test instead of
/// hanging it.
fn wait_bounded(mut child: std::process::Child, secs: u64) -> std::process::ExitStatus {
    let t0 = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        if t0.elapsed() > Duration::from_secs(secs) {
            let _ = child.kill();
            panic!("no exit within {secs} s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn non_finite_and_out_of_range_sampling_values_are_refused() {
    let m = smollm2_path();
    let m = m.to_str().unwrap();
    for (flag, v) in [
        ("--temp", "nan"),
        ("--temp", "-1"),
        ("--top-p", "nan"),
        ("--top-p", "2"),
        ("--min-p", "nan"),
        ("--repeat-penalty", "0"),
        ("--repeat-penalty", "-1"),
        ("--repeat-penalty", "nan"),
        ("--presence-penalty", "nan"),
        ("--frequency-penalty", "inf"),
    ] {
        let (code, _, err) = run(&["-m", m, "-p", "hi", "-n", "2", flag, v]);
        assert_eq!(code, Some(1), "{flag} {v}: {err}");
        assert!(err.contains("must be"), "{flag} {v}: {err}");
        assert_eq!(err.lines().count(), 1, "{flag} {v}: {err}");
    }
}

#[test]
fn huge_thread_counts_are_clamped_and_said_so() {
    let m = smollm2_path();
    let (code, out, err) = run(&[
        "-m",
        m.to_str().unwrap(),
        "-p",
        "hi",
        "-n",
        "2",
        "--temp",
        "0",
        "-t",
        "4294967295",
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("clamped"), "{err}");
    assert!(out.starts_with("hi"), "{out}");
}

/// Runs `cmd`, reads the first byte of its output, then closes the pipe
/// (`| head -c1`); its exit status (bounded in time) and stderr.
fn after_the_reader_goes(mut cmd: Command) -> (std::process::ExitStatus, String) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 1];
    child
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut first)
        .unwrap();
    drop(child.stdout.take());
    let mut err = String::new();
    let mut stderr = child.stderr.take().unwrap();
    let st = wait_bounded(child, 120);
    stderr.read_to_string(&mut err).unwrap();
    (st, err)
}

#[test]
fn a_closed_pipe_stops_quietly_with_the_sigpipe_status() {
    let m = smollm2_path();
    let m = m.to_str().unwrap();
    for args in [
        // --full prints the whole vocabulary: far more than a pipe buffers
        vec!["inspect", m, "--full"],
        vec![
            "-m",
            m,
            "-p",
            "Once upon a time",
            "-n",
            "200",
            "--temp",
            "0",
        ],
    ] {
        let mut cmd = cli();
        cmd.args(&args);
        let (st, err) = after_the_reader_goes(cmd);
        assert_eq!(st.code(), Some(141), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

#[cfg(target_os = "linux")]
#[test]
fn a_full_disk_is_one_error_line_and_devices_are_never_replaced() {
    let m = smollm2_path();
    let m = m.to_str().unwrap();
    let full = std::fs::File::create("/dev/full").unwrap();
    let out = cli()
        .args(["-m", m, "-p", "hi", "-n", "3", "--temp", "0"])
        .stdout(full)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("No space left"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    let (code, _, err) = run(&["-m", m, "--tokens", "1,2", "--logits-out", "/dev/full"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("refusing"), "{err}");
}

#[cfg(unix)]
#[test]
fn a_fifo_as_the_model_is_refused_without_blocking() {
    let dir = scratch_dir("cli-fifo");
    let fifo = dir.join("model.gguf");
    let ok = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(ok.success());
    for args in [
        vec!["-m", fifo.to_str().unwrap(), "-p", "hi"],
        vec!["inspect", fifo.to_str().unwrap()],
    ] {
        let child = cli()
            .args(&args)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let st = wait_bounded(child, 20);
        assert_eq!(st.code(), Some(1), "{args:?}");
    }
    let (_, _, err) = run(&["inspect", fifo.to_str().unwrap()]);
    assert!(err.contains("not a regular file"), "{err}");
}

#[test]
fn terminal_escapes_in_names_and_keys_never_reach_the_terminal_raw() {
    use subllm::gguf::GgufWriter;
    let dir = scratch_dir("cli-escapes");
    let path = dir.join("evil.gguf");
    let mut w = GgufWriter::new();
    w.set_str("general.architecture\x1b[2J", "llama").unwrap();
    w.add_tensor("weight\x1b]0;pwned\x07", &[4], subllm::GgmlType::F32)
        .unwrap();
    let mut tw = w
        .begin(std::io::BufWriter::new(
            std::fs::File::create(&path).unwrap(),
        ))
        .unwrap();
    tw.write_tensor("weight\x1b]0;pwned\x07", &[0u8; 16])
        .unwrap();
    tw.finish().unwrap();
    let (code, out, err) = run(&["inspect", path.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{err}");
    assert!(!out.contains('\x1b') && !out.contains('\x07'), "{out:?}");
    assert!(out.contains("\\u{1b}"), "{out}");
    // and in error messages: a tensor name asked for by --tensor
    let (code, _, err) = run(&[
        "inspect",
        path.to_str().unwrap(),
        "--tensor",
        "nope\x1b[31m",
        "--out",
        dir.join("x.npy").to_str().unwrap(),
    ]);
    assert_eq!(code, Some(1));
    assert!(!err.contains('\x1b'), "{err:?}");
}

#[test]
fn the_bench_stops_quietly_on_a_closed_pipe_and_says_one_line_on_a_full_disk() {
    let m = smollm2_path();
    let m = m.to_str().unwrap();
    let bench = || Command::new(env!("CARGO_BIN_EXE_subllm-bench"));
    let args = ["-m", m, "-p", "0", "-n", "2,2,2", "-r", "1", "-t", "1"];
    // the table's header comes before any test; each row after it then
    // writes into a pipe with no reader
    let mut cmd = bench();
    cmd.args(args);
    let (st, err) = after_the_reader_goes(cmd);
    assert_eq!(st.code(), Some(141), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    #[cfg(target_os = "linux")]
    {
        let full = std::fs::File::create("/dev/full").unwrap();
        let out = bench().args(args).stdout(full).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(!err.contains("panicked"), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains("No space left"), "{err}");
    }
}
