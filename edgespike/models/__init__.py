"""The spiking LM families behind one registry, and the model dir format.

    create(family, preset="tiny")      a fresh (untrained) model
    load("demo" | "FAMILY:PRESET" | dir | "model.py:FACTORY[@WEIGHTS]")   resolve a model spec, the one place that does
    save(model, dir, tokenizer=None)   config.json + model.safetensors (+ tokenizer.json)
"""

from edgespike.models import evospikenet, module, neurogen, nir_graph, pulse, slms_pulse, spikingbrain, spikingbrain_hf, ultimate  # noqa: F401  (registers)
from edgespike.models.base import SpikingLM, spike_rates
from edgespike.models.format import DEMO_DIR, is_preset_spec, load, save
from edgespike.models.module import from_module
from edgespike.models.registry import FAMILIES, build, create, get_family, preset_config, presets

__all__ = [
    "DEMO_DIR",
    "FAMILIES",
    "SpikingLM",
    "build",
    "create",
    "from_module",
    "get_family",
    "is_preset_spec",
    "load",
    "preset_config",
    "presets",
    "save",
    "spike_rates",
]
