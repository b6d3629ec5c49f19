"""Prints kivi_attention_bench's JSON as the markdown table docs/benchmarks.md shows.

    python tools/bench/attention_table.py docs/data/attention-h200.json
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
    print(head)
    print(rule)
    for c in data["cases"]:
        line = f"| {c['batch']} | {c['context']} | {c['fp16_cache_mb']:.0f} | {c['sdpa_us']:.1f} |"
        for k in c["kivi"]:
            line += (f" {k['cache_mb']:.0f} | {k['us']:.1f} | {k['gbs']:.0f} | {100 * k['fraction_of_copy']:.0f}% |"
                     f" {k['speedup_vs_sdpa']:.2f}x | {k['cuda_cores_us']:.1f} |")
        print(line)
    print(f"\ncopy bandwidth (read + write) measured in the same run: {data['copy_bandwidth_gbs']:.0f} GB/s")


if __name__ == "__main__":
    main(sys.argv[1])
