"""kivi.KiviCache: a transformers Cache whose storage is a kivi cache plugin.

The keys and values live in the plugin's own storage (packed 2/4/8-bit codes with their scales
and the full-precision residual window, for the "kivi" plugin); the "kivi" attention function
(kivi.attention) hands each layer's new tokens to the plugin, which stores them and attends over
what it stores. No dequantized copy of the cache is ever made, so the memory it reports is the
memory it holds. It needs the model to run with attn_implementation="kivi" (kivi.enable does it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import torch
from transformers.cache_utils import Cache, CacheLayerMixin

from . import _native

BITS = (2, 4, 8, 16)


def _check_int(name: str, value, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"kivi: {name} must be an integer, got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"kivi: {name} = {value} is out of range, expected {low}..{high}")
    return value


def options_toml(options: dict | None) -> str:
    """A plugin's options as the TOML text the registry takes: {"block_tokens": 64} ->
    'block_tokens = 64'."""
    def value(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, str):
            return json.dumps(v)
        raise ValueError(f"kivi: plugin option value {v!r} must be a bool, number or string")
    return "".join(f"{key} = {value(v)}\n" for key, v in (options or {}).items())


def cache_options_toml(k_bits: int, v_bits: int, group_size: int, residual_length: int,
                       extra: dict | None = None) -> str:
    """The "kivi" cache plugin's options, checked here first for clear ValueErrors."""
    for name, bits in (("k_bits", k_bits), ("v_bits", v_bits)):
        if isinstance(bits, bool) or bits not in BITS:
            raise ValueError(f"kivi: {name} = {bits!r} is not supported, expected one of {BITS}")
    _check_int("group_size", group_size, 1, 4096)
    _check_int("residual_length", residual_length, 0, 1 << 20)
    if residual_length % group_size:
        raise ValueError(f"kivi: residual_length = {residual_length} must be 0 or a multiple of "
                         f"group_size = {group_size}")
    for name, bits in (("k_bits", k_bits), ("v_bits", v_bits)):
        if bits < 16 and group_size % (32 // bits):
            raise ValueError(f"kivi: group_size = {group_size} with {name} = {bits} must be a "
                             f"multiple of {32 // bits} (codes per int32 word)")
    return options_toml(dict(k_bits=k_bits, v_bits=v_bits, group_size=group_size,
                             residual_length=residual_length, **(extra or {})))


@dataclass
class _Pending:
    """A layer's new keys handed to update(), waiting for the attention function."""
    cache: "KiviCache"
    layer: int


class KiviCacheLayer(CacheLayerMixin):
    """One layer's face of a KiviCache for transformers' generic code; the storage is the
    cache's, shared by every layer."""

    is_compileable = False
    is_sliding = False
    supports_early_init = False

    def __init__(self, cache: "KiviCache", index: int):
        super().__init__()
        self._cache = cache
        self._index = index

    def lazy_initialization(self, key_states, value_states) -> None:
        pass

    def update(self, key_states, value_states, *args, **kwargs):
        return self._cache.update(key_states, value_states, self._index)

    def get_seq_length(self) -> int:
        return self._cache._seen[self._index]

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.get_seq_length() + query_length, 0

    def get_max_length(self) -> int:
        return -1

    def reset(self) -> None:
        pass  # KiviCache.reset empties the shared storage

    def reorder_cache(self, beam_idx) -> None:
        pass  # KiviCache.reorder_cache reorders the shared storage


class KiviCache(Cache):
    """A KV cache stored by a kivi cache plugin ("kivi": KIVI's packed keys per channel and
    values per token; "fp16", "bf16", "fp32": full precision).

    Args:
        num_layers: the model's decoder layers (create_kivi_cache reads them from the config).
        k_bits, v_bits: 2, 4, 8 or 16 (16: stored in full precision).
        group_size: tokens per key group and channels per value group (32 in KIVI).
        residual_length: the newest tokens kept in full precision (128 in KIVI; a multiple of
            group_size).
        cache_plugin, cache_options: another "kv_cache" plugin and its options (the KIVI
            settings above are then ignored), e.g. cache_plugin="bf16".
        attention_plugin, attention_options: the "attention" plugin that reads it (default: the
            one the cache plugin names) and its options, e.g. {"block_tokens": 64}.

    The batch, heads, dtype and device are taken from the first forward pass; the batch is fixed
    from then on (beam search reorders rows within it).
    """

    def __init__(self, num_layers: int, k_bits: int = 2, v_bits: int = 2, group_size: int = 32,
                 residual_length: int = 128, *, cache_plugin: str = "kivi",
                 cache_options: dict | None = None, attention_plugin: str = "",
                 attention_options: dict | None = None):
        _check_int("num_layers", num_layers, 1, 1 << 16)
        if cache_plugin == "kivi":
            options = cache_options_toml(k_bits, v_bits, group_size, residual_length,
                                         cache_options)
        else:
            options = options_toml(cache_options)
        try:
            default_attention = _native.registry().check_cache_options(cache_plugin, options)
        except _native.KiviError as e:
            raise ValueError(f"kivi: cache plugin {cache_plugin!r}: {e}") from None
        attention_plugin = attention_plugin or default_attention
        try:  # made once here, so that its options are checked now, not at the first forward
            _native._C.NativeAttention(_native.registry(), attention_plugin,
                                       options_toml(attention_options))
        except _native.KiviError as e:
            raise ValueError(f"kivi: attention plugin {attention_plugin!r}: {e}") from None
        super().__init__(layers=[KiviCacheLayer(self, i) for i in range(num_layers)])
        self.k_bits, self.v_bits = k_bits, v_bits
        self.group_size, self.residual_length = group_size, residual_length
        self.cache_plugin = cache_plugin
        self._cache_options = options
        self.attention_plugin = attention_plugin
        self._attention_options = options_toml(attention_options)
        self._native = None  # made at the first update, when the shapes are known
        self._seen = [0] * num_layers  # tokens per layer as transformers counts them (padded)
        self._pending: _Pending | None = None
        self._prefill = False

    # -- what transformers calls ---------------------------------------------------------------

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int,
               *args, **kwargs):
        """Takes one layer's new keys and values ([B, kv_heads, T, D], keys rotated). They are
        stored when the "kivi" attention function reads them, which also knows the padding."""
        if self._pending is not None:
            raise RuntimeError(
                f"kivi: layer {self._pending.layer}'s keys were never read by the 'kivi' "
                "attention: a KiviCache needs the model to run with attn_implementation='kivi' "
                "(kivi.enable(model), or from_pretrained(..., attn_implementation='kivi'))")
        if self._native is None:
            self._create(key_states)
        self._check_shape(key_states, value_states)
        if layer_idx == 0:
            # KIVI's prefill: a forward pass into an empty cache attends over its own
            # full-precision keys and values.
            self._prefill = all(n == 0 for n in self._native.lengths())
        self._seen[layer_idx] += key_states.shape[2]
        self._pending = _Pending(self, layer_idx)
        key_states.kivi_pending = self._pending
        return key_states, value_states

    def store(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int) -> None:
        """Stores keys and values into layer `layer_idx` without attending: fills a cache from
        K/V computed elsewhere (benchmarks fill caches with random ones). Every row takes all
        T tokens; keys rotated, [B, kv_heads, T, D]."""
        if self._pending is not None:
            raise RuntimeError(f"kivi: layer {self._pending.layer}'s keys are still waiting for "
                               "the 'kivi' attention")
        if self._native is None:
            self._create(key_states)
        self._check_shape(key_states, value_states)
        self._native.store(layer_idx, key_states, value_states)
        self._seen[layer_idx] += key_states.shape[2]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self._seen[layer_idx] if layer_idx < len(self._seen) else 0

    def get_max_length(self, layer_idx: int | None = None) -> int:
        return -1

    def reorder_cache(self, beam_idx: torch.LongTensor):
        if self._native is not None:
            self._native.reorder([int(i) for i in beam_idx.tolist()])

    def crop(self, tokens_to_remove: int) -> None:
        """Drops the newest tokens: crop(-n) removes n; crop(n >= 0), the older form, keeps n."""
        seen = self._seen[0]
        remove = -tokens_to_remove if tokens_to_remove < 0 else max(seen - tokens_to_remove, 0)
        if remove == 0 or self._native is None:
            return
        for row, length in enumerate(self._native.lengths()):
            self._native.truncate(max(length - remove, 0), row)
        self._seen = [max(n - remove, 0) for n in self._seen]

    def reset(self):
        if self._native is not None:
            self._native.reset()
        self._seen = [0] * len(self._seen)
        self._pending = None

    def batch_repeat_interleave(self, repeats: int):
        if self._native is not None and any(self._native.lengths()):
            raise NotImplementedError(
                "kivi: a filled KiviCache cannot change its batch (repeat_interleave); expand "
                "the inputs before the first forward pass")

    def batch_select_indices(self, indices: torch.Tensor):
        if self._native is not None and any(self._native.lengths()):
            raise NotImplementedError(
                "kivi: a filled KiviCache cannot change its batch (select_indices)")

    @property
    def batch_size(self) -> int:
        return self._native.max_batch if self._native is not None else -1

    @property
    def is_initialized(self) -> bool:
        return self._native is not None

    @property
    def is_compileable(self) -> bool:
        return False

    # -- kivi ----------------------------------------------------------------------------------

    def _create(self, key_states: torch.Tensor) -> None:
        batch, kv_heads, _, head_dim = key_states.shape
        self._native = _native._C.NativeCache(
            _native.registry(), self.cache_plugin, self._cache_options, self.attention_plugin,
            self._attention_options, len(self.layers), kv_heads, head_dim, batch,
            key_states.dtype, key_states.device)

    def _check_shape(self, k: torch.Tensor, v: torch.Tensor) -> None:
        n = self._native
        if k.dim() != 4 or k.shape != v.shape or k.shape[0] != n.max_batch:
            raise ValueError(
                f"kivi: keys {tuple(k.shape)} and values {tuple(v.shape)} do not fit this cache "
                f"(batch {n.max_batch}, made at the first forward pass); a KiviCache serves one "
                "batch: make a new one (or reset()) for another")

    def _attend(self, pending: _Pending, q, k, v, counts, scale, sliding_window):
        """Stores layer `pending.layer`'s new tokens and attends over the layer's storage.
        q: [B, heads, T, D]; k, v: [B, kv_heads, T, D], right-padded by counts."""
        if self._pending is not pending:
            raise RuntimeError("kivi: the attention read keys its cache did not expect")
        self._pending = None
        return self._native.attend(pending.layer, q, k, v, counts, self._prefill, scale,
                                   sliding_window)

    def lengths(self) -> list[int]:
        """Tokens stored per row (padding is not stored)."""
        return self._native.lengths() if self._native is not None else []

    def memory(self) -> dict:
        """Bytes the plugin holds, by component (its MemoryStats)."""
        return self._native.memory() if self._native is not None else {}

    def owned_tensors(self) -> list[tuple[str, torch.Tensor]]:
        """Every tensor the plugin owns, by name."""
        return self._native.owned_tensors() if self._native is not None else []

    def get_cache_info(self) -> dict:
        """The cache's settings and what it holds: tokens quantized and in the residual window
        per layer, bytes by component, and the ratio to an fp16 cache of the same tokens."""
        info = {"cache_plugin": self.cache_plugin, "k_bits": self.k_bits, "v_bits": self.v_bits,
                "group_size": self.group_size, "residual_length": self.residual_length,
                "num_layers": len(self.layers), "batch": self.batch_size, "layers": [],
                "bytes": {}, "fp16_bytes": 0, "compression_vs_fp16": None}
        if self._native is None:
            return info
        m, u = self._native.memory(), self._native.usage()
        info["description"] = self._native.description
        # The cache keeps every layer at the same length between forward passes.
        info["layers"] = [{"layer": i, "tokens": m["tokens"],
                           "quantized_tokens": m["quantized_tokens"],
                           "residual_tokens": m["residual_tokens"]}
                          for i in range(len(self.layers))]
        info["bytes"] = {"payload": m["payload_bytes"], "scales": m["scale_bytes"],
                         "residual": m["residual_bytes"], "workspace": m["workspace_bytes"],
                         "total": m["total_bytes"]}
        info["usage"] = u
        info["fp16_bytes"] = u["fp16_bytes"]
        if m["total_bytes"]:
            info["compression_vs_fp16"] = u["fp16_bytes"] / m["total_bytes"]
        return info
