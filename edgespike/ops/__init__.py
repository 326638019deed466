"""Custom spiking ops in the ``edgespike`` torch.library namespace.

Each op has a reference kernel (plain torch ops, so every target can lower it), a fake
kernel for tracing, and autograd where training needs it. Importing this package
registers them as ``torch.ops.edgespike.<name>``.
"""

from edgespike.ops.lif import lif, lif_reference
from edgespike.ops.spike_encode import spike_encode, spike_range, spike_weights
from edgespike.ops.spike_linear import spike_linear

__all__ = ["lif", "lif_reference", "spike_encode", "spike_range", "spike_weights", "spike_linear"]
