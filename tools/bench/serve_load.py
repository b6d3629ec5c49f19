#!/usr/bin/env python3
"""Load benchmark for `kivi-host serve`: requests per second and time to first token at rising
concurrency, for each KV cache (default: fp16 against KIVI-2), and the largest concurrency each
sustains (every request answered, no 503/500, p95 time to first token within --ttft-slo).

Python standard library only (the GPU machine has no openai/aiohttp). For each cache and each
concurrency level C it starts `kivi-host serve` with max_batch = C on a free loopback port, runs
C client threads in a closed loop (each sends its next request when the previous one ends) for
--requests-per-client requests each, streaming completions of --prompt-tokens random token ids
(seeded) with --max-tokens new tokens (ignore_eos, so every request decodes the same length),
and polls /health for the cache's bytes. Results: a Markdown table on stdout and JSON (--json).

    python3 tools/bench/serve_load.py --kivi-host build-gpu/bin/kivi-host \
        --model models/kivi-llama-tiny --levels 1,4,16,64,128 --json $OUT/serve_load.json
"""
import argparse
import http.client
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

# Full-precision baselines read their dense views with SDPA (fused kernels on the GPU); the KIVI
# caches with the kivi attention (the fused packed-cache decode kernel).
CACHES = {
    "fp16": '[cache]\nbackend = "fp16"\n[attention]\nbackend = "sdpa"\n',
    "kivi2": '[cache]\nbackend = "kivi"\nk_bits = 2\nv_bits = 2\ngroup_size = 32\nresidual_length = 128\n'
             '[attention]\nbackend = "kivi"\n',
    "kivi4": '[cache]\nbackend = "kivi"\nk_bits = 4\nv_bits = 4\ngroup_size = 32\nresidual_length = 128\n'
             '[attention]\nbackend = "kivi"\n',
    "fp32": '[cache]\nbackend = "fp32"\n[attention]\nbackend = "sdpa"\n',
}


def start_server(args, cache, max_batch, workdir):
    """Starts kivi-host serve on port 0; returns (process, port, log path)."""
    config = os.path.join(workdir, f"serve-{cache}-{max_batch}.toml")
    with open(config, "w") as f:
        f.write('mode = "serve"\n' + CACHES[cache])
        f.write(f'[model]\npath = "{os.path.abspath(args.model)}"\ndevice = "{args.device}"\ndtype = "{args.dtype}"\n')
        f.write(f'[serve]\nport = 0\nmax_batch = {max_batch}\nmax_queue = {max(64, 4 * max_batch)}\n')
        f.write(f'prefill_chunk = {args.prefill_chunk}\nmax_connections = {max(256, 4 * max_batch)}\n')
        if args.context:
            f.write(f"context = {args.context}\n")
    log_path = config + ".log"
    log = open(log_path, "w")
    proc = subprocess.Popen([args.kivi_host, "--config", config], stdout=subprocess.PIPE, stderr=log, text=True)
    deadline = time.time() + args.start_timeout
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        log.write(line)
        log.flush()
        m = re.search(r"listening on http://[^:]+:(\d+)", line)
        if m:
            threading.Thread(target=lambda: [log.write(l) for l in proc.stdout], daemon=True).start()
            return proc, int(m.group(1)), log_path
    proc.kill()
    raise RuntimeError(f"kivi-host serve did not start (cache {cache}); see {log_path}")


def get_json(port, path):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", path)
    body = conn.getresponse().read()
    conn.close()
    return json.loads(body)


def one_request(port, prompt, args):
    """One streamed completion; returns a dict with ok, ttft, latency, tokens, status, error."""
    body = json.dumps({"prompt": prompt, "max_tokens": args.max_tokens, "temperature": 0, "stream": True,
                       "ignore_eos": True})
    start = time.perf_counter()
    out = {"ok": False, "ttft": None, "latency": None, "tokens": 0, "status": None, "error": None}
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=args.request_timeout)
        conn.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        out["status"] = resp.status
        if resp.status != 200:
            out["error"] = resp.read().decode(errors="replace")[:200]
            return out
        for raw in resp:
            line = raw.decode(errors="replace").strip()
            if not line.startswith("data: "):
                continue
            data = line[6:]
            if data == "[DONE]":
                out["ok"] = out["error"] is None
                break
            chunk = json.loads(data)
            if "error" in chunk:
                out["error"] = chunk["error"].get("message")
                continue
            for choice in chunk.get("choices", []):
                if choice.get("finish_reason") is None:  # a token chunk
                    if out["ttft"] is None:
                        out["ttft"] = time.perf_counter() - start
                    out["tokens"] += 1
        conn.close()
    except Exception as e:  # a refused or broken connection counts as a failed request
        out["error"] = repr(e)
    out["latency"] = time.perf_counter() - start
    return out


