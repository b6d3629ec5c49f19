#!/usr/bin/env python3
"""Decode throughput of Hugging Face transformers, measured the way `kivi-host bench` measures ours
(fill = "random"), so that the two can be put side by side.

The model is built from a config.json with random weights, directly on the device in the dtype.
Each run makes a fresh cache (transformers' DynamicCache, its QuantizedCache with the quanto or
HQQ backend, or kivi's KiviCache from the kivi Python package, with attention "kivi"), fills it
with random keys/values for `--context` tokens per sequence, then takes `--decode-tokens` greedy
steps through the model's forward, copying each step's argmax to the host as generation does.
Decode tokens/s is the median over `--repeats` runs after `--warmup` runs; peak device memory
covers the fill and the decode, as kivi-host's does. `--find-max-batch` instead searches the
largest batch that fills and decodes 2 steps without running out of memory; `--prefill` instead
times a real prefill of random tokens and the first pick (time to first token).

  PYTHONPATH=/tmp/hf-py python3 tools/bench/hf_decode_bench.py --config-json llama-3.1-8b.json \
      --batch 16 --context 4096 --cache quantized --nbits 2 --json hf.json
"""
import argparse
import gc
import json
import statistics
import sys
import time
import types

import torch
import transformers
from transformers import AutoConfig, AutoModelForCausalLM, DynamicCache, QuantizedCache


def parse_args(argv=None):
    def positive(text):
        value = int(text)
        if value < 1:
            raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
        return value

    def positives(text):  # "1,16,64": one case per value, all in this process (one model build)
        return [positive(x) for x in text.split(",")]

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-json", required=True, help="a Hugging Face config.json (model_type must be set)")
    p.add_argument("--batch", type=positives, default=[1], help="sequences per step, or a list: 1,16,64 (default 1)")
    p.add_argument("--context", type=positives, required=True,
                   help="tokens in the cache per sequence before decoding, or a list: 4096,32768")
    p.add_argument("--decode-tokens", type=positive, default=64, help="greedy steps per run (default 64)")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs first (default 1)")
    p.add_argument("--repeats", type=positive, default=2, help="timed runs; the median is reported (default 2)")
    p.add_argument("--cache", choices=["dynamic", "quantized", "kivi"], default="dynamic",
                   help="kivi: kivi.KiviCache (pip install ./python), --nbits for keys and values, "
                        "attention 'kivi' (default dynamic)")
    p.add_argument("--backend", choices=["quanto", "hqq"], default="quanto", help="QuantizedCache backend (default quanto)")
    p.add_argument("--nbits", type=int, choices=[2, 4, 16], default=2,
                   help="quantized cache bits (default 2; 16: kivi unquantized)")
    p.add_argument("--residual-length", type=positive, default=128, help="full-precision tokens kept (default 128)")
    p.add_argument("--q-group-size", type=positive, default=32, help="quantization group (default 32)")
    p.add_argument("--key-axis", choices=["channel", "token"], default=None,
                   help="how keys are grouped: per channel as KIVI (quanto's default) or per token (hqq's only way)")
    p.add_argument("--quanto-unpack", choices=["auto", "extension", "torch"], default="auto",
                   help="quanto's 2/4-bit unpack: its C++/CUDA extension, compiled on first use (needs ninja, "
                        "and nvcc on CUDA), or plain torch ops; auto tries the extension, falls back to torch")
    p.add_argument("--attn-implementation", default="sdpa", help="transformers attention (default sdpa)")
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    p.add_argument("--dtype", choices=["bfloat16", "float16", "float32"], default="bfloat16")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--find-max-batch", type=positive, metavar="LIMIT",
                   help="instead: the largest batch <= LIMIT that fills --context and decodes 2 steps")
    p.add_argument("--prefill", action="store_true",
                   help="instead: time to first token, a prefill of --context random tokens per sequence into "
                        "a fresh cache and the first greedy pick (logits of the last position only)")
    p.add_argument("--profile", type=positive, metavar="STEPS",
                   help="also: after the timed runs, one more run whose last STEPS decode steps run under "
                        "torch.profiler; prints the ops by device time and by host time")
    p.add_argument("--json", metavar="OUT", help="write the results here")
    args = p.parse_args(argv)

    if args.warmup < 0:
        p.error("--warmup must be >= 0")
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: torch sees no CUDA device (use --device cpu)")
    try:
        with open(args.config_json) as f:
            args.config_dict = json.load(f)
    except (OSError, ValueError) as e:
        p.error(f"--config-json: {e}")
    if "model_type" not in args.config_dict:
        p.error(f"--config-json {args.config_json}: no model_type")
    c = args.config_dict
    limit = c.get("max_position_embeddings")
    if limit and max(args.context) + args.decode_tokens > limit:
        p.error(f"--context + --decode-tokens = {max(args.context) + args.decode_tokens} exceeds max_position_embeddings ({limit})")
    if args.cache == "kivi":
        args.attn_implementation = "kivi"
    if args.cache != "kivi" and args.nbits == 16:
        p.error("--nbits 16 is for --cache kivi (unquantized); QuantizedCache takes 2 or 4")
    if args.cache == "quantized":
        head_dim = c.get("head_dim") or c["hidden_size"] // c["num_attention_heads"]
        args.key_axis = args.key_axis or ("channel" if args.backend == "quanto" else "token")
        if args.backend == "hqq" and args.key_axis == "channel":
            p.error("--backend hqq cannot group keys per channel (its axis 0 groups elements numel/group apart); "
                    "use --key-axis token or --backend quanto")
        if head_dim % args.q_group_size:
            p.error(f"--q-group-size {args.q_group_size} must divide head_dim {head_dim} (per-token groups)")
        for context in args.context:
            if args.key_axis == "channel" and (context % args.q_group_size or args.residual_length % args.q_group_size):
                p.error(f"per-channel keys group {args.q_group_size} consecutive tokens: --context ({context}) and "
                        f"--residual-length ({args.residual_length}) must be multiples of --q-group-size "
                        f"(e.g. --context {-(-context // args.q_group_size) * args.q_group_size}), or use --key-axis token")
    return args


