"""Model families by name: each family module registers its model class and presets."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from edgespike.config import ModelConfig
from edgespike.errors import EdgespikeError
from edgespike.models.base import SpikingLM


AS_PUBLISHED = "as published"  # computes what the seed system's public code computes; its real checkpoint imports


def after_seed(seed: str) -> str:
    """The origin of a family edgespike designed from a seed write-up (``../shared/seeds/<seed>_*.txt``)."""
    return f"edgespike's design after seed {seed}"


@dataclass(frozen=True)
class Family:
    name: str
    model_class: type[SpikingLM]
    presets: dict[str, ModelConfig]
    summary: str  # one line for `edgespike models`
    origin: str  # AS_PUBLISHED, after_seed("003"), or where else it comes from ("built from a NIR graph")


FAMILIES: dict[str, Family] = {}


def register_family(model_class: type[SpikingLM], presets: dict[str, ModelConfig], summary: str, *, origin: str,
                    override: bool = False) -> None:
    name = model_class.config_class.family
    if name in FAMILIES and not override:
        raise ValueError(f"model family {name!r} is already registered; pass override=True to replace it")
    FAMILIES[name] = Family(name, model_class, presets, summary, origin)


def get_family(name: str) -> Family:
    if name not in FAMILIES:
        raise EdgespikeError(f"unknown model family {name!r}; known families: {', '.join(sorted(FAMILIES))}")
    return FAMILIES[name]


def presets(family: str) -> dict[str, ModelConfig]:
    """The named configs of a family (copies; change them freely)."""
    return copy.deepcopy(get_family(family).presets)


def preset_config(family: str, preset: str) -> ModelConfig:
    known = get_family(family).presets
    if preset not in known:
        raise EdgespikeError(f"unknown preset {preset!r} for family {family!r}; known presets: {', '.join(known)}")
    return copy.deepcopy(known[preset])


def build(config: ModelConfig, device: str | torch.device | None = None) -> SpikingLM:
    """A model for ``config`` on ``device`` (None: torch's default device, which ``with
    torch.device("meta"):`` sets); "meta" builds full-size models without allocating."""
    model_class = get_family(config.family).model_class
    with torch.device(device if device is not None else torch.get_default_device()):
        return model_class(config)


def create(family: str, preset: str = "tiny", device: str | torch.device | None = None, **overrides) -> SpikingLM:
    """``create("evospikenet", "7b-llama", device="meta")``; overrides replace config fields."""
    config = preset_config(family, preset)
    return build(config.replace(**overrides) if overrides else config, device)
