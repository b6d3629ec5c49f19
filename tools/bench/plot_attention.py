"""Draws kivi_attention_bench's JSON: decode attention time against context for each batch
size (SDPA over fp16 against the fused KIVI-2/KIVI-4 kernels), and the bandwidth each reaches.

    python tools/bench/plot_attention.py docs/data/attention-h200.json docs/images/attention-h200.png

Needs matplotlib (pip install matplotlib==3.10.7), which requirements.txt leaves out: the build
and the tests do not need it.
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(source, target):
    data = json.load(open(source))
    cases = [c for c in data["cases"]]
    batches = sorted({c["batch"] for c in cases})
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, batch in enumerate(batches):
        rows = sorted((c for c in cases if c["batch"] == batch), key=lambda c: c["context"])
        ctx = [c["context"] for c in rows]
        color = colors[i % len(colors)]
        axes[0].plot(ctx, [c["sdpa_us"] for c in rows], "-o", color=color, label=f"SDPA fp16, batch {batch}")
        for k in rows[0]["kivi"]:
            style = "--s" if k["bits"] == 2 else ":^"
            us = [next(x for x in c["kivi"] if x["bits"] == k["bits"])["us"] for c in rows]
            axes[0].plot(ctx, us, style, color=color, label=f"KIVI-{k['bits']}, batch {batch}")
        axes[1].plot(ctx, [c["sdpa_gbs"] for c in rows], "-o", color=color, label=f"SDPA fp16, batch {batch}")
        us2 = [next(x for x in c["kivi"] if x["bits"] == 2)["gbs"] for c in rows]
        axes[1].plot(ctx, us2, "--s", color=color, label=f"KIVI-2, batch {batch}")
    copy = data["copy_bandwidth_gbs"]
    axes[1].axhline(copy, color="gray", linewidth=1)
    axes[1].text(ctx[0], copy * 0.93, f"copy bandwidth {copy:.0f} GB/s (read + write)", color="gray")
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_xlabel("context (tokens)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_yscale("log")
    axes[0].set_ylabel("decode attention, one layer (us, median)")
    axes[1].set_ylabel("bytes the kernel must read / time (GB/s)")
    axes[0].legend(fontsize=6, ncol=2)
    axes[1].legend(fontsize=6)
    fig.suptitle(f"{data['device']}: {data['q_heads']} query heads, {data['kv_heads']} kv heads, "
                 f"head_dim {data['head_dim']}, fp16 storage")
    fig.tight_layout()
    fig.savefig(target, dpi=110)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
