"""The NeuronChip neuromorphic simulator: chip descriptions, and the runtime of chip bundles."""
