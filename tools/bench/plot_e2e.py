"""Draws the end-to-end decode results (tools/gpu/run-e2e.sh's e2e.json, and optionally
tools/bench/hf_decode_bench.py's JSON files) into one image of four panels: decode tokens/s
against context at batch 1, decode tokens/s against batch size (4K and 32K context), the
cache's memory per sequence against context, and the largest batch that fits at 32K.

    python tools/bench/plot_e2e.py docs/images/e2e-h200.png docs/data/e2e-h200.json [hf.json ...]

Needs matplotlib (pip install matplotlib==3.10.7), which requirements.txt leaves out.
"""
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from e2e_cases import load, timed  # noqa: E402


def main(target, paths):
    everything = load(paths)
    cases = [c for c in everything if c.get("cuda_graphs") is not False and "max_batch" not in c]
    fits = [c for c in everything if "max_batch" in c]
    labels = sorted({c["label"] for c in cases})
    colors = dict(zip(labels, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    fig, axes = plt.subplots(1, 4, figsize=(22, 4.8), gridspec_kw={"width_ratios": [3, 3, 3, 2]})

    for name in labels:
        mine = [c for c in cases if c["label"] == name]
        style = "--" if name.startswith("HF") else "-"
        b1 = sorted((c for c in mine if c["batch"] == 1 and timed(c)), key=lambda c: c["context"])
        if b1:
            axes[0].plot([c["context"] for c in b1], [c["decode_tokens_per_s"] for c in b1], style + "o",
                         color=colors[name], label=name)
        for context, marker in ((4096, "o"), (32768, "s")):
            rows = sorted((c for c in mine if c["context"] == context and timed(c)), key=lambda c: c["batch"])
            if rows:
                axes[1].plot([c["batch"] for c in rows], [c["decode_tokens_per_s"] for c in rows],
                             style + marker, color=colors[name], label=f"{name}, {context // 1024}K")
        mem = sorted((c for c in b1 if c.get("cache_bytes")), key=lambda c: c["context"])
        if mem:
            axes[2].plot([c["context"] for c in mem], [c["cache_bytes"] / 2**30 for c in mem], style + "o",
                         color=colors[name], label=name)
    axes[0].set(title="Decode at batch 1", xlabel="context (tokens)", ylabel="decode tokens/s")
    axes[1].set(title="Decode against batch size", xlabel="batch", ylabel="decode tokens/s (all sequences)")
    axes[2].set(title="KV cache of one sequence", xlabel="context (tokens)", ylabel="GiB")
    bars = axes[3].bar(range(len(fits)), [c["max_batch"] for c in fits],
                       color=[colors.get(c["label"], "gray") for c in fits])
    axes[3].bar_label(bars)
    axes[3].set_xticks(range(len(fits)), [c["label"] for c in fits], rotation=30, ha="right", fontsize=7)
    axes[3].set(title="Largest batch that fits, 32K context", ylabel="sequences")
    for ax in axes[:3]:
        ax.set_xscale("log", base=2)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    axes[1].set_yscale("log")
    axes[2].set_yscale("log")
    fig.suptitle("Llama-3.1-8B shapes, dummy bf16 weights; cache filled with random K/V, then 64 greedy steps")
    fig.tight_layout()
    fig.savefig(target, dpi=110)
    print(f"wrote {target}")


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2:])
