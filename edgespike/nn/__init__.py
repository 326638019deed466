"""Modules built on the edgespike ops, shared by the model families."""

from edgespike.nn.attention import alibi_slopes, causal_cache_attention, empty_cache, windowed_attention
from edgespike.nn.spiking import LIF, SpikeEncoder, mean_over_time, repeat_over_time
from edgespike.nn.norm import RMSNorm
from edgespike.nn.ternary_linear import TernaryLinear

__all__ = [
    "LIF",
    "RMSNorm",
    "SpikeEncoder",
    "TernaryLinear",
    "alibi_slopes",
    "causal_cache_attention",
    "empty_cache",
    "mean_over_time",
    "repeat_over_time",
    "windowed_attention",
]
