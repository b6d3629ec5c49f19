"""Prints kivi_attention_bench's JSON as the markdown table docs/benchmarks.md shows.

    python tools/bench/attention_table.py docs/data/attention-h200.json

Runs with FlashInfer as a peer (a "flashinfer" list per case) get its columns: fp16 and fp8
(e4m3) pages, each against SDPA, and FlashInfer fp8's time over the first KIVI width's.
"""
import json
import sys


def main(source):
    data = json.load(open(source))
    bits = [k["bits"] for k in data["cases"][0]["kivi"]]
    head = "| batch | context | fp16 cache MB | SDPA fp16 us |"
    rule = "|---|---|---|---|"
    for b in bits:
        head += f" KIVI-{b} MB | KIVI-{b} us | GB/s | of copy | vs SDPA | CUDA-core us |"
        rule += "---|---|---|---|---|---|"
    peer = all("flashinfer" in c for c in data["cases"])
    if peer:
        head += f" FlashInfer fp16 us | vs SDPA | FlashInfer fp8 us | fp8 MB | vs SDPA | KIVI-{bits[0]} vs fp8 |"
        rule += "---|---|---|---|---|---|"
    print(head)
    print(rule)
    for c in data["cases"]:
        line = f"| {c['batch']} | {c['context']} | {c['fp16_cache_mb']:.0f} | {c['sdpa_us']:.1f} |"
        for k in c["kivi"]:
            line += (f" {k['cache_mb']:.0f} | {k['us']:.1f} | {k['gbs']:.0f} | {100 * k['fraction_of_copy']:.0f}% |"
                     f" {k['speedup_vs_sdpa']:.2f}x | {k['cuda_cores_us']:.1f} |")
        if peer:
            f16, f8 = c["flashinfer"]
            line += (f" {f16['us']:.1f} | {c['sdpa_us'] / f16['us']:.2f}x | {f8['us']:.1f} | {f8['cache_mb']:.0f} |"
                     f" {c['sdpa_us'] / f8['us']:.2f}x | {f8['us'] / c['kivi'][0]['us']:.2f}x |")
        print(line)
    print(f"\ncopy bandwidth (read + write) measured in the same run: {data['copy_bandwidth_gbs']:.0f} GB/s")


if __name__ == "__main__":
    main(sys.argv[1])
