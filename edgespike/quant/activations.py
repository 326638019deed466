"""Symmetric per-token activation quantization with a straight-through rounding."""

from __future__ import annotations

import torch
from torch import Tensor


def round_ste(x: Tensor) -> Tensor:
    """round(x) forward, identity backward."""
    return x + (torch.round(x) - x).detach()


def quantize_activations(x: Tensor, low: int, high: int) -> tuple[Tensor, Tensor]:
    """x[..., d] -> (q[..., d] integer-valued in [low, high], scale[..., 1]); x ~ q * scale.

    absmax per token: scale = max|x| / max(|low|, high), so the largest magnitude maps onto
    the range's edge (low = 0 keeps only the non-negative part).
    """
    qmax = max(abs(low), high)
    scale = x.detach().abs().amax(dim=-1, keepdim=True).clamp_min(1e-6) / qmax
    return torch.clamp(round_ste(x / scale), low, high), scale
