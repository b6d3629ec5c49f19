"""Markdown tables of the end-to-end decode results (tools/gpu/run-e2e.sh's e2e.json and,
optionally, tools/bench/hf_decode_bench.py's JSON files):

    python tools/bench/e2e_table.py docs/data/e2e-h200.json [docs/data/e2e-hf-h200.json ...]
"""
import sys

from e2e_cases import load, timed


def gb(x):
    return f"{x / 1e9:.2f}" if x else "-"


def main(paths):
    cases = load(paths)
    grid = [c for c in cases if c.get("cuda_graphs") is not False and "max_batch" not in c]
    print("| batch | context | cache | decode tokens/s | ms/step | x bf16 | cache GB | peak GB |")
    print("| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |")
    keys = sorted({(c["batch"], c["context"]) for c in grid})
    for batch, context in keys:
        rows = [c for c in grid if c["batch"] == batch and c["context"] == context]
        base = next((c for c in rows if c["label"] == "kivi bf16" and timed(c)), None)
        for c in sorted(rows, key=lambda c: c["label"]):
            if not timed(c):
                why = "out of memory" if c.get("oom") else "failed"
                print(f"| {batch} | {context} | {c['label']} | {why} | | | | |")
                continue
            ratio = f"{c['decode_tokens_per_s'] / base['decode_tokens_per_s']:.2f}" if base else "-"
            print(f"| {batch} | {context} | {c['label']} | {c['decode_tokens_per_s']:.1f} | {c['decode_step_ms']:.2f} | "
                  f"{ratio} | {gb(c.get('cache_bytes'))} | {gb(c.get('peak_allocated_bytes'))} |")
    prefilled = [c for c in grid if timed(c) and c.get("prefill_tokens_per_s")]
    if prefilled:
        print("\nPrefill (the fill was a real prefill of random tokens):\n")
        print("| batch | context | cache | prefill tokens/s | time to first token (s) |")
        print("| ---: | ---: | --- | ---: | ---: |")
        for c in prefilled:
            rate = c["prefill_tokens_per_s"]
            print(f"| {c['batch']} | {c['context']} | {c['label']} | {rate:.0f} | "
                  f"{c['batch'] * c['context'] / rate:.3f} |")
    launched = [c for c in cases if c.get("cuda_graphs") is False and timed(c)]
    if launched:
        print("\nCUDA graphs (decode tokens/s with / without):\n")
        print("| batch | context | cache | with graphs | without | speed-up |")
        print("| ---: | ---: | --- | ---: | ---: | ---: |")
        for c in launched:
            g = next((x for x in grid if timed(x) and (x["batch"], x["context"], x["label"]) ==
                      (c["batch"], c["context"], c["label"])), None)
            if g:
                print(f"| {c['batch']} | {c['context']} | {c['label']} | {g['decode_tokens_per_s']:.1f} | "
                      f"{c['decode_tokens_per_s']:.1f} | {g['decode_tokens_per_s'] / c['decode_tokens_per_s']:.2f}x |")
    fits = [c for c in cases if "max_batch" in c]
    if fits:
        print("\nLargest batch that fits:\n")
        print("| context | cache | largest batch | x bf16 |")
        print("| ---: | --- | ---: | ---: |")
        base = next((c["max_batch"] for c in fits if c["label"] == "kivi bf16"), None)
        for c in fits:
            ratio = f"{c['max_batch'] / base:.2f}" if base else "-"
            print(f"| {c['context']} | {c['label']} | {c['max_batch']} | {ratio} |")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
