"""The research write-up's entry points: create_kivi_cache, print_kivi_stats and enable."""

from __future__ import annotations

import functools
import sys

from .attention import NAME as ATTENTION
from .cache import KiviCache

# The model families kivi serves (its C++ families: plugins/llama, plugins/qwen2).
FAMILIES = ("llama", "qwen2")


def _check_model(model) -> None:
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type not in FAMILIES:
        raise ValueError(f"kivi: model_type {model_type!r} is not served, expected one of "
                         f"{FAMILIES} (Llama 2/3/3.1/3.2, Qwen2/2.5)")


def create_kivi_cache(model, k_bits: int = 2, v_bits: int = 2, group_size: int = 32,
                      residual_length: int = 128, **kwargs) -> KiviCache:
    """A KiviCache for `model` (Llama or Qwen2): its layer count from the config."""
    _check_model(model)
    return KiviCache(model.config.num_hidden_layers, k_bits, v_bits, group_size,
                     residual_length, **kwargs)


def enable(model, k_bits: int = 2, v_bits: int = 2, group_size: int = 32,
           residual_length: int = 128, **kwargs):
    """Makes every generate() and cached forward() of `model` use a new KiviCache with these
    settings (what lm_eval's `hf` model needs), switches its attention to "kivi", and adds
    model.create_kivi_cache(). Returns the model."""
    _check_model(model)
    settings = dict(k_bits=k_bits, v_bits=v_bits, group_size=group_size,
                    residual_length=residual_length, **kwargs)
    create_kivi_cache(model, **settings)  # checks the settings now, not at the first call
    model.set_attn_implementation(ATTENTION)
    model.create_kivi_cache = functools.partial(create_kivi_cache, model, **settings)
    generate, forward = model.generate, model.forward

    @functools.wraps(generate)
    def kivi_generate(*args, **kw):
        if kw.get("past_key_values") is None and kw.get("use_cache", True):
            kw["past_key_values"] = model.create_kivi_cache()
        return generate(*args, **kw)

    @functools.wraps(forward)
    def kivi_forward(*args, **kw):
        use_cache = kw.get("use_cache")
        if use_cache is None:
            use_cache = getattr(model.config, "use_cache", False)
        if kw.get("past_key_values") is None and use_cache:
            kw["past_key_values"] = model.create_kivi_cache()
        return forward(*args, **kw)

    model.generate, model.forward = kivi_generate, kivi_forward
    model.kivi_settings = settings
    return model


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024


def print_kivi_stats(cache: KiviCache, file=None) -> dict:
    """Prints what the cache holds (a table) and returns get_cache_info()."""
    file = file or sys.stdout
    info = cache.get_cache_info()
    print(f"kivi cache: {info.get('description', cache.cache_plugin)} "
          f"(k_bits {info['k_bits']}, v_bits {info['v_bits']}, group {info['group_size']}, "
          f"residual {info['residual_length']}), {info['num_layers']} layers, "
          f"batch {info['batch']}", file=file)
    if not info["bytes"]:
        print("  empty: no forward pass yet", file=file)
        return info
    layer = info["layers"][0]
    print(f"  tokens per layer (all rows): {layer['tokens']} = {layer['quantized_tokens']} "
          f"quantized + {layer['residual_tokens']} in the full-precision window", file=file)
    rows = [("payload (codes or K/V)", info["bytes"]["payload"]),
            ("scales and minima", info["bytes"]["scales"]),
            ("residual windows", info["bytes"]["residual"]),
            ("workspace", info["bytes"]["workspace"]),
            ("total held", info["bytes"]["total"]),
            ("fp16 cache of the same tokens", info["fp16_bytes"])]
    for name, value in rows:
        print(f"  {name:<32}{_size(value):>12}", file=file)
    if info["compression_vs_fp16"]:
        print(f"  fp16 / held: {info['compression_vs_fp16']:.2f}x", file=file)
    return info
