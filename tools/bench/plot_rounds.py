"""Draws what each kernel round bought, from one run of each benchmark per round: decode
attention speed against SDPA (kivi_attention_bench JSON) and end-to-end KIVI-2 tokens/s against
the bf16 cache (run-e2e.sh JSON), round by round, on the cases every round measured.

    python tools/bench/plot_rounds.py docs/images/rounds-h200.png \\
        --labels "round 1" "round 2" "round 3" \\
        --attention docs/data/attention-h200-round1.json docs/data/attention-h200.json \\
                    docs/data/attention-h200-round3.json \\
        --e2e docs/data/e2e-h200-round1.json docs/data/e2e-h200.json docs/data/e2e-h200-round3.json

Needs matplotlib (pip install matplotlib==3.10.7), which requirements.txt leaves out.
"""
import argparse
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from e2e_cases import load, timed  # noqa: E402


def attention_speedups(path, bits=2):
    """{(batch, context): KIVI-`bits` speed / SDPA speed}."""
    out = {}
    for case in json.load(open(path))["cases"]:
        for k in case["kivi"]:
            if k["bits"] == bits:
                out[(case["batch"], case["context"])] = k["speedup_vs_sdpa"]
    return out


def e2e_ratios(path):
    """{(batch, context): KIVI-2 tokens/s / bf16 tokens/s}, graphs on, both timed."""
    cases = [c for c in load([path]) if c.get("cuda_graphs") is not False and timed(c)]
    tps = {(c["label"], c["batch"], c["context"]): c["decode_tokens_per_s"] for c in cases}
    return {(b, ctx): v / tps[("kivi bf16", b, ctx)] for (label, b, ctx), v in tps.items()
            if label == "kivi KIVI-2" and ("kivi bf16", b, ctx) in tps}


def bars(ax, rounds, labels, title, ylabel):
    keys = sorted(set.intersection(*(set(r) for r in rounds)))
    width = 0.8 / len(rounds)
    for i, (values, label) in enumerate(zip(rounds, labels)):
        offset = (i - (len(rounds) - 1) / 2) * width
        ax.bar([x + offset for x in range(len(keys))], [values[k] for k in keys], width, label=label)
    ax.axhline(1.0, color="gray", linewidth=1)
    ax.set_xticks(list(range(len(keys))))
    ax.set_xticklabels([f"{b} x {c // 1024}K" for b, c in keys], rotation=45, ha="right")
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.legend()
    ax.grid(axis="y", alpha=0.3)


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target")
    parser.add_argument("--labels", nargs="+", required=True)
    parser.add_argument("--attention", nargs="+", required=True)
    parser.add_argument("--e2e", nargs="+", required=True)
    args = parser.parse_args(argv)
    if not len(args.labels) == len(args.attention) == len(args.e2e):
        parser.error("--labels, --attention and --e2e name one file per round each")
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    bars(axes[0], [attention_speedups(p) for p in args.attention], args.labels,
         "decode attention, one layer: KIVI-2 against SDPA over fp16", "x SDPA's speed (batch x context)")
    bars(axes[1], [e2e_ratios(p) for p in args.e2e], args.labels,
         "end to end, Llama-3.1-8B shapes: KIVI-2 against the bf16 cache", "x bf16 decode tokens/s")
    fig.suptitle("NVIDIA H200: what each KIVI kernel round bought (above 1: KIVI-2 is faster)")
    fig.tight_layout()
    fig.savefig(args.target, dpi=110)


if __name__ == "__main__":
    main(sys.argv[1:])
