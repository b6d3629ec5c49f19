"""kivi: KIVI-quantized KV caches with real packed storage and fused kernels, for Hugging Face
transformers (Llama 2/3/3.1/3.2, Qwen2/2.5).

    import kivi
    model = AutoModelForCausalLM.from_pretrained(path, attn_implementation="kivi")
    cache = kivi.create_kivi_cache(model, k_bits=2, v_bits=2, group_size=32, residual_length=128)
    out = model.generate(**inputs, past_key_values=cache, max_new_tokens=64)
    kivi.print_kivi_stats(cache)

    engine = kivi.Engine.from_config("run.toml")     # kivi-host's engine, no transformers
    print(engine.generate("Once upon a time", max_new_tokens=32).text)

docs/python.md has the rest (beam search, kivi.enable for lm_eval, memory analysis, kivi.Engine).
"""

from . import attention as _attention
from ._native import KiviError, plugin_dirs, plugins, registry
from .api import create_kivi_cache, enable, print_kivi_stats
from .cache import KiviCache
from .engine import Engine

_attention.register()

__all__ = ["Engine", "KiviCache", "KiviError", "create_kivi_cache", "enable", "plugin_dirs", "plugins",
           "print_kivi_stats", "registry"]
__version__ = "0.1.0"
