"""Lossless packing of integer codes into unsigned bit fields, first field in the lowest bits:
ternary codes as 2-bit fields of code + 1 (four per byte), int4 codes as 4-bit fields of code + 8
(two per byte). The NeuronChip bundle packs each row; ONNX's UINT2 / UINT4 tensors (and
onnxruntime's MatMulNBits weights, the same bytes) pack the flattened tensor."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor


@dataclass(frozen=True)
class CodeField:
    """Integer codes in [low, high] = [-offset, 2^bits - 1 - offset], stored as unsigned fields of code + offset."""

    kind: str
    dtype_name: str  # the ONNX (onnx_ir.DataType, TensorProto) type of such fields
    bits: int
    offset: int
    low: int
    high: int


CODE_FIELDS = (CodeField("uint2", "UINT2", 2, 1, -1, 1), CodeField("uint4", "UINT4", 4, 8, -8, 7))
TERNARY = CODE_FIELDS[0]


def pack_fields(fields: np.ndarray, bits: int) -> np.ndarray:
    """Unsigned ``bits``-bit ``fields[..., n]`` -> uint8[..., ceil(n * bits / 8)], each row padded with zeros."""
    per_byte = 8 // bits
    fields = fields.astype(np.uint8)
    padded = np.pad(fields, [(0, 0)] * (fields.ndim - 1) + [(0, (-fields.shape[-1]) % per_byte)])
    grouped = padded.reshape(*fields.shape[:-1], -1, per_byte)
    packed = np.zeros(grouped.shape[:-1], np.uint8)
    for i in range(per_byte):
        packed |= grouped[..., i] << (i * bits)
    return packed


def pack_ternary(codes: Tensor) -> Tensor:
    """codes[..., n] int8 in {-1, 0, 1} -> uint8[..., ceil(n / 4)]."""
    if codes.numel() and (codes.min() < TERNARY.low or codes.max() > TERNARY.high):
        raise ValueError("pack_ternary: codes must lie in {-1, 0, 1}")
    return torch.from_numpy(pack_fields(codes.numpy().astype(np.int16) + TERNARY.offset, TERNARY.bits))


def unpack_ternary(packed: Tensor, n: int) -> Tensor:
    """uint8[..., ceil(n / 4)] -> codes[..., n] int8."""
    if packed.shape[-1] != (n + 3) // 4:
        raise ValueError(f"unpack_ternary: {n} codes need {(n + 3) // 4} bytes, got {packed.shape[-1]}")
    shifts = torch.tensor([0, 2, 4, 6], dtype=torch.int16)
    fields = (packed.to(torch.int16)[..., None] >> shifts) & 3
    return (fields.reshape(*packed.shape[:-1], -1)[..., :n] - TERNARY.offset).to(torch.int8)
