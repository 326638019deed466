"""The spiking LM families behind one registry, and the model dir format.

    create(family, preset="tiny")      a fresh (untrained) model
    load("demo" | "FAMILY:PRESET" | dir)   resolve a model spec, the one place that does
    save(model, dir, tokenizer=None)   config.json + model.safetensors (+ tokenizer.json)
"""

from edgespike.models import evospikenet, neurogen, pulse, slms_pulse, spikingbrain, spikingbrain_hf, ultimate  # noqa: F401  (registers)
from edgespike.models.base import SpikingLM, spike_rates
from edgespike.models.format import DEMO_DIR, load, save
from edgespike.models.registry import FAMILIES, build, create, get_family, preset_config, presets

__all__ = [
    "DEMO_DIR",
    "FAMILIES",
    "SpikingLM",
    "build",
    "create",
    "get_family",
    "load",
    "preset_config",
    "presets",
    "save",
    "spike_rates",
]
