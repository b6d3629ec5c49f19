#!/usr/bin/env python3
"""Perplexity of a real checkpoint through transformers with each cache: DynamicCache, its
QuantizedCache (quanto) and kivi's KiviCache, on the same text fed `--chunk` tokens at a time
(as `kivi-host compare` feeds it): each chunk attends to the cache as stored, so a quantizing
cache's older tokens are read quantized. Prints a table; --json writes it.

  python3 tools/bench/hf_cache_ppl.py --model models/kivi-llama-tiny \
      --text data/persuasion-ch1-6.txt --tokens 1024 --chunk 128 --caches dynamic,quantized-2,kivi-2
"""
import argparse
import json
import math
import sys
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
import hf_decode_bench  # noqa: E402  (its make_cache: the same caches as the decode benchmark)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="a Hugging Face checkpoint folder")
    p.add_argument("--text", required=True, help="a UTF-8 text file")
    p.add_argument("--tokens", type=int, default=1024, help="tokens of the text scored (default 1024)")
    p.add_argument("--chunk", type=int, default=128, help="tokens per forward pass (default 128)")
    p.add_argument("--caches", default="dynamic,quantized-2,quantized-4,kivi-2,kivi-4",
                   help="comma-separated: dynamic, quantized-<bits> (quanto), kivi-<bits>")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=["bfloat16", "float16", "float32"], default="float32")
    p.add_argument("--json", metavar="OUT")
    args = p.parse_args(argv)
    if args.tokens < 2 or args.chunk < 1:
        p.error("--tokens must be >= 2 and --chunk >= 1")
    return args


def cache_args(name, args):
    """The decode benchmark's cache settings for a name like "kivi-2" (group 32, residual 128)."""
    kind, _, bits = name.partition("-")
    if kind not in ("dynamic", "quantized", "kivi") or (kind != "dynamic" and bits not in ("2", "4", "16")):
        raise SystemExit(f"--caches: unknown cache {name!r} (dynamic, quantized-2/4, kivi-2/4/16)")
    return argparse.Namespace(cache=kind, backend="quanto", nbits=int(bits or 16), key_axis="channel",
                              q_group_size=32, residual_length=128, quanto_unpack="auto",
                              device=args.device, dtype=args.dtype)


def perplexity(model, ids, cache, chunk):
    """exp(mean negative log-likelihood) of ids[1:], fed chunk tokens at a time through cache."""
    nll, count = 0.0, 0
    for start in range(0, ids.shape[1], chunk):
        piece = ids[:, start:start + chunk]
        logits = model(input_ids=piece, past_key_values=cache, use_cache=True).logits.float()
        logp = logits.log_softmax(-1)
        targets = ids[:, start + 1:start + 1 + piece.shape[1]]
        n = targets.shape[1]
        nll -= logp[0, :n].gather(-1, targets[0, :, None]).sum().item()
        count += n
    return math.exp(nll / count)


def main(argv=None):
    args = parse_args(argv)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    ids = tokenizer(Path(args.text).read_text(), return_tensors="pt").input_ids[:, :args.tokens]
    ids = ids.to(args.device)
    rows = []
    for name in args.caches.split(","):
        c = cache_args(name, args)
        if c.cache == "kivi":
            import kivi  # noqa: F401  (registers the attention "kivi")
        attn = "kivi" if c.cache == "kivi" else "sdpa"
        model = AutoModelForCausalLM.from_pretrained(args.model, dtype=getattr(torch, args.dtype),
                                                     attn_implementation=attn).to(args.device).eval()
        if c.cache == "quantized":
            hf_decode_bench.quanto_unpack(c)
        cache = hf_decode_bench.make_cache(c, model.config)
        with torch.inference_mode():
            ppl = perplexity(model, ids, cache, args.chunk)
        rows.append({"cache": name, "perplexity": ppl, "cache_bytes": hf_decode_bench.cache_bytes(cache)})
        print(f"{name:<14} ppl {ppl:10.4f}   cache {rows[-1]['cache_bytes'] / 1e6:8.3f} MB", flush=True)
    base = next((r["perplexity"] for r in rows if r["cache"] == "dynamic"), None)
    print("\n| cache | perplexity | vs dynamic | cache bytes |\n| --- | ---: | ---: | ---: |")
    for r in rows:
        delta = f"{100 * (r['perplexity'] / base - 1):+.2f}%" if base else "-"
        print(f"| {r['cache']} | {r['perplexity']:.3f} | {delta} | {r['cache_bytes']} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"model": args.model, "text": args.text, "tokens": int(ids.shape[1]),
                       "chunk": args.chunk, "device": args.device, "dtype": args.dtype, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
