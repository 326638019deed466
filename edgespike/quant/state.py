"""How a target stores the carried state where it is not fp32.

    "fp16"    one fp16 value: 11 significant bits (Core ML states are fp16 only)
    "fp16x2"  an fp16 pair, hi = fp16(x) and lo = fp16(x - hi), read back as hi + lo: 22
              significant bits, the trained fp32 dynamics kept within ~2^-22 relative
              (Dekker-style splitting; fp16's range, |x| < 65504, still applies)
"""

from __future__ import annotations

import numpy as np

from edgespike.errors import EdgespikeError

STATE_PRECISIONS = ("fp16", "fp16x2")
LO_SUFFIX = "__lo"  # the buffer / Core ML state of an fp16x2 pair's low half


def check_state_precision(precision: str) -> str:
    if precision not in STATE_PRECISIONS:
        raise EdgespikeError(f"unknown --state-precision {precision!r}; choose {' or '.join(STATE_PRECISIONS)}")
    return precision


def split_state(value: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(hi, lo) fp16 halves of an fp32 value."""
    value = np.asarray(value, dtype=np.float32)
    hi = value.astype(np.float16)
    return hi, (value - hi.astype(np.float32)).astype(np.float16)


def round_state(value: np.ndarray, precision: str) -> np.ndarray:
    """``value`` as a state of ``precision`` (or "fp32") holds it, back in fp32."""
    if precision == "fp32":
        return np.asarray(value, dtype=np.float32)
    if precision == "fp16":
        return np.asarray(value, dtype=np.float32).astype(np.float16).astype(np.float32)
    hi, lo = split_state(value)
    return hi.astype(np.float32) + lo.astype(np.float32)
