#!/usr/bin/env python3
"""Measures the reference `tokenizers` library on the chunks kivi_tokenizer_bench wrote.

Single-threaded: run with RAYON_NUM_THREADS=1 and TOKENIZERS_PARALLELISM=false (the C++ bench
sets both). Encodes every chunk without special tokens and decodes the ids back, `repeats`
times, and prints the best times as JSON on stdout:
  {"encode_seconds", "decode_seconds", "bytes", "tokens"}

Usage: reference_bench.py <tokenizer.json> <chunks.json> <repeats>
"""

import json
import sys
import time

from tokenizers import Tokenizer


def main():
    tokenizer_path, chunks_path, repeats = sys.argv[1], sys.argv[2], int(sys.argv[3])
    tok = Tokenizer.from_file(tokenizer_path)
    with open(chunks_path, encoding="utf-8") as f:
        chunks = json.load(f)
    best_encode = best_decode = float("inf")
    ids = []
    for _ in range(repeats):
        start = time.perf_counter()
        ids = [tok.encode(chunk, add_special_tokens=False).ids for chunk in chunks]
        best_encode = min(best_encode, time.perf_counter() - start)
        start = time.perf_counter()
        for chunk_ids in ids:
            tok.decode(chunk_ids, skip_special_tokens=False)
        best_decode = min(best_decode, time.perf_counter() - start)
    print(json.dumps({
        "encode_seconds": best_encode,
        "decode_seconds": best_decode,
        "bytes": sum(len(c.encode("utf-8")) for c in chunks),
        "tokens": sum(len(i) for i in ids),
    }))


if __name__ == "__main__":
    main()
