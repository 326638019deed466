"""The NeuronChip neuromorphic simulator: runs chip bundles (exporters/neuronchip.py) as a runtime.

    simulator.py   event-driven fixed-point chip layers and the per-token cost ledger
    session.py     the Session: host part in float PyTorch, chip layers through the simulator
    sanafe.py      the same bundles with the chip layers on SANA-FE (runtime "sanafe", the sanafe extra)
"""

from edgespike.runtimes.neuronchip import sanafe
from edgespike.runtimes.neuronchip.session import NeuronChipSession, open_bundle
from edgespike.runtimes.registry import register_runtime

__all__ = ["NeuronChipSession"]

register_runtime("neuronchip", open_bundle)
register_runtime("sanafe", sanafe.open_bundle)
