"""Draws the offline serving results (tools/bench/serve_load.py --offline ... --json) into one
image: per workload, output tokens/s of each cache (bars, with the ratio to the first cache) and
time to first token p50 and p95 (bars).

    python tools/bench/plot_serving.py docs/images/serving-h200.png docs/data/serving-h200-*.json

Needs matplotlib (pip install matplotlib==3.10.7), which requirements.txt leaves out.
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def title_of(run):
    shared = f"{run['shared_prefix']} shared + " if run.get("shared_prefix") else ""
    return (f"{run['offline']} requests: {shared}{run['prompt_tokens']} prompt, "
            f"{run['max_tokens']} new tokens\nbudget {run['memory_budget']}")


def main(target, paths):
    runs = [json.load(open(p)) for p in paths]
    fig, axes = plt.subplots(2, len(runs), figsize=(5.5 * len(runs), 8), squeeze=False)
    for col, run in enumerate(runs):
        rows = run["rows"]
        names = [r["cache"] for r in rows]
        top, bottom = axes[0][col], axes[1][col]
        tps = [r["output_tokens_per_s"] for r in rows]
        bars = top.bar(names, tps, color="tab:blue")
        for bar, value in zip(bars, tps):
            top.annotate(f"{value:.0f}\n{value / tps[0]:.2f}x", (bar.get_x() + bar.get_width() / 2, value),
                         ha="center", va="bottom", fontsize=9)
        top.set_ylim(0, max(tps) * 1.3)
        top.set_ylabel("output tokens/s")
        top.set_title(title_of(run), fontsize=10)
        x = range(len(rows))
        for shift, key in ((-0.2, "ttft_p50_s"), (0.2, "ttft_p95_s")):
            values = [r[key] for r in rows]
            bars = bottom.bar([i + shift for i in x], values, width=0.4, label=key[5:8])
            for bar, value in zip(bars, values):
                bottom.annotate(f"{value:.1f}", (bar.get_x() + bar.get_width() / 2, value), ha="center",
                                va="bottom", fontsize=8)
        bottom.set_xticks(list(x), names)
        bottom.set_ylabel("time to first token (s)")
        bottom.legend(fontsize=9)
    fig.suptitle("kivi-host serve, offline (all requests at once), Llama-3.1-8B shapes, dummy bf16 weights, H200")
    fig.tight_layout()
    fig.savefig(target, dpi=110)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
