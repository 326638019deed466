"""Lossless 2-bit packing of ternary codes: four codes per byte, code + 1 in {0, 1, 2},
first code in the two lowest bits."""

from __future__ import annotations

import torch
from torch import Tensor


def pack_ternary(codes: Tensor) -> Tensor:
    """codes[..., n] int8 in {-1, 0, 1} -> uint8[..., ceil(n / 4)]."""
    if codes.numel() and (codes.min() < -1 or codes.max() > 1):
        raise ValueError("pack_ternary: codes must lie in {-1, 0, 1}")
    n = codes.shape[-1]
    padded = torch.nn.functional.pad(codes.to(torch.int16) + 1, (0, (-n) % 4))
    fields = padded.reshape(*codes.shape[:-1], -1, 4)
    shifts = torch.tensor([0, 2, 4, 6], dtype=torch.int16)
    return (fields << shifts).sum(dim=-1).to(torch.uint8)


def unpack_ternary(packed: Tensor, n: int) -> Tensor:
    """uint8[..., ceil(n / 4)] -> codes[..., n] int8."""
    if packed.shape[-1] != (n + 3) // 4:
        raise ValueError(f"unpack_ternary: {n} codes need {(n + 3) // 4} bytes, got {packed.shape[-1]}")
    shifts = torch.tensor([0, 2, 4, 6], dtype=torch.int16)
    fields = (packed.to(torch.int16)[..., None] >> shifts) & 3
    return (fields.reshape(*packed.shape[:-1], -1)[..., :n] - 1).to(torch.int8)
