#!/usr/bin/env python3
"""Side-by-side speed of llama.cpp and subllm on the same GGUF files.

Outside the default build and CI. Builds llama.cpp's llama-bench and llama-quantize
once (bench/build-llama-cpp.sh, cached in bench/.cache/), then alternates the two
tools repetition by repetition (each repetition is one run of each tool with -r 1,
after that tool's own warm-up), same file, same threads, and prints one table.

    bench/compare.py run -m FILE [-m FILE...] [-p 512] [-n 128] [-d 0] [-t 2] [-r 5]
    bench/compare.py doc [--quick]     # the whole comparison set -> docs/performance.md

`doc` generates the synthetic models (subllm-convert --synthetic, F16), quantizes them
with llama.cpp's own llama-quantize so both tools read identical bytes, and writes
docs/performance.md from one run; never edit that file by hand.
"""
import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.path.join(ROOT, "bench", ".cache")
SUBLLM = os.path.join(ROOT, "target", "release")


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, text=True, capture_output=True, **kw).stdout


def llama_bin():
    out = sh([os.path.join(ROOT, "bench", "build-llama-cpp.sh")])
    return out.strip().splitlines()[-1]


def build_subllm():
    subprocess.run(["cargo", "build", "--release", "--bins", "-q"], cwd=ROOT, check=True)


def one_llama(lb, model, test, threads):
    p, n, d = test
    cmd = [os.path.join(lb, "llama-bench"), "-m", model, "-p", str(p), "-n", str(n), "-d", str(d),
           "-t", str(threads), "-r", "1", "-o", "json"]
    rows = json.loads(sh(cmd))
    return rows[0]["avg_ts"]


def one_subllm(model, test, threads, pool=None):
    p, n, d = test
    cmd = [os.path.join(SUBLLM, "subllm-bench"), "-m", model, "-p", str(p), "-n", str(n), "-d", str(d),
           "-t", str(threads), "-r", "1", "-o", "json"]
    env = dict(os.environ, SUBLLM_POOL=pool) if pool else None
    rows = json.loads(sh(cmd, env=env))
    return rows[0]["avg_ts"], rows[0]


def test_name(test):
    p, n, d = test
    s = f"pp{p}" if n == 0 else f"tg{n}" if p == 0 else f"pp{p}+tg{n}"
    return s + (f" @ d{d}" if d else "")


def compare(lb, model, test, threads, reps):
    """Alternates the tools; returns (llama samples, subllm samples, last subllm row)."""
    ls, ss, row = [], [], None
    for i in range(reps):
        # alternate which tool goes first, so neither always runs on a cooler machine
        order = ["llama", "subllm"] if i % 2 == 0 else ["subllm", "llama"]
        for tool in order:
            if tool == "llama":
                ls.append(one_llama(lb, model, test, threads))
            else:
                ts, row = one_subllm(model, test, threads)
                ss.append(ts)
    return ls, ss, row


def fmt(samples):
    m = statistics.mean(samples)
    sd = statistics.stdev(samples) if len(samples) > 1 else 0.0
    return f"{m:.2f} ± {sd:.2f}"


def ratio(ls, ss):
    return statistics.mean(ss) / statistics.mean(ls)


def run_cmd(a):
    build_subllm()
    lb = llama_bin()
    tests = [(p, 0, d) for p in a.p if p > 0 for d in a.d] + [(0, n, d) for n in a.n if n > 0 for d in a.d]
    print("| model | threads | test | llama.cpp t/s | subllm t/s | ratio |")
    print("| --- | ---: | --- | ---: | ---: | ---: |")
    for m in a.m:
        for t in a.t:
            for test in tests:
                ls, ss, _ = compare(lb, m, test, t, a.r)
                print(f"| {os.path.basename(m)} | {t} | {test_name(test)} | {fmt(ls)} | {fmt(ss)} "
                      f"| {ratio(ls, ss):.2f} |", flush=True)


def gguf_read_bytes(path):
    """Bytes a decode step reads: every tensor but the token embedding (one row of
    it), unless the output projection is tied to it."""
    from gguf import GGUFReader  # the test oracle's package
    r = GGUFReader(path)
    names = {t.name for t in r.tensors}
    total = 0
    for t in r.tensors:
        if t.name == "token_embd.weight" and "output.weight" in names:
            continue
        total += int(t.n_bytes)
    return total


def membw(threads):
    out = sh([os.path.join(SUBLLM, "subllm-bench"), "--membw", "1024", "-t", str(threads)])
    return json.loads(out)["read_gbps"]


def synth(spec, path, outtype="f16"):
    if not os.path.exists(path):
        sh([os.path.join(SUBLLM, "subllm-convert"), "--synthetic", spec, "-o", path, "--outtype", outtype, "-q"])
    return path


def quantize(lb, src, dst, ty):
    if not os.path.exists(dst):
        sh([os.path.join(lb, "llama-quantize"), src, dst, ty])
    return dst


