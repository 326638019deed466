"""Configuration dataclasses shared by every model family, with a strict JSON round trip.

A family's own config subclasses :class:`ModelConfig` at the top of its model file; the
registry in :mod:`edgespike.models` maps the ``family`` key of config.json back to it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

from edgespike.errors import EdgespikeError

RESETS = ("subtract", "zero", "none")
# upper bounds of the sizes every family has (the largest published: vocab 152,064, d 4,096, 40 layers)
SIZE_LIMITS = {"vocab_size": 1 << 24, "d_model": 1 << 17, "n_layers": 1024}
CODINGS = ("binary", "ternary", "bitwise")
WEIGHT_MODES = ("float", "ternary")


class ConfigError(EdgespikeError, ValueError):
    """A configuration that cannot describe a model; the message names the key and the fix."""


@dataclass
class SpikeConfig:
    """Leaky integrate-and-fire dynamics, unrolled over ``timesteps`` per token.

    v[t] = beta * v[t-1] + I[t];  s[t] = H(v[t] - threshold);  then reset:
    "subtract": v[t] -= s[t] * threshold,  "zero": v[t] *= 1 - s[t],  "none": no reset.
    ``delayed_reset`` applies the reset one step later (snntorch's Leaky), ``strict`` fires on
    ``>`` instead of ``>=`` (snntorch); ``edgespike.ops.lif`` gives both laws exactly.
    """

    timesteps: int = 4  # T, timesteps per token
    beta: float = 0.9  # membrane decay per timestep, in (0, 1]
    threshold: float = 1.0  # firing threshold, > 0
    reset: str = "subtract"  # one of RESETS
    surrogate_slope: float = 5.0  # k of the fast-sigmoid surrogate 1 / (1 + k|v - thr|)^2
    delayed_reset: bool = False  # True: snntorch's reset_delay (the reset lands one step after the spike)
    strict: bool = False  # True: fire when v > threshold (snntorch), False: v >= threshold

    def __post_init__(self):
        if not isinstance(self.timesteps, int) or isinstance(self.timesteps, bool) or not 1 <= self.timesteps <= 64:
            raise ConfigError(f"spike.timesteps must be an integer in [1, 64], got {_short(self.timesteps)}")
        for name in ("beta", "threshold", "surrogate_slope"):
            if not _is_number(getattr(self, name)):
                raise ConfigError(f"spike.{name} must be a finite number, got {_short(getattr(self, name))}")
        if not 0.0 < self.beta <= 1.0:
            raise ConfigError(f"spike.beta must be in (0, 1], got {self.beta}")
        if self.threshold <= 0:
            raise ConfigError(f"spike.threshold must be > 0, got {self.threshold}")
        if self.reset not in RESETS:
            raise ConfigError(f"spike.reset must be one of {RESETS}, got {self.reset!r}")
        for name in ("delayed_reset", "strict"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"spike.{name} must be true or false, got {getattr(self, name)!r}")


@dataclass
class ModelConfig:
    """Fields every spiking LM has; families add their own in a subclass."""

    family: ClassVar[str] = ""
    vocab_size: int = 1024  # V
    d_model: int = 128  # d, residual width
    n_layers: int = 2  # L
    weights: str = "ternary"  # "float" or "ternary" (BitNet b1.58 quantization-aware)
    spike: SpikeConfig = field(default_factory=SpikeConfig)

    def __post_init__(self):
        if isinstance(self.spike, dict):
            self.spike = _from_dict(SpikeConfig, self.spike, "spike")
        if not isinstance(self.spike, SpikeConfig):
            raise ConfigError(f"spike must be an object of LIF settings (timesteps, beta, ...), got {_short(self.spike)}")
        for name, limit in SIZE_LIMITS.items():
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= limit:
                raise ConfigError(f"{name} must be an integer in [1, {limit:,}], got {_short(value)}")
        if self.weights not in WEIGHT_MODES:
            raise ConfigError(f"weights must be one of {WEIGHT_MODES}, got {self.weights!r}")

    def to_dict(self) -> dict[str, Any]:
        return {"family": self.family, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        data = {k: v for k, v in data.items() if k != "family"}
        return _from_dict(cls, data, cls.family)

    def replace(self, **changes) -> "ModelConfig":
        return dataclasses.replace(self, **changes)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _from_dict(cls, data: dict[str, Any], where: str):
    if not isinstance(data, dict):
        raise ConfigError(f"{where} config must be an object, got {_short(data)}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} in {where} config; known keys: {sorted(known)}")
    try:
        return cls(**data)
    except ConfigError:
        raise
    except (TypeError, ValueError, ArithmeticError, AttributeError, KeyError, IndexError) as err:
        # a wrong type that a family's checks trip over (e.g. comparing a list with a number)
        raise ConfigError(f"invalid {where} config: {str(err).splitlines()[0][:200]}; check its types and ranges") from None
