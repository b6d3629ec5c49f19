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

Offline throughput under one memory budget (--offline N --memory-budget B): per cache one server
and N requests submitted at once (one client thread each). A KIVI cache is paged with [cache]
memory_budget = B and --max-batch slots (admission by free pages, preemption); a full-precision
cache (not paged) gets as many rows as B holds at prompt + max tokens each (2 x layers x kv heads
x head_dim x 2 bytes per token, from config.json). Reported: output tokens/s, time to first token
and time between tokens (p50, p95, p99), preemptions, peak pages used.

    python3 tools/bench/serve_load.py --offline 256 --memory-budget 40GiB --max-batch 256 \
        --prompt-tokens 4096 --max-tokens 256 --caches bf16,kivi2,kivi4 --json $OUT/offline.json

--shared-prefix P puts one P-token prefix (a system prompt) before every prompt; the warm-up
request publishes it, and a cache name ending in -noshare (kivi2-noshare) is the same cache with
prefix sharing off, for the time-to-first-token comparison (tools/gpu/run-serving.sh).
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
    "bf16": '[cache]\nbackend = "bf16"\n[attention]\nbackend = "sdpa"\n',
}
PAGED = {"kivi2", "kivi4"}  # caches that take [cache] memory_budget
# A cache name may end in "-noshare" ("kivi2-noshare"): the same cache with [serve]
# prefix_sharing = false, the baseline of the shared-prefix workload (--shared-prefix).
NOSHARE = "-noshare"


def base_cache(cache):
    return cache[: -len(NOSHARE)] if cache.endswith(NOSHARE) else cache


def budget_bytes(text):
    """'40GiB', '512MB', '1000000' -> bytes."""
    m = re.fullmatch(r"\s*([0-9.]+)\s*(B|KB|MB|GB|KiB|MiB|GiB)?\s*", text)
    if not m:
        raise SystemExit(f"--memory-budget {text!r}: expected bytes such as 40GiB or 512MB")
    scale = {None: 1, "B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30}
    return int(float(m.group(1)) * scale[m.group(2)])


def start_server(args, cache, max_batch, workdir, budget=None):
    """Starts kivi-host serve on port 0; returns (process, port, log path). `budget`: the paged
    cache's [cache] memory_budget."""
    config = os.path.join(workdir, f"serve-{cache}-{max_batch}.toml")
    with open(config, "w") as f:
        cache_toml = CACHES[base_cache(cache)]
        if budget:
            value = budget if budget.isdigit() else f'"{budget}"'  # bytes are a TOML integer
            cache_toml = cache_toml.replace("[attention]", f"memory_budget = {value}\n[attention]", 1)
        f.write('mode = "serve"\n' + cache_toml)
        f.write(f'[model]\npath = "{os.path.abspath(args.model)}"\ndevice = "{args.device}"\ndtype = "{args.dtype}"\n')
        if args.weights:
            f.write(f'weights = "{args.weights}"\n')
        queue = max(64, 4 * max_batch, args.offline + 16)
        f.write(f'[serve]\nport = 0\nmax_batch = {max_batch}\nmax_queue = {queue}\n')
        f.write(f'prefill_chunk = {args.prefill_chunk}\nmax_connections = {max(256, queue)}\n')
        if cache.endswith(NOSHARE):
            f.write("prefix_sharing = false\n")
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
                       "ignore_eos": True, "stream_options": {"include_usage": True}})
    start = time.perf_counter()
    out = {"ok": False, "ttft": None, "latency": None, "tokens": 0, "status": None, "error": None,
           "gaps": []}
    last = None
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
            if chunk.get("usage"):  # the count of tokens; a token whose text is held back sends no chunk
                out["usage_tokens"] = chunk["usage"]["completion_tokens"]
            if "error" in chunk:
                out["error"] = chunk["error"].get("message")
                continue
            for choice in chunk.get("choices", []):
                if choice.get("finish_reason") is None:  # a token chunk
                    now = time.perf_counter()
                    if out["ttft"] is None:
                        out["ttft"] = now - start
                    else:
                        out["gaps"].append(now - last)
                    last = now
                    out["tokens"] += 1
        conn.close()
    except Exception as e:  # a refused or broken connection counts as a failed request
        out["error"] = repr(e)
    out["latency"] = time.perf_counter() - start
    out["tokens"] = out.pop("usage_tokens", out["tokens"])
    return out


