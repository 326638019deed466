"""Walking a captured decode step (torch.export graph) for its spiking structure: which op made a
value, through which module, and which LIF / spike encoder a tensor's spikes come from.

Shared by the exporters that map spiking layers (NeuronChip, NIR).
"""

from __future__ import annotations

import operator

# ops that move or select spikes without changing their values
SHAPE_OPS = {
    "view", "reshape", "_unsafe_view", "slice", "select", "transpose", "permute", "unsqueeze", "squeeze",
    "expand", "clone", "contiguous", "alias", "detach", "_to_copy", "to", "unflatten", "flatten",
}  # fmt: skip
SPLIT_OPS = {"chunk", "split", "split_with_sizes", "unbind"}


def op_name(node) -> str:
    return getattr(node.target, "__name__", str(node.target)).split(".")[0]


def is_op(node, name: str) -> bool:
    """``node`` calls the custom op ``edgespike::<name>``."""
    return node.op == "call_function" and str(node.target).startswith(f"edgespike.{name}.")


def module_path(node) -> str:
    """The path (in the model) of the innermost module whose forward made ``node``."""
    stack = node.meta.get("nn_module_stack") or {}
    path = list(stack.values())[-1][0] if stack else ""
    return path.removeprefix("model.")


def spike_source(node):
    """The lif / spike_encode node whose spikes ``node`` carries unchanged, else None."""
    while node.op == "call_function":
        if node.target is operator.getitem:
            parent, index = node.args
            if is_op(parent, "lif"):
                return parent if index == 0 else None  # output 1 is the membrane
            if parent.op == "call_function" and op_name(parent) in SPLIT_OPS:
                node = parent.args[0]
                continue
            return None
        if is_op(node, "spike_encode"):
            return node
        name = op_name(node)
        if name in ("cat", "stack"):
            sources = [spike_source(x) for x in node.args[0]]
            if not sources or None in sources or len({module_path(s) for s in sources}) != 1:
                return None
            return sources[0]
        if name not in SHAPE_OPS:
            return None
        node = node.args[0]
    return None


def producer(node):
    """The node that computed ``node``'s values, looking through shape-only ops."""
    while node.op == "call_function" and op_name(node) in SHAPE_OPS:
        node = node.args[0]
    return node