def run_level(port, level, prompts, args):
    results, lock = [], threading.Lock()
    peak = {"cache_bytes": 0, "active": 0}
    stop = threading.Event()

    def client(i):
        for r in range(args.requests_per_client):
            res = one_request(port, prompts[(i * args.requests_per_client + r) % len(prompts)], args)
            with lock:
                results.append(res)

    def poll():
        while not stop.is_set():
            try:
                h = get_json(port, "/health")
                peak["cache_bytes"] = max(peak["cache_bytes"], h.get("cache_bytes", 0))
                peak["active"] = max(peak["active"], h.get("active", 0))
            except Exception:
                pass
            stop.wait(0.2)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    start = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(level)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    stop.set()
    poller.join()
    ok = [r for r in results if r["ok"]]
    ttfts = sorted(r["ttft"] for r in ok if r["ttft"] is not None)

    def pct(values, q):
        return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")

    row = {
        "concurrency": level, "requests": len(results), "ok": len(ok), "wall_s": wall,
        "requests_per_s": len(ok) / wall, "output_tokens_per_s": sum(r["tokens"] for r in ok) / wall,
        "ttft_p50_s": pct(ttfts, 0.5), "ttft_p95_s": pct(ttfts, 0.95),
        "latency_p50_s": statistics.median([r["latency"] for r in ok]) if ok else float("nan"),
        "peak_active": peak["active"], "peak_cache_bytes": peak["cache_bytes"],
        "errors": sorted({str(r["status"]) + ": " + str(r["error"]) for r in results if not r["ok"]})[:3],
    }
    row["sustained"] = row["ok"] == row["requests"] and row["ttft_p95_s"] <= args.ttft_slo
    return row


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kivi-host", default="build/bin/kivi-host")
    p.add_argument("--model", default="models/kivi-llama-tiny")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--dtype", default="auto")
    p.add_argument("--caches", default="fp16,kivi2", help="comma list of " + ", ".join(CACHES))
    p.add_argument("--levels", default="1,2,4,8,16,32,64,128", help="concurrency levels")
    p.add_argument("--prompt-tokens", type=int, default=512)
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--requests-per-client", type=int, default=4)
    p.add_argument("--prefill-chunk", type=int, default=512)
    p.add_argument("--context", type=int, default=0, help="[serve] context (0 = the model's)")
    p.add_argument("--ttft-slo", type=float, default=2.0, help="p95 time to first token, seconds, to count as sustained")
    p.add_argument("--request-timeout", type=float, default=600)
    p.add_argument("--start-timeout", type=float, default=300)
    p.add_argument("--stop-after-failure", action="store_true", help="skip higher levels once one is not sustained")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args()
    # `timeout` sends SIGTERM: leave through the finally blocks, which stop the server.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(124))

    with open(os.path.join(args.model, "config.json")) as f:
        config = json.load(f)
    rng = random.Random(args.seed)
    bos = config.get("bos_token_id")
    prompts = []
    for _ in range(256):  # distinct prompts, so no request is a copy of another
        ids = [rng.randrange(0, config["vocab_size"]) for _ in range(args.prompt_tokens)]
        if isinstance(bos, int):
            ids[0] = bos
        prompts.append(ids)

    levels = [int(x) for x in args.levels.split(",")]
    report = {"model": args.model, "prompt_tokens": args.prompt_tokens, "max_tokens": args.max_tokens,
              "ttft_slo_s": args.ttft_slo, "caches": {}}
    workdir = tempfile.mkdtemp(prefix="kivi-serve-load-")
    for cache in args.caches.split(","):
        rows = []
        for level in levels:
            proc, port, log_path = start_server(args, cache, level, workdir)
            try:
                one_request(port, prompts[0], args)  # warm-up (allocations, kernels)
                row = run_level(port, level, prompts, args)
            finally:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
            rows.append(row)
            print(f"{cache} C={level}: {row['ok']}/{row['requests']} ok, {row['requests_per_s']:.2f} req/s, "
                  f"{row['output_tokens_per_s']:.1f} tok/s, TTFT p50 {row['ttft_p50_s']:.3f} s p95 "
                  f"{row['ttft_p95_s']:.3f} s, cache peak {row['peak_cache_bytes'] / 2**20:.1f} MiB"
                  + ("" if row["sustained"] else f"  NOT sustained {row['errors']}"), file=sys.stderr, flush=True)
            sustained = [r["concurrency"] for r in rows if r["sustained"]]
            report["caches"][cache] = {"levels": rows, "max_sustained_concurrency": max(sustained) if sustained else 0}
            if args.json:  # after every level, so a run cut short by a time limit keeps what it measured
                with open(args.json, "w") as f:
                    json.dump(report, f, indent=2)
            if args.stop_after_failure and not row["sustained"]:
                break

    print(f"\nmodel {args.model}, prompt {args.prompt_tokens} tokens, {args.max_tokens} new tokens, "
          f"sustained = all ok and TTFT p95 <= {args.ttft_slo} s\n")
    print("| cache | concurrency | ok | req/s | out tok/s | TTFT p50 (s) | TTFT p95 (s) | latency p50 (s) | cache peak (MiB) | sustained |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for cache, data in report["caches"].items():
        for r in data["levels"]:
            print(f"| {cache} | {r['concurrency']} | {r['ok']}/{r['requests']} | {r['requests_per_s']:.2f} | "
                  f"{r['output_tokens_per_s']:.1f} | {r['ttft_p50_s']:.3f} | {r['ttft_p95_s']:.3f} | "
                  f"{r['latency_p50_s']:.3f} | {r['peak_cache_bytes'] / 2**20:.1f} | {'yes' if r['sustained'] else 'no'} |")
    for cache, data in report["caches"].items():
        print(f"\n{cache}: largest sustained concurrency {data['max_sustained_concurrency']}")


if __name__ == "__main__":
    main()
