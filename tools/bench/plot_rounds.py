"""Draws what a kernel round bought, from two runs of each benchmark: decode attention speed
against SDPA (kivi_attention_bench JSON) and end-to-end KIVI-2 tokens/s against the bf16 cache
(run-e2e.sh JSON), before and after, on the cases both runs measured.

    python tools/bench/plot_rounds.py docs/images/rounds-h200.png \\
        docs/data/attention-h200-round1.json docs/data/attention-h200.json \\
        docs/data/e2e-h200-round1.json docs/data/e2e-h200.json

Needs matplotlib (pip install matplotlib==3.10.7), which requirements.txt leaves out.
"""
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


def bars(ax, before, after, title, ylabel):
    keys = sorted(set(before) & set(after))
    xs = range(len(keys))
    ax.bar([x - 0.2 for x in xs], [before[k] for k in keys], 0.4, label="round 1")
    ax.bar([x + 0.2 for x in xs], [after[k] for k in keys], 0.4, label="round 2 (tile order)")
    ax.axhline(1.0, color="gray", linewidth=1)
    ax.set_xticks(list(xs))
    ax.set_xticklabels([f"{b} x {c // 1024}K" for b, c in keys], rotation=45, ha="right")
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.legend()
    ax.grid(axis="y", alpha=0.3)


def main(target, attn_before, attn_after, e2e_before, e2e_after):
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    bars(axes[0], attention_speedups(attn_before), attention_speedups(attn_after),
         "decode attention, one layer: KIVI-2 against SDPA over fp16", "x SDPA's speed (batch x context)")
    bars(axes[1], e2e_ratios(e2e_before), e2e_ratios(e2e_after),
         "end to end, Llama-3.1-8B shapes: KIVI-2 against the bf16 cache", "x bf16 decode tokens/s")
    fig.suptitle("NVIDIA H200: what the tile-order kernel bought (above 1: KIVI-2 is faster)")
    fig.tight_layout()
    fig.savefig(target, dpi=110)


if __name__ == "__main__":
    main(*sys.argv[1:6])
