#!/usr/bin/env python3
"""The README's shown output against what the program prints today.

Every fenced block of README.md whose first line is `$ build/bin/kivi-host ...` is run (from the
repository root, with the kivi-host given); each further line of the block must match a line of
its standard output, in order. In an expected line `…` stands for any text (timings, peak
memory) and a run of spaces for any run of spaces; everything else must be equal. So the
figures the README quotes (perplexity, agreement, bytes, cache statistics) are the figures the
demo prints, or this test fails.

    python3 tests/docs/readme_output_test.py --kivi-host build/bin/kivi-host --source .
"""
import argparse
import pathlib
import re
import shlex
import subprocess
import sys


def blocks(readme):
    """(line number, command, expected lines) of each `$ build/bin/kivi-host` block."""
    lines = readme.read_text(encoding="utf-8").split("\n")
    out, i = [], 0
    while i < len(lines):
        if lines[i].startswith("```") and i + 1 < len(lines) and lines[i + 1].startswith("$ build/bin/kivi-host "):
            j = i + 2
            while not lines[j].startswith("```"):
                j += 1
            out.append((i + 2, lines[i + 1][2:], lines[i + 2:j]))
            i = j
        i += 1
    return out


def pattern(expected):
    parts = [re.sub(r"(\\ )+", r"\\s+", re.escape(p)) for p in expected.strip().split("…")]
    return re.compile(r"\s*" + ".*".join(parts) + r"\s*")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kivi-host", required=True)
    ap.add_argument("--source", required=True)
    args = ap.parse_args()
    source = pathlib.Path(args.source)
    found = blocks(source / "README.md")
    if not found:
        sys.exit("README.md: no `$ build/bin/kivi-host` output blocks to check")
    failures = 0
    for line_number, command, expected in found:
        argv = shlex.split(command)
        argv[0] = args.kivi_host
        run = subprocess.run(argv, cwd=source, capture_output=True, text=True, timeout=600)
        printed = run.stdout.split("\n")
        where = f"README.md:{line_number}: `{command}`"
        if run.returncode != 0:
            print(f"{where}: exit {run.returncode}\n{run.stdout}{run.stderr}")
            failures += 1
            continue
        at = 0
        for want in (line for line in expected if line.strip()):
            rx = pattern(want)
            while at < len(printed) and not rx.fullmatch(printed[at]):
                at += 1
            if at == len(printed):
                print(f"{where}: the README shows\n    {want}\nwhich matches no line, in order, of what the program printed:\n" +
                      "\n".join("    " + p for p in printed))
                failures += 1
                break
            at += 1
        else:
            print(f"{where}: {sum(1 for l in expected if l.strip())} lines as shown")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
