"""The training corpus: Jane Austen's six novels (Debian `r-cran-janeaustenr`,
R data) and the King James Bible (Debian `bible-kjv-text`, read through the
`bible` program of `bible-kjv`). All public domain.

    python3 train/data.py            # writes train/.cache/text/*.txt

The Debian packages are fetched with `apt-get download` into train/.cache/debs
and unpacked there; nothing is installed on the system.
"""

import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
CACHE = os.path.join(HERE, ".cache")
DEBS = os.path.join(CACHE, "debs")
ROOT = os.path.join(DEBS, "root")
TEXT = os.path.join(CACHE, "text")
PACKAGES = ["r-cran-janeaustenr", "bible-kjv-text", "bible-kjv"]
NOVELS = ["sensesensibility", "prideprejudice", "mansfieldpark", "emma", "northangerabbey", "persuasion"]
HELD_OUT = "persuasion"

sys.path.insert(0, HERE)
import rdata  # noqa: E402


def fetch_debs():
    os.makedirs(ROOT, exist_ok=True)
    have = os.listdir(DEBS)
    for p in PACKAGES:
        if not any(f.startswith(p + "_") and f.endswith(".deb") for f in have):
            subprocess.run(["apt-get", "download", p], cwd=DEBS, check=True)
    for f in sorted(os.listdir(DEBS)):
        if f.endswith(".deb"):
            subprocess.run(["dpkg-deb", "-x", os.path.join(DEBS, f), ROOT], check=True)


def novels():
    lib = os.path.join(ROOT, "usr/lib/R/site-library/janeaustenr/data")
    data = rdata.read_lazyload(os.path.join(lib, "Rdata.rdx"), os.path.join(lib, "Rdata.rdb"))
    out = {}
    for name in NOVELS:
        lines = [l if l is not None else "" for l in data[name]]
        # paragraphs: blank lines separate them, line breaks inside become spaces
        paras, cur = [], []
        for l in lines:
            if l.strip():
                cur.append(l.strip())
            elif cur:
                paras.append(" ".join(cur))
                cur = []
        if cur:
            paras.append(" ".join(cur))
        out[name] = "\n".join(paras) + "\n"
    return out


def bible():
    exe = os.path.join(ROOT, "usr/bin/bible")
    raw = subprocess.run(
        [exe, "-p", os.path.join(ROOT, "usr/lib"), "-l100000", "gen1:1-rev22:21"],
        check=True, capture_output=True, text=True,
    ).stdout
    verses = []
    for l in raw.splitlines():
        m = re.match(r"^\s*\d+\s+(.*)$", l)
        if m:
            verses.append(m.group(1).strip())
        elif l.strip() and verses and not re.match(r"^[1-3]?\s?[A-Z][A-Za-z ]+ \d+$", l.strip()):
            verses[-1] += " " + l.strip()
    return "\n".join(verses) + "\n"


def main():
    fetch_debs()
    os.makedirs(TEXT, exist_ok=True)
    for name, text in novels().items():
        with open(os.path.join(TEXT, f"{name}.txt"), "w") as f:
            f.write(text)
    with open(os.path.join(TEXT, "kjv.txt"), "w") as f:
        f.write(bible())
    for f in sorted(os.listdir(TEXT)):
        print(f, os.path.getsize(os.path.join(TEXT, f)))


if __name__ == "__main__":
    main()
