"""The NeuronChip neuromorphic simulator: runs chip bundles (exporters/neuronchip.py) as a runtime.

    simulator.py   event-driven fixed-point chip layers and the per-token cost ledger
    session.py     the Session: host part in float PyTorch, chip layers through the simulator
"""

from edgespike.runtimes.neuronchip.session import NeuronChipSession, open_bundle
from edgespike.runtimes.registry import register_runtime

__all__ = ["NeuronChipSession"]

register_runtime("neuronchip", open_bundle)