def cpu_name():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def doc_cmd(a):
    t_start = time.time()
    build_subllm()
    lb = llama_bin()
    models = os.path.join(CACHE, "models")
    os.makedirs(models, exist_ok=True)
    reps = 2 if a.quick else a.r
    files = []
    for preset, label in [("llama-110m", "110M"), ("llama-1.1b", "1.1B")]:
        f16 = synth(preset, os.path.join(models, f"{preset}.f16.gguf"))
        for ty in ["Q4_0", "Q8_0", "Q4_K_M"]:
            files.append((f"{label} {ty}", quantize(lb, f16, os.path.join(models, f"{preset}.{ty}.gguf"), ty)))
        os.remove(f16) if a.drop_f16 else None
    files.append(("SmolLM2-135M Q4_1", os.path.join(ROOT, "assets", "SmolLM2-135M-Instruct.Q4_1.gguf")))
    bw = {t: membw(t) for t in a.t}

    lines = []
    rows_json = []
    lines.append("| model | threads | test | llama.cpp t/s | subllm t/s | ratio | BW limit t/s | llama.cpp % | subllm % |")
    lines.append("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    tests = [(512, 0, 0), (0, 128, 0), (0, 32, 4096)]
    for label, path in files:
        read = gguf_read_bytes(path)
        r_here = max(2, reps - 1) if "1.1B" in label and a.fewer_big else reps
        for t in a.t:
            for test in tests:
                if test[2] and a.depth_threads and t not in a.depth_threads:
                    continue
                if test[2] and a.depth_for and not any(x in label for x in a.depth_for):
                    continue
                ls, ss, _ = compare(lb, path, test, t, r_here)
                lim = bw[t] * 1e9 / read
                tg = test[1] > 0
                lm, sm = statistics.mean(ls), statistics.mean(ss)
                extra = (f"{lim:.1f} | {100 * lm / lim:.0f}% | {100 * sm / lim:.0f}%" if tg else "- | - | -")
                line = f"| {label} | {t} | {test_name(test)} | {fmt(ls)} | {fmt(ss)} | {ratio(ls, ss):.2f} | {extra} |"
                print(line, flush=True)
                lines.append(line)
                rows_json.append({"model": label, "threads": t, "test": test_name(test), "llama_cpp": ls,
                                  "subllm": ss, "ratio": ratio(ls, ss)})

    # the SUBLLM payoff, both in subllm, same quantization from our own generator
    head = []
    sub = synth("subllm-1.3b", os.path.join(models, "subllm-1.3b.Q4_0.gguf"), "q4_0")
    twin = synth("llama-1.3b", os.path.join(models, "llama-1.3b.Q4_0.gguf"), "q4_0")
    t = max(a.t)
    head.append("| model | test | t/s | kept per level | KV bytes | KV / full |")
    head.append("| --- | --- | ---: | --- | ---: | ---: |")
    res = {}
    for label, path in [("subllm-1.3b Q4_0", sub), ("llama-1.3b Q4_0", twin)]:
        for test in [(4096, 0, 0), (0, 32, 4096)]:
            out = sh([os.path.join(SUBLLM, "subllm-bench"), "-m", path, "-p", str(test[0]), "-n", str(test[1]),
                      "-d", str(test[2]), "-t", str(t), "-r", str(max(2, reps // 2)), "-o", "json"])
            row = json.loads(out)[0]
            res[(label, test)] = row
            n0 = max(row["tokens_per_level"][0], 1)
            kept = "/".join(f"{100 * x / n0:.0f}" for x in row["tokens_per_level"]) + " %"
            head.append(f"| {label} | {test_name(test)} | {row['avg_ts']:.2f} ± {row['stddev_ts']:.2f} | {kept} "
                        f"| {row['kv_bytes'] / 2**20:.1f} MiB | {row['kv_bytes'] / max(row['kv_bytes_full'], 1):.2f} |")
            print(head[-1], flush=True)
    speed = []
    for test in [(4096, 0, 0), (0, 32, 4096)]:
        s, l = res[("subllm-1.3b Q4_0", test)], res[("llama-1.3b Q4_0", test)]
        speed.append(f"- {test_name(test)}: subllm-1.3b is **{s['avg_ts'] / l['avg_ts']:.2f}x** the speed of "
                     f"llama-1.3b; KV bytes **{s['kv_bytes'] / max(l['kv_bytes'], 1):.2f}x**.")

    # our thread pool against rayon's, both in subllm, alternated the same way
    pools = ["| model | threads | test | rayon t/s | ours t/s | ours / rayon |",
             "| --- | ---: | --- | ---: | ---: | ---: |"]
    pool_files = [f for f in files if f[0] in ("110M Q4_0", "1.1B Q4_0", "SmolLM2-135M Q4_1")]
    for label, path in pool_files:
        for test in [(512, 0, 0), (0, 128, 0)]:
            rs, os_ = [], []
            for i in range(reps):
                for pool in (["rayon", "spin"] if i % 2 == 0 else ["spin", "rayon"]):
                    (rs if pool == "rayon" else os_).append(one_subllm(path, test, t, pool)[0])
            pools.append(f"| {label} | {t} | {test_name(test)} | {fmt(rs)} | {fmt(os_)} | {ratio(rs, os_):.2f} |")
            print(pools[-1], flush=True)

    ver = sh(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"]).strip()
    rustc = sh(["rustc", "--version"]).strip()
    minutes = (time.time() - t_start) / 60
    doc = f"""# Performance

Generated by `bench/compare.py doc {' '.join(sys.argv[2:])}` on {datetime.date.today().isoformat()} in one
run ({minutes:.0f} min); regenerated, never edited by hand. Figures are tokens per second, mean ±
standard deviation over {reps} repetitions{' (2 on the 1.1B files)' if a.fewer_big else ''}; the two tools
alternate repetition by repetition (each repetition is one `-r 1` run of each tool after its own
warm-up), on the same file with the same threads.{(' Depth tests ran at ' + ','.join(map(str, a.depth_threads)) + ' thread(s)') if a.depth_threads else ''}{(' for ' + ', '.join(a.depth_for)) if a.depth_for else ''}{'.' if a.depth_threads or a.depth_for else ''}
This machine is shared and noisy: read ratios, not absolute figures, and expect a few
percent of swing between runs.

## Machine and versions

- CPU: {cpu_name()}, {os.cpu_count()} cores; subllm kernel level: {json.loads(sh([os.path.join(SUBLLM, 'subllm-bench'), '-m', files[-1][1], '-p', '8', '-n', '0', '-r', '1', '-o', 'json']))[0]['cpu_level']}
- memory read bandwidth (measured by `subllm-bench --membw 1024`: 1 GiB summed with the widest vector loads, the better of one sequential stream and four in lockstep per thread, best of 5 passes each): {', '.join(f'{bw[t]:.1f} GB/s with {t} thread(s)' for t in a.t)}
- subllm {ver}, {rustc}
- llama.cpp from the llama-cpp-python 0.3.36 source package, built by `bench/build-llama-cpp.sh`
  with each x86 extension this CPU lists in /proc/cpuinfo, except AMX (advertised on some of
  these machines, but the sandbox grants no AMX tile state: ggml's AMX path dies with SIGILL)

## Commands

```sh
bench/compare.py doc          # this file
bench/compare.py run -m FILE -p 512 -n 128 -t 1,2 -r 5
```

Models: `llama-110m` and `llama-1.1b` from `subllm-convert --synthetic PRESET --outtype f16`,
quantized to Q4_0, Q8_0 and Q4_K_M by llama.cpp's own `llama-quantize`, so both tools read
identical bytes; SmolLM2-135M-Instruct Q4_1 as shipped. BW limit: memory read bandwidth over
the bytes one decode step reads (every tensor except the token embedding, read one row at a
time), the best a decode could do; the % columns are the fraction of it each tool reached.

## llama.cpp and subllm, same file

{chr(10).join(lines)}

ratio = subllm / llama.cpp (above 1: subllm is faster).

## The SUBLLM payoff (both in subllm)

`subllm-1.3b` (d2048, `TTTTT(TTTTT(TTTT)TTTTT)TTTTT`, 16 heads, FFN 5504, scorers calibrated to
keep 64% per level) against `llama-1.3b` (the same with 24 plain blocks), both Q4_0 from the
generator, {t} threads. Kept per level and KV bytes are for the whole cache after the test.

{chr(10).join(head)}

{chr(10).join(speed)}

## Thread pool: ours against rayon's (both in subllm)

The CPU backend splits every op over a persistent pool of its own (`subllm_kernels::pool`:
workers spin for 1 ms between ops, then park; the caller works too and waits only for the
workers that joined). `SUBLLM_POOL=rayon` runs the same ops on a rayon pool instead; the two
alternate as above, {t} threads.

{chr(10).join(pools)}
"""
    with open(os.path.join(ROOT, "docs", "performance.md"), "w") as f:
        f.write(doc)
    with open(os.path.join(CACHE, "performance.json"), "w") as f:
        json.dump(rows_json, f, indent=1)
    print(f"wrote docs/performance.md ({minutes:.0f} min)")


def ints(s):
    return [int(x) for x in s.split(",")]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("-m", action="append", required=True)
    r.add_argument("-p", type=ints, default=[512])
    r.add_argument("-n", type=ints, default=[128])
    r.add_argument("-d", type=ints, default=[0])
    r.add_argument("-t", type=ints, default=[2])
    r.add_argument("-r", type=int, default=5)
    d = sub.add_parser("doc")
    d.add_argument("-t", type=ints, default=[1, 2])
    d.add_argument("-r", type=int, default=3)
    d.add_argument("--quick", action="store_true", help="2 repetitions")
    d.add_argument("--depth-threads", type=ints, default=None,
                   help="run the depth tests only at these thread counts")
    d.add_argument("--drop-f16", action="store_true", help="delete the F16 sources after quantizing")
    d.add_argument("--depth-for", type=lambda v: v.split(","), default=None,
                   help="run the depth tests only for models whose label contains one of these")
    d.add_argument("--fewer-big", action="store_true", help="one repetition fewer (at least 2) on the 1.1B files")
    a = ap.parse_args()
    run_cmd(a) if a.cmd == "run" else doc_cmd(a)


if __name__ == "__main__":
    main()