def build_model(args):
    """Random weights, made where they will run: under torch.device(...) the parameters are
    allocated and initialized on the device, in the dtype, with no copy from the host."""
    if args.cache == "kivi":
        import kivi  # noqa: F401  (registers the attention "kivi")
    c = dict(args.config_dict)
    config = AutoConfig.for_model(c.pop("model_type"), **c)
    config._attn_implementation = args.attn_implementation
    torch.manual_seed(args.seed)
    with torch.device(args.device):
        model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, args.dtype))
    return model.eval(), config


def quanto_unpack(args):
    """Chooses how quanto unpacks its 2/4-bit codes on this device: its own extension (built with
    torch.utils.cpp_extension on first use, as a user of QuantizedCache gets it), or torch ops."""
    from optimum.quanto.library.extensions import get_extension

    ext = get_extension("quanto_cuda" if args.device == "cuda" else "quanto_cpp")
    if args.quanto_unpack != "torch":
        t0 = time.perf_counter()
        try:
            torch.ops.quanto.unpack(torch.zeros(4, dtype=torch.uint8, device=args.device), 2)  # builds it
            print(f"quanto: {ext.name} extension ready in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
            return "extension"
        except Exception as e:  # noqa: BLE001 - a failed build comes in many kinds
            if args.quanto_unpack == "extension":
                raise
            print(f"quanto: {ext.name} extension unavailable ({type(e).__name__}: {str(e)[-300:]}); "
                  "unpacking with torch ops", file=sys.stderr)

    def unpack(packed, bits):  # = optimum.quanto.library.unpack's default (pure torch) kernel
        shifted = [(packed & (2 ** (bits * (i + 1)) - 1)) >> (bits * i) for i in range(8 // bits)]
        return torch.cat(shifted).to(torch.uint8)

    ext._lib = types.SimpleNamespace(unpack=unpack)
    return "torch"


def make_cache(args, config):
    if args.cache == "dynamic":
        return DynamicCache(config=config)
    if args.cache == "kivi":
        import kivi
        return kivi.KiviCache(config.num_hidden_layers, args.nbits, args.nbits,
                              args.q_group_size, args.residual_length)
    # transformers' QuantizedLayer keeps the newest tokens (up to residual_length) in full
    # precision and, once that many have gathered, dequantizes the whole cache, appends them and
    # quantizes it all again; every step attends over the dequantized cache (SDPA), so it saves
    # memory at rest, not reads. Axes, as each backend's code groups a [B, kv heads, T, head_dim]
    # tensor:
    #   quanto, axis -1: keys per channel, each group = q_group_size consecutive tokens of one
    #     channel of one head (KIVI's keys; needs T a multiple of the group);
    #   quanto axis 0 / hqq axis 1: per token, each group = q_group_size consecutive channels of
    #     one token's head vector (KIVI's values);
    #   hqq axis 0 would group elements numel/q_group_size apart across the whole tensor: not
    #     offered. hqq also runs its iterative (proximal) optimizer at every quantization.
    per_token = 0 if args.backend == "quanto" else 1
    return QuantizedCache(backend=args.backend, config=config, nbits=args.nbits,
                          axis_key=-1 if args.key_axis == "channel" else per_token, axis_value=per_token,
                          q_group_size=args.q_group_size, residual_length=args.residual_length)


def fill_random(args, config, cache, batch):
    """Random keys/values straight into every layer through the cache's own update(), as
    kivi-host bench's fill = "random" does: a decode step's cost does not depend on the values.
    The dynamic cache takes 1024 tokens at a time (the same chunk for every layer). The
    quantized cache takes the whole context in one update per layer, which is what a real
    prefill does and leaves it as a prefill would (all quantized, empty residual): its update()
    moves the residual into the quantized part only once the residual has reached
    residual_length, so 1024-token chunks would leave up to 1024 tokens in full precision."""
    heads = config.num_key_value_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    chunk = args.context if args.cache == "quantized" else 1024
    store = cache.store if args.cache == "kivi" else cache.update  # kivi: update() waits for attention
    opts = dict(device=args.device, dtype=getattr(torch, args.dtype))
    for start in range(0, args.context, chunk):
        n = min(chunk, args.context - start)
        k = torch.randn(batch, heads, n, head_dim, **opts)
        v = torch.randn(batch, heads, n, head_dim, **opts)
        for layer in range(config.num_hidden_layers):
            store(k, v, layer)
        del k, v


def sync(args):
    if args.device == "cuda":
        torch.cuda.synchronize()


def run(args, model, config, batch, decode_tokens, profile_steps=0):
    """One run: fresh cache, random fill, decode_tokens greedy steps. Returns (decode tokens/s, cache).
    profile_steps > 0: the last that many steps run under torch.profiler, whose tables are printed."""
    cache = make_cache(args, config)
    fill_random(args, config, cache, batch)
    assert cache.get_seq_length() == args.context, (cache.get_seq_length(), args.context)
    tokens = torch.randint(config.vocab_size, (batch, 1))  # on the host
    sync(args)
    t0 = time.perf_counter()
    profiler = None
    for step in range(decode_tokens):
        if step == decode_tokens - profile_steps:
            profiler = start_profiler(args)
        position = torch.full((batch, 1), args.context + step, dtype=torch.long)
        logits = model(input_ids=tokens.to(args.device), position_ids=position.to(args.device),
                       past_key_values=cache, use_cache=True).logits  # [B, 1, vocab]
        # Greedy pick, copied to the host: each step waits for the device, as generation does.
        tokens = logits[:, -1].argmax(-1, keepdim=True).cpu()
    seconds = time.perf_counter() - t0
    if profiler is not None:
        print_profile(args, profiler, profile_steps)
    assert cache.get_seq_length() == args.context + decode_tokens
    return batch * decode_tokens / seconds, cache


def start_profiler(args):
    activities = [torch.profiler.ProfilerActivity.CPU]
    if args.device == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    profiler = torch.profiler.profile(activities=activities, acc_events=True)
    profiler.__enter__()
    return profiler


def print_profile(args, profiler, steps):
    """The profiled steps' ops, by device time (what the GPU ran) and by host time (where Python
    and the launches spend the step: at batch 1 eager transformers is host-bound)."""
    profiler.__exit__(None, None, None)
    events = profiler.key_averages()
    print(f"profile: {steps} decode steps (totals over them)")
    if args.device == "cuda":
        print(events.table(sort_by="self_device_time_total", row_limit=20, max_name_column_width=60))
    print(events.table(sort_by="self_cpu_time_total", row_limit=25, max_name_column_width=60))


def timed_runs(args, label, measure, show):
    """--warmup untimed calls of measure(), then --repeats timed ones, each reported on stderr
    as show(result); returns the timed results."""
    results = []
    for r in range(args.warmup + args.repeats):
        result = measure()
        print(f"{label}: run {r + 1}/{args.warmup + args.repeats}{' (warm-up)' if r < args.warmup else ''}: "
              f"{show(result)}", file=sys.stderr, flush=True)
        if r >= args.warmup:
            results.append(result)
    return results


def prefill_run(args, model, config, batch):
    """One prefill: fresh cache, --context random tokens per sequence in one forward (logits of the
    last position only, as generate computes them), the first greedy pick copied to the host.
    Returns seconds."""
    cache = make_cache(args, config)
    ids = torch.randint(config.vocab_size, (batch, args.context), device=args.device)
    sync(args)
    t0 = time.perf_counter()
    logits = model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1).logits
    logits[:, -1].argmax(-1).cpu()
    return time.perf_counter() - t0


def prefill_case(args, model, config, doc, batch):
    """Time to first token: the median over --repeats runs after --warmup runs."""
    doc.update(batch=batch, prefill=True, warmup=args.warmup, repeats=args.repeats)
    print(f"prefill: batch {batch}, {args.context} random tokens, {args.warmup} warm-up + {args.repeats} timed runs")
    seconds = []
    try:
        def measure():
            release(args)
            return prefill_run(args, model, config, batch)
        seconds = timed_runs(args, "prefill", measure, lambda s: f"{s:.4f} s")
    except torch.OutOfMemoryError:
        doc["oom"] = True
        print(f"out of memory (batch {batch}, context {args.context})")
    if not doc["oom"]:
        ttft = statistics.median(seconds)
        doc.update(time_to_first_token_s=ttft, prefill_tokens_per_s=batch * args.context / ttft,
                   time_to_first_token_s_runs=seconds)
        print(f"time to first token: {ttft:.4f} s ({batch * args.context / ttft:.0f} prompt tokens/s)")
    doc.update(memory(args))
    release(args)
    return doc


def nbytes(obj):
    """Bytes of the tensors held, through quanto's tensor subclasses and HQQ's (codes, meta)."""
    if isinstance(obj, torch.Tensor):
        if hasattr(obj, "__tensor_flatten__") and type(obj) is not torch.Tensor:
            return sum(nbytes(getattr(obj, name)) for name in obj.__tensor_flatten__()[0])
        return obj.numel() * obj.element_size()
    if isinstance(obj, (list, tuple)):
        return sum(nbytes(x) for x in obj)
    if isinstance(obj, dict):
        return sum(nbytes(x) for x in obj.values())
    return 0


def cache_bytes(cache):
    if hasattr(cache, "get_cache_info"):  # kivi: what its plugin holds
        return cache.get_cache_info()["bytes"]["total"]
    total = 0
    for layer in cache.layers:
        for name in ("keys", "values", "_quantized_keys", "_quantized_values"):
            total += nbytes(getattr(layer, name, None))
    return total


def release(args):
    gc.collect()
    if args.device == "cuda":
        torch.cuda.empty_cache()


def memory(args):
    if args.device != "cuda":
        return {"peak_allocated_bytes": None, "peak_reserved_bytes": None}
    return {"peak_allocated_bytes": torch.cuda.max_memory_allocated(),
            "peak_reserved_bytes": torch.cuda.max_memory_reserved()}


def find_max_batch(args, model, config, limit):
    """The largest batch in [1, limit] that fills and decodes 2 steps: doubling, then bisection
    (kivi-host bench's find_max_batch)."""
    def fits(batch):
        ok = True
        try:
            run(args, model, config, batch, 2)
        except torch.OutOfMemoryError:
            ok = False  # the cache and activations are freed once the exception is gone
        release(args)
        peak = memory(args)["peak_allocated_bytes"]
        print(f"  batch {batch}: {'fits' if ok else 'out of memory'}"
              + (f" (peak {peak / 1e9:.2f} GB allocated)" if peak is not None else ""), flush=True)
        if args.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        return ok

    good, bad, batch = 0, limit + 1, 1
    while batch <= limit:
        if not fits(batch):
            bad = batch
            break
        good, batch = batch, batch * 2
    if bad > limit and good < limit and fits(limit):
        return limit
    bad = min(bad, limit)
    while bad - good > 1:
        mid = (good + bad) // 2
        good, bad = (mid, bad) if fits(mid) else (good, mid)
    return good


def bench_case(args, model, config, base, context, batch):
    """One (context, batch) case: decode tokens/s, or the largest batch with --find-max-batch."""
    args.context = context  # fill_random and run read it
    doc = dict(base, context=context)
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    if args.find_max_batch:
        print(f"bench: the largest batch that fills {context} tokens and decodes 2 more, up to {args.find_max_batch}")
        doc.update(decode_tokens=2, max_batch_limit=args.find_max_batch,
                   max_batch=find_max_batch(args, model, config, args.find_max_batch))
        print(f"largest batch that fits: {doc['max_batch']}")
        return doc
    if args.prefill:
        return prefill_case(args, model, config, doc, batch)
    doc.update(batch=batch, decode_tokens=args.decode_tokens, warmup=args.warmup, repeats=args.repeats)
    print(f"bench: batch {batch}, context {context} tokens (random), decode "
          f"{args.decode_tokens} tokens, {args.warmup} warm-up + {args.repeats} timed runs")
    rates, held = [], {}  # held: the last run's cache, for its size
    try:
        def measure():
            held.clear()  # free the previous run's cache before filling the next
            release(args)
            rate, held["cache"] = run(args, model, config, batch, args.decode_tokens)
            return rate
        rates = timed_runs(args, "bench", measure, lambda rate: f"decode {rate:.1f} tokens/s")
        if args.profile:
            held.clear()
            release(args)
            _, held["cache"] = run(args, model, config, batch, args.decode_tokens,
                                   min(args.profile, args.decode_tokens))
    except torch.OutOfMemoryError:
        doc["oom"] = True
    if doc["oom"]:
        held.clear()
        print(f"out of memory (batch {batch}, context {context})")
    else:
        rate = statistics.median(rates)
        doc.update(decode_tokens_per_s=rate, decode_step_ms=1e3 * batch / rate,
                   decode_tokens_per_s_runs=rates, cache_bytes=cache_bytes(held["cache"]))
        print(f"decode: {rate:.1f} tokens/s (median of {args.repeats}; {batch} sequences per step, "
              f"{1e3 * batch / rate:.3f} ms per step); cache {doc['cache_bytes'] / 1e6:.2f} MB")
    doc.update(memory(args))
    held.clear()
    release(args)
    if args.device == "cuda":
        print(f"device memory: peak {doc['peak_allocated_bytes'] / 1e9:.2f} GB allocated, "
              f"{doc['peak_reserved_bytes'] / 1e9:.2f} GB reserved (of {doc['device_total_bytes'] / 1e9:.2f} GB)")
    return doc


def main(argv=None):
    args = parse_args(argv)
    model, config = build_model(args)
    label = {"dynamic": "dynamic", "kivi": f"kivi-{args.nbits}"}.get(
        args.cache, f"quantized-{args.backend}-{args.nbits}")
    base = {"engine": "transformers", "transformers_version": transformers.__version__,
            "torch_version": torch.__version__, "model": args.config_json, "cache": label,
            "attention": config._attn_implementation, "device": args.device, "dtype": args.dtype,
            "fill": "random", "oom": False}
    if args.cache == "quantized":
        base["cache_options"] = {"backend": args.backend, "nbits": args.nbits, "q_group_size": args.q_group_size,
                                 "residual_length": args.residual_length, "keys": f"per {args.key_axis}",
                                 "values": "per token"}
        if args.backend == "quanto":
            base["quanto_unpack"] = quanto_unpack(args)
    if args.cache == "kivi":
        base["cache_options"] = {"k_bits": args.nbits, "v_bits": args.nbits, "group_size": args.q_group_size,
                                 "residual_length": args.residual_length}
    if args.device == "cuda":
        base["device_name"] = torch.cuda.get_device_name()
        base["device_total_bytes"] = torch.cuda.get_device_properties(0).total_memory
    print(f"transformers {transformers.__version__}, {config.model_type} {config.num_hidden_layers} layers, "
          f"{args.dtype} on {args.device}, cache {label}, attention {config._attn_implementation}")
    cases = []
    with torch.inference_mode():
        for context in args.context:
            for batch in ([None] if args.find_max_batch else args.batch):
                cases.append(bench_case(args, model, config, base, context, batch))
                if args.json:  # after every case, so a run stopped by a time limit keeps what it measured
                    with open(args.json, "w") as f:
                        json.dump(cases[0] if len(cases) == 1 else {"cases": cases}, f, indent=1)
                        f.write("\n")
    if args.json:
        print(f"json: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
