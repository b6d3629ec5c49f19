"""The "kivi" attention implementation for transformers.

Registered on import of kivi: AttentionInterface["kivi"] (this function) and
AttentionMaskInterface["kivi"] (transformers' 2D padding mask, as flash attention takes it).
With a KiviCache, each layer's new tokens go to the cache plugin, which stores them and
attends over its own storage (packed codes and the residual window, read by the plugin's kernels
on the GPU or its blocked path on the CPU); without a cache (use_cache=False) it is causal
attention among the given tokens by the same backend.
"""

from __future__ import annotations

import torch
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, flash_attention_mask

from . import _native

NAME = "kivi"


def _valid_tokens(attention_mask, batch: int, tokens: int, device):
    """The new tokens' padding: (counts, order). counts: valid tokens per row ([] when every
    token is valid); order: [B, T], each row's valid positions first (None when no padding)."""
    if attention_mask is None:
        return [], None
    if attention_mask.dim() != 2:
        raise ValueError(f"kivi: expected a 2D padding mask, got {tuple(attention_mask.shape)}")
    valid = attention_mask[:, -tokens:].to(device=device, dtype=torch.bool)
    if bool(valid.all()):
        return [], None
    # Stable: the valid tokens keep their order (left or right padding, or holes).
    order = torch.argsort((~valid).to(torch.int8), dim=1, stable=True)
    return valid.sum(dim=1).tolist(), order


def _gather(x: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """x: [B, H, T, D] -> the tokens of `order` ([B, T]) along T."""
    b, h, t, d = x.shape
    return x.gather(2, order[:, None, :, None].expand(b, h, t, d))


def kivi_attention_forward(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor,
                           value: torch.Tensor, attention_mask: torch.Tensor | None,
                           scaling: float | None = None, dropout: float = 0.0,
                           sliding_window: int | None = None, **kwargs):
    """query: [B, heads, T, D]; key, value: [B, kv_heads, T, D] (the new tokens: a KiviCache's
    update returns them as they came). Returns ([B, T, heads, D], None)."""
    if dropout:
        raise ValueError("kivi: attention dropout is not supported (inference only)")
    batch, _, tokens, head_dim = query.shape
    pending = getattr(key, "kivi_pending", None)  # set by KiviCache.update
    counts, order = _valid_tokens(attention_mask, batch, tokens, query.device)
    if order is not None:  # right-pad every row, as the plugins take them
        query, key, value = _gather(query, order), _gather(key, order), _gather(value, order)
    scale = scaling if scaling is not None else head_dim ** -0.5
    window = int(sliding_window or 0)
    if pending is None:
        out = _native.uncached_attention().prefill(query, key, value, counts, scale, window)
    else:
        out = pending.cache._attend(pending, query, key, value, counts, scale, window)
    if order is not None:  # back to the padded positions; padding positions read zero
        out = out.gather(2, torch.argsort(order, dim=1)[:, None, :, None].expand_as(out))
        keep = attention_mask[:, -tokens:].to(device=out.device, dtype=torch.bool)
        out = out * keep[:, None, :, None].to(out.dtype)
    return out.transpose(1, 2).contiguous(), None


def register() -> None:
    AttentionInterface.register(NAME, kivi_attention_forward)
    AttentionMaskInterface.register(NAME, flash_attention_mask)
