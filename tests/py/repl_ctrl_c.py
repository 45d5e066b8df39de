#!/usr/bin/env python3
"""Drives subllm-cli's REPL through a pseudo-terminal, as a person would:
ask for a long answer, press Ctrl-C while it streams, and check that the
reply stops, the REPL stays (its prompt comes back and /stats answers), and
/exit leaves with status 0.

    repl_ctrl_c.py SUBLLM_CLI MODEL.gguf

Prints "ok" on success; any failure is an exception (exit status 1) with
what the terminal showed.
"""
import os
import pty
import select
import sys
import time

cli, model = sys.argv[1], sys.argv[2]
pid, fd = pty.fork()
if pid == 0:
    os.environ["SUBLLM_HISTORY"] = os.devnull
    os.execv(cli, [cli, "-m", model, "-i", "-n", "-1", "--ignore-eos", "-c", "2048", "--temp", "0.8",
                   "-s", "1"])

seen = b""
pos = 0  # where the last match ended


def read_until(needle, timeout):
    """Reads the terminal until `needle` appears after the last match (it
    may already be in what was read with an earlier match)."""
    global seen, pos
    end = time.time() + timeout
    while needle not in seen[pos:]:
        left = end - time.time()
        if left <= 0:
            raise AssertionError(f"no {needle!r} within {timeout}s; terminal so far:\n{seen.decode(errors='replace')}")
        r, _, _ = select.select([fd], [], [], left)
        if r:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                raise AssertionError(f"the REPL ended; terminal:\n{seen.decode(errors='replace')}")
            if not chunk:
                raise AssertionError(f"the REPL ended; terminal:\n{seen.decode(errors='replace')}")
            seen += chunk
    pos += seen[pos:].index(needle) + len(needle)


def read_for(seconds):
    global seen, pos
    end = time.time() + seconds
    while time.time() < end:
        r, _, _ = select.select([fd], [], [], max(0, end - time.time()))
        if r:
            seen += os.read(fd, 4096)


read_until(b"> ", 60)
os.write(fd, b"Tell me a very long story about a dragon and a knight.\r")
read_until(b"\n", 10)  # the line is echoed
mark = len(seen)
read_for(3)  # the answer streams
pos = mark
assert len(seen) - mark > 10, f"no answer streamed:\n{seen.decode(errors='replace')}"
os.write(fd, b"\x03")
read_until(b"(stopped)", 20)
read_until(b"> ", 20)
os.write(fd, b"/stats\r")
read_until(b"> ", 20)
assert b"tokens" in seen.split(b"(stopped)")[-1], f"/stats did not answer:\n{seen.decode(errors='replace')}"
os.write(fd, b"/exit\r")
_, status = os.waitpid(pid, 0)
assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, f"exit status {status}:\n{seen.decode(errors='replace')}"
print("ok")
