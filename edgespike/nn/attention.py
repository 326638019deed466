"""Causal sliding-window attention with grouped KV heads, ALiBi, and a shift-buffer cache.

The cache holds the last W keys and values, oldest first, plus a ``valid`` mask; each call
appends the S new ones and keeps the last W. A query attends to itself and the W tokens
before it. Positions enter only as distances (ALiBi, Press et al. 2022: score -= slope_h *
distance), and a slot's distance follows from its index, so the carried state needs no
absolute position counter: a counter would stop being exact past 2048 in the fp16 states
Core ML keeps. One code path serves whole sequences (training) and single-token decode.

``causal_cache_attention`` is the other kind: a cache of ``max_seq_len`` slots written at the
absolute position a decode step is given (RoPE families, whose full-attention layers need it).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

MASKED = -1.0e4  # additive mask; finite so fp16 softmax cannot produce NaN


def alibi_slopes(n_heads: int) -> Tensor:
    """The geometric ALiBi slopes 2^(-8 i / H), i = 1..H."""
    return torch.tensor([2.0 ** (-8.0 * (i + 1) / n_heads) for i in range(n_heads)])


def windowed_attention(
    q: Tensor, k: Tensor, v: Tensor, cache: dict[str, Tensor], slopes: Tensor | None
) -> tuple[Tensor, dict[str, Tensor]]:
    """q[B, H, S, hd], k/v[B, Hkv, S, hd], cache {k, v: [B, Hkv, W, hd], valid: [B, W]}
    -> (out[B, H, S, hd], new cache). ``slopes`` None: no ALiBi (positions already in q, k)."""
    batch, n_heads, seq, head_dim = q.shape
    window = cache["k"].shape[2]
    keys = torch.cat([cache["k"], k], dim=2)  # [B, Hkv, W+S, hd]
    values = torch.cat([cache["v"], v], dim=2)
    valid = torch.cat([cache["valid"], torch.ones(batch, seq, dtype=q.dtype, device=q.device)], dim=1)  # [B, W+S]

    # distance from query i (position i) to key j (position j - W)
    distance = (
        torch.arange(seq, device=q.device)[:, None] - torch.arange(window + seq, device=q.device)[None, :] + window
    ).to(q.dtype)  # [S, W+S]
    in_window = (distance >= 0).to(q.dtype) * (distance <= window).to(q.dtype)  # products, not bool "and": Core ML
    allowed = in_window[None, None] * valid[:, None, None, :]

    group = n_heads // keys.shape[1]
    scores = q @ keys.repeat_interleave(group, dim=1).transpose(-1, -2) / math.sqrt(head_dim)  # [B, H, S, W+S]
    if slopes is not None:
        scores = scores - slopes.to(q.dtype)[None, :, None, None] * distance
    out = torch.softmax(scores + (1.0 - allowed) * MASKED, dim=-1) @ values.repeat_interleave(group, dim=1)
    return out, {"k": keys[:, :, -window:], "v": values[:, :, -window:], "valid": valid[:, -window:]}


def causal_cache_attention(
    q: Tensor, k: Tensor, v: Tensor, cache: dict[str, Tensor], positions: Tensor
) -> tuple[Tensor, dict[str, Tensor]]:
    """Full causal attention over a fixed-size cache indexed by absolute position.

    q[B, H, S, hd], k/v[B, Hkv, S, hd] of the tokens at ``positions`` [B, S];
    cache {k, v: [B, Hkv, N, hd]} holds positions 0..N-1 -> (out[B, H, S, hd], new cache).
    The new keys are written into their slots with one-hot products (no scatter: every target
    lowers them), and a query at position p sees the slots 0..p."""
    capacity = cache["k"].shape[2]
    slots = torch.arange(capacity, device=q.device)
    onehot = (positions[:, :, None] == slots[None, None, :]).to(q.dtype)[:, None]  # [B, 1, S, N]
    written = onehot.sum(dim=2).unsqueeze(-1)  # [B, 1, N, 1]
    keys = cache["k"] * (1.0 - written) + onehot.transpose(-1, -2) @ k  # [B, Hkv, N, hd]
    values = cache["v"] * (1.0 - written) + onehot.transpose(-1, -2) @ v
    allowed = (slots[None, None, :] <= positions[:, :, None]).to(q.dtype)[:, None]  # [B, 1, S, N]
    group = q.shape[1] // keys.shape[1]
    scores = q @ keys.repeat_interleave(group, dim=1).transpose(-1, -2) / math.sqrt(q.shape[-1])
    out = torch.softmax(scores + (1.0 - allowed) * MASKED, dim=-1) @ values.repeat_interleave(group, dim=1)
    return out, {"k": keys, "v": values}


def empty_cache(batch: int, n_kv_heads: int, window: int, head_dim: int, like: Tensor) -> dict[str, Tensor]:
    zeros = like.new_zeros
    return {
        "k": zeros(batch, n_kv_heads, window, head_dim),
        "v": zeros(batch, n_kv_heads, window, head_dim),
        "valid": zeros(batch, window),
    }