class HealthPeaks:
    """Polls /health every 0.2 s in a thread until stop(); `peak` holds each field's largest value."""

    def __init__(self, port, fields):
        self.peak = {f: 0 for f in fields}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, args=(port,), daemon=True)
        self._thread.start()

    def _poll(self, port):
        while not self._stop.is_set():
            try:
                h = get_json(port, "/health")
                for f in self.peak:
                    self.peak[f] = max(self.peak[f], h.get(f, 0))
            except Exception:
                pass
            self._stop.wait(0.2)

    def stop(self):
        self._stop.set()
        self._thread.join()
        return self.peak


def run_clients(port, clients, prompts_of, args, fields):
    """`clients` threads, client i sending prompts_of(i) one after another; returns the results,
    the wall time and the /health peaks of `fields` meanwhile."""
    results, lock = [], threading.Lock()

    def client(i):
        for prompt in prompts_of(i):
            res = one_request(port, prompt, args)
            with lock:
                results.append(res)

    poller = HealthPeaks(port, fields)
    start = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, time.perf_counter() - start, poller.stop()


def stop_server(proc):
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


def run_level(port, level, prompts, args):
    n = args.requests_per_client
    results, wall, peak = run_clients(
        port, level, lambda i: [prompts[(i * n + r) % len(prompts)] for r in range(n)], args,
        ["cache_bytes", "active"])
    ok = [r for r in results if r["ok"]]
    ttfts = [r["ttft"] for r in ok if r["ttft"] is not None]

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


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def run_offline(args, cache, prompts, config, workdir):
    """N requests at once on one server under the memory budget; one result row."""
    budget = budget_bytes(args.memory_budget)
    tokens = args.prompt_tokens + args.max_tokens
    if base_cache(cache) in PAGED:
        # Slots past N would only widen every forward pass (they run padded, max_batch rows).
        max_batch, paged_budget = min(args.max_batch, args.offline), args.memory_budget
    else:
        heads = config.get("num_key_value_heads", config["num_attention_heads"])
        dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
        element = 4 if base_cache(cache) == "fp32" else 2
        per_row = 2 * config["num_hidden_layers"] * heads * dim * element * (tokens + args.shared_prefix)
        max_batch, paged_budget = max(1, min(args.max_batch, args.offline, budget // per_row)), None
    # Rows as long as a request: a full-precision cache then holds exactly the budget.
    args.context = args.context or tokens + args.shared_prefix
    proc, port, log_path = start_server(args, cache, max_batch, workdir, paged_budget)
    try:
        # Warm-up (allocations, kernels); with --shared-prefix it also publishes the prefix's pages,
        # as the first request after a deploy would.
        one_request(port, prompts[0], args)
        before = get_json(port, "/health")
        results, wall, peak = run_clients(port, args.offline, lambda i: [prompts[(i + 1) % len(prompts)]],
                                          args, ["active", "cache_bytes"])
        after = get_json(port, "/health")
    finally:
        stop_server(proc)
    ok = [r for r in results if r["ok"]]
    ttfts = [r["ttft"] for r in ok if r["ttft"] is not None]
    gaps = [g for r in ok for g in r["gaps"]]
    return {
        "cache": cache, "max_batch": max_batch, "requests": len(results), "ok": len(ok), "wall_s": wall,
        "output_tokens_per_s": sum(r["tokens"] for r in ok) / wall,
        "ttft_p50_s": pct(ttfts, 0.5), "ttft_p95_s": pct(ttfts, 0.95), "ttft_p99_s": pct(ttfts, 0.99),
        "tpot_p50_s": pct(gaps, 0.5), "tpot_p95_s": pct(gaps, 0.95), "tpot_p99_s": pct(gaps, 0.99),
        "preemptions": after.get("preemptions", 0) - before.get("preemptions", 0),
        "prefix_hit_rate": after.get("prefix_hit_rate", 0),
        # The pool's own high-water mark (since the start: the warm-up's one request uses fewer),
        # not a /health poll, which misses a peak shorter than its 0.2 s.
        "pool_pages": after.get("cache_pages", 0), "peak_pages_used": after.get("cache_pages_peak", 0),
        "peak_active": peak["active"], "peak_cache_bytes": peak["cache_bytes"],
        "errors": sorted({str(r["status"]) + ": " + str(r["error"]) for r in results if not r["ok"]})[:3],
    }


def offline_report(args, rows):
    shared = f" after a shared prefix of {args.shared_prefix}" if args.shared_prefix else ""
    print(f"\nmodel {args.model}, {args.offline} requests at once, prompt {args.prompt_tokens} tokens{shared}, "
          f"{args.max_tokens} new tokens, memory budget {args.memory_budget}\n")
    print("| cache | rows | ok | out tok/s | vs first | TTFT p50 / p95 (s) | TPOT p50 / p95 (ms) | preemptions | prefix hit rate | pages used (peak / pool) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    base = rows[0]["output_tokens_per_s"] if rows else 0
    for r in rows:
        print(f"| {r['cache']} | {r['max_batch']} | {r['ok']}/{r['requests']} | {r['output_tokens_per_s']:.1f} | "
              f"{r['output_tokens_per_s'] / base if base else float('nan'):.2f}x | {r['ttft_p50_s']:.3f} / {r['ttft_p95_s']:.3f} | "
              f"{1e3 * r['tpot_p50_s']:.1f} / {1e3 * r['tpot_p95_s']:.1f} | {r['preemptions']} | {r['prefix_hit_rate']:.2f} | "
              f"{r['peak_pages_used']} / {r['pool_pages']} |")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kivi-host", default="build/bin/kivi-host")
    p.add_argument("--model", default="models/kivi-llama-tiny")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--dtype", default="auto")
    p.add_argument("--weights", default="", help='[model] weights, e.g. "dummy" for a config.json alone')
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
    p.add_argument("--offline", type=int, default=0, help="N requests at once under --memory-budget (offline throughput)")
    p.add_argument("--memory-budget", default="", help="the cache's memory budget for --offline, e.g. 40GiB")
    p.add_argument("--max-batch", type=int, default=256, help="--offline: the paged caches' slots (and the others' most rows)")
    p.add_argument("--shared-prefix", type=int, default=0,
                   help="tokens of one prefix (a system prompt) before every prompt's --prompt-tokens unique ones")
    args = p.parse_args()
    # `timeout` sends SIGTERM: leave through the finally blocks, which stop the server.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(124))

    with open(os.path.join(args.model, "config.json")) as f:
        config = json.load(f)
    rng = random.Random(args.seed)
    bos = config.get("bos_token_id")
    prompts = []
    prefix = [rng.randrange(0, config["vocab_size"]) for _ in range(args.shared_prefix)]
    for _ in range(256):  # distinct prompts, so no request is a copy of another
        ids = prefix + [rng.randrange(0, config["vocab_size"]) for _ in range(args.prompt_tokens)]
        if isinstance(bos, int):
            ids[0] = bos
        prompts.append(ids)

    if args.offline:
        if not args.memory_budget:
            raise SystemExit("--offline needs --memory-budget")
        workdir = tempfile.mkdtemp(prefix="kivi-serve-offline-")
        rows = []
        for cache in args.caches.split(","):
            rows.append(run_offline(args, cache, prompts, config, workdir))
            r = rows[-1]
            print(f"{cache}: {r['ok']}/{r['requests']} ok, {r['output_tokens_per_s']:.1f} tok/s, "
                  f"{r['preemptions']} preemptions", file=sys.stderr, flush=True)
            if args.json:
                with open(args.json, "w") as f:
                    json.dump({"model": args.model, "offline": args.offline, "memory_budget": args.memory_budget,
                               "shared_prefix": args.shared_prefix, "prompt_tokens": args.prompt_tokens, "max_tokens": args.max_tokens, "rows": rows},
                              f, indent=2)
        offline_report(args, rows)
        return

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
                stop_server(proc)
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
