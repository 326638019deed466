"""What one decode step of a model does, per block and per token, counted while it runs.

The model's weights are put in the format the exporters would use (ternary by default for
ternary-trained models, ``edgespike.quant.weights``) and it runs token by token with its state carried;
hooks and two dispatch modes count, for each block (``layers.3``, ``embed``, ``head``, ...):

    dense_macs      every multiply-accumulate a dense implementation does: linears at T*B rows
                    (layer-major unrolling) and the functional matmuls (attention, tied heads)
    acs             accumulates actually needed: a spike times a weight is an add, counted only
                    for active inputs and non-zero weights; a dense input times a ternary weight
                    is a sign-add too (zero weights skipped)
    macs            true multiplies: the per-row scale of coded linears, the per-token scale of
                    linears that spike their own input (W8ASpike), functional matmuls, and
                    dense inputs times int8 / int4 / float weights
    synops          NeuroBench's synaptic operations: active inputs x fan-out (zero weights included)
    neuron_updates  LIF neurons x timesteps, spike-encoder outputs
    spikes          non-zero spike values emitted (LIF and spike encoders)
    spike_slots     neurons x timesteps that could spike (activation sparsity's denominator)
    weight_bytes    parameter bytes read, as stored: ternary codes at 2 bits (int4 4, int8 8, fp16
                    linears 16), scales and the rest in fp32, an embedding one row (or whole,
                    where it also serves as the head); LIF constants fixed by the config are
                    immediates of the op, not weights
    state_bytes     carried state read and written (fp32)
    activation_bytes  linear inputs: 1 bit per spike slot, 4 bytes per dense value
    spike_io        the seeds' spike I/O: the first spike train of width d_model in the block

Spikes are measured on real text; on the meta device (full-size presets, no weights) they are
``firing_rate`` x spike slots, and ternary weights are assumed ZERO_FRACTION zero.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from edgespike.capture import frozen_model
from edgespike.models.base import SpikingLM
from edgespike.nn import LIF, SpikeEncoder, TernaryLinear
from edgespike.quant.weights import WEIGHT_BITS

# absmean ternarization of Gaussian weights zeroes |w| < 0.5 E|w| = 0.5 sqrt(2/pi) sigma:
# P(|z| < 0.399) = 0.31 (the assumed zero fraction where the weights are not real)
ZERO_FRACTION = math.erf(0.5 * math.sqrt(2 / math.pi) / math.sqrt(2))
FLOAT_BYTES = 4
COUNTS = ("dense_macs", "acs", "macs", "synops", "neuron_updates", "spikes", "spike_slots",
          "weight_bytes", "state_bytes", "activation_bytes", "spike_io")  # fmt: skip


@dataclass
class BlockCounts:
    """Per-token counts of one block (see the module docstring for each field)."""

    name: str
    dense_macs: float = 0.0
    acs: float = 0.0
    macs: float = 0.0
    synops: float = 0.0
    neuron_updates: float = 0.0
    spikes: float = 0.0
    spike_slots: float = 0.0
    weight_bytes: float = 0.0
    state_bytes: float = 0.0
    activation_bytes: float = 0.0
    spike_io: float = 0.0
    spike_input_macs: float = 0.0  # the dense MACs of linears whose input is spikes (what an ANN would do densely)
    spiking_acs: float = 0.0  # the acs driven by spikes (they scale with the firing rate)
    spike_inputs: float = 0.0  # spike values read by linears (T per neuron per token)
    spike_weight_bytes: float = 0.0  # the part of weight_bytes of linears fed by spikes (a neuromorphic core holds them)

    @property
    def spike_rate(self) -> float | None:
        return self.spikes / self.spike_slots if self.spike_slots else None

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "spike_rate": self.spike_rate}


@dataclass
class Counts:
    """Per-token counts of a model over ``tokens`` tokens of text (or one, on the meta device)."""

    family: str
    parameters: int
    timesteps: int
    tokens: int
    measured: bool  # spikes measured on text, or assumed (firing_rate)
    firing_rate: float | None
    blocks: list[BlockCounts] = field(default_factory=list)
    footprint_bits: float = 0.0  # weights as stored: linears at weight_bits, the rest 32
    weights: int = 0  # weights of linear layers (connection sparsity's denominator)
    weight_bits: int = 2  # bits per linear weight, as stored (WEIGHT_BITS)
    zero_weights: float = 0.0

    def total(self, key: str) -> float:
        return sum(getattr(b, key) for b in self.blocks)

    @property
    def spike_rate(self) -> float | None:
        slots = self.total("spike_slots")
        return self.total("spikes") / slots if slots else None

    def neurobench(self) -> dict:
        """NeuroBench's names for the same counts (Yik et al., 'NeuroBench', arXiv:2304.04640)."""
        slots = self.total("spike_slots")
        return {
            "footprint_bytes": self.footprint_bits / 8,
            "connection_sparsity": self.zero_weights / self.weights if self.weights else 0.0,
            "activation_sparsity": 1 - self.total("spikes") / slots if slots else None,
            "synaptic_operations": {
                "Effective_MACs": self.total("macs"),
                "Effective_ACs": self.total("acs"),
                "Dense": self.total("dense_macs"),
            },
        }


def block_of(path: str) -> str:
    """``layers.3.attn.q_proj`` -> ``layers.3``; ``embed`` -> ``embed``; the root -> ``head``."""
    parts = [p for p in path.split(".") if p]
    if not parts:
        return "head"
    return ".".join(parts[:2]) if len(parts) > 1 and parts[1].isdigit() else parts[0]


class _Reads(TorchDispatchMode):
    """Which parameters an op reads: an embedding lookup reads rows, anything else the whole."""

    def __init__(self, names: dict[int, str]):
        super().__init__()
        self.names, self.rows, self.whole = names, {}, set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        for position, arg in enumerate(args):
            name = self.names.get(id(arg))
            if name is None:
                continue
            if func is torch.ops.aten.embedding.default and position == 0:
                self.rows[name] = self.rows.get(name, 0) + args[1].numel()
            else:
                self.whole.add(name)
        return func(*args, **kwargs)


def count(model: SpikingLM, tokens: list[int], timesteps: int | None = None, firing_rate: float | None = None,
          weights: str | None = None) -> Counts:
    """Per-token counts of ``model`` decoding ``tokens`` one at a time (state carried), its
    linears in format ``weights`` (None: the exporters' default).

    On the meta device pass ``firing_rate`` (one token is run, for shapes only).
    """
    meta = next(model.parameters()).is_meta
    frozen = frozen_model(model, timesteps, weights)
    weights, config = frozen.frozen_weights, frozen.config
    blocks: dict[str, BlockCounts] = {}

    def block(path: str) -> BlockCounts:
        name = block_of(path)
        return blocks.setdefault(name, BlockCounts(name))

    def spike_count(spikes: torch.Tensor) -> float:
        return firing_rate * spikes.numel() if meta else float(torch.count_nonzero(spikes))

    # which linears read spikes: the tensors LIF / spike encoders emit (and views of them), by identity
    spike_tensors: dict[int, torch.Tensor] = {}  # id -> the spikes, held so that no other tensor reuses the id
    spike_linears: set[str] = set()  # paths of the linears whose input is spikes
    own_spikes: dict[str, torch.Tensor] = {}  # linear path -> what its own encoder emitted this call
    linear_paths: set[str] = set()  # their matmuls are counted by the hooks, not by the flop counter
    hooks = []
    for path, module in frozen.named_modules():
        if isinstance(module, (LIF, SpikeEncoder)):
            hooks.append(module.register_forward_hook(partial_spikes(block, path, spike_count, spike_tensors, config.d_model)))
        elif isinstance(module, TernaryLinear):
            linear_paths.add(path)
            if isinstance(getattr(module, "spikes", None), SpikeEncoder):  # encodes its own input (W8ASpike QuantLinear)
                hooks.append(module.spikes.register_forward_hook(_keep_spikes(own_spikes, path)))
            hooks.append(module.register_forward_hook(
                partial_linear(block, path, module, meta, firing_rate, spike_tensors, spike_linears, weights == "ternary", own_spikes)))

    parameter_names = {id(t): n for n, t in [*frozen.named_parameters(), *frozen.named_buffers()]}
    runs = tokens[:1] if meta else tokens
    device = next(model.parameters()).device
    state = frozen.init_state(1)
    flops: dict[str, float] = {}
    with torch.no_grad():
        for token in runs:
            spike_tensors.clear()
            reads = _Reads(parameter_names)
            with FlopCounterMode(display=False) as counter, reads:
                _, state = frozen(torch.tensor([[token]], device=device), state)
            _functional_flops(counter.get_flop_counts(), linear_paths, flops)
    for hook in hooks:
        hook.remove()

    n = len(runs)
    for b in blocks.values():
        for key in (*COUNTS, "spike_input_macs", "spiking_acs", "spike_inputs"):
            if key not in ("weight_bytes", "spike_io"):  # set once, not summed over tokens
                setattr(b, key, getattr(b, key) / n)
    attributed = 0.0
    for name, value in flops.items():
        if name != "__all__":
            macs = value / 2 / n
            block(name).dense_macs += macs
            block(name).macs += macs
            attributed += value
    head = (flops.get("__all__", 0) - attributed) / 2 / n  # matmuls outside any block (a tied head)
    if head:
        block("").dense_macs += head
        block("").macs += head

    counts = Counts(config.family, model.num_parameters(), config.spike.timesteps, n, not meta, firing_rate,
                    weight_bits=WEIGHT_BITS[weights])
    _weights(frozen, reads, block, counts, meta, spike_linears)
    for name, value in frozen.init_state(1).items():
        block(name).state_bytes += 2 * value.numel() * FLOAT_BYTES  # read + write, fp32
    counts.blocks = sorted(blocks.values(), key=lambda b: _order(b.name))
    return counts


def partial_spikes(block, path, spike_count, spike_tensors, d_model):
    def hook(_module, _inputs, out):
        spikes = out[0]  # [T(*S), B, ..., n] or [T, B, S, n]
        spike_tensors[id(spikes)] = spikes
        b = block(path)
        b.neuron_updates += spikes.numel()
        b.spike_slots += spikes.numel()
        b.spikes += spike_count(spikes)
        if not b.spike_io and spikes.shape[-1] == d_model:
            b.spike_io = spikes.numel()

    return hook


def _functional_flops(per_module: dict, linear_paths: set[str], flops: dict[str, float]) -> None:
    """Add each block's matmul flops outside its linears (the hooks count those) to ``flops``, and the
    model's under ``__all__``. ``per_module``: FlopCounterMode's "Global", "<Model>", "<Model>.layers.0", ...,
    each inclusive of the modules it calls, and only modules that were called (a container is not)."""
    totals = {module.partition(".")[2]: sum(ops.values()) for module, ops in per_module.items() if module != "Global"}
    for path, total in totals.items():
        if not path:  # the model itself: every matmul in it
            flops["__all__"] = flops.get("__all__", 0) + total
            continue
        name = block_of(path)
        if not any(path.startswith(f"{outer}.") and block_of(outer) == name for outer in totals if outer):
            flops[name] = flops.get(name, 0) + total  # the block's outermost modules (nested ones are inside them)
        if path in linear_paths:  # a float / QAT linear's matmul: partial_linear counts it
            flops[name] = flops.get(name, 0) - total
            flops["__all__"] = flops.get("__all__", 0) - total


def _keep_spikes(own_spikes: dict, path: str):
    def hook(_module, _inputs, out):
        own_spikes[path] = out[0]

    return hook


def partial_linear(block, path, module: TernaryLinear, meta: bool, firing_rate, spike_tensors, spike_linears, sign_adds: bool,
                   own_spikes: dict):
    """``sign_adds``: the weights are ternary, so a dense input times a weight is a sign-add, not a multiply.
    A linear that encodes its own input is counted as a linear of those spikes (``own_spikes[path]``,
    [T, ..., in]) plus one multiply per output and token by the encoder's scale."""
    def hook(_module, inputs, _out):
        x = own_spikes.pop(path, None)
        if x is not None:
            block(path).macs += x[0].numel() // module.in_features * module.out_features  # the decode's scale (vth)
        else:
            x = inputs[0]
        rows = x.numel() // module.in_features
        b = block(path)
        dense = rows * module.in_features * module.out_features
        b.dense_macs += dense
        coded = module.mode == "frozen"
        weight = module.codes if coded else module.weight
        b.macs += rows * module.out_features if coded else 0  # the scale
        if meta:
            nonzero_weights = 1 - ZERO_FRACTION if sign_adds else 1.0
        else:
            nonzero_weights = float(torch.count_nonzero(weight)) / weight.numel()
        if _is_spikes(x, spike_tensors, meta):
            active = firing_rate * x.numel() if meta else float(torch.count_nonzero(x))
            b.synops += active * module.out_features
            b.acs += active * module.out_features * nonzero_weights
            b.spiking_acs += active * module.out_features * nonzero_weights
            b.spike_input_macs += dense
            b.spike_inputs += x.numel()
            spike_linears.add(path)
            b.activation_bytes += x.numel() / 8
        else:
            if sign_adds:
                b.acs += dense * nonzero_weights
            else:
                b.macs += dense
            b.activation_bytes += x.numel() * FLOAT_BYTES

    return hook


def _is_spikes(x: torch.Tensor, spike_tensors: dict[int, torch.Tensor], meta: bool) -> bool:
    """Spikes: a LIF / encoder output, or (views lose identity) integer-valued in [-1, 1]."""
    if id(x) in spike_tensors:
        return True
    return not meta and bool(((x == 0) | (x == 1) | (x == -1)).all())


def _weights(frozen, reads: _Reads, block, counts: Counts, meta: bool, spike_linears: set[str]) -> None:
    """Bytes read per token and the stored footprint, per parameter as stored."""
    owned, constants = {}, set()
    for path, module in frozen.named_modules():
        prefix = f"{path}." if path else ""
        if isinstance(module, TernaryLinear):
            owned[prefix + ("codes" if module.mode == "frozen" else "weight")] = module
        elif isinstance(module, LIF):
            constants |= {prefix + name for name in module._non_persistent_buffers_set}
    for name, tensor in [*frozen.named_parameters(), *frozen.named_buffers()]:
        if name in constants:
            continue
        if name in owned:
            bits = counts.weight_bits * tensor.numel()
            counts.weights += tensor.numel()
            counts.zero_weights += tensor.numel() * (ZERO_FRACTION if counts.weight_bits == 2 else 0.0) if meta else float((tensor == 0).sum())
        else:
            bits = 8 * FLOAT_BYTES * tensor.numel()
        counts.footprint_bits += bits
        module_path = name.rsplit(".", 1)[0] if "." in name else ""
        if module_path in spike_linears:
            block(module_path).spike_weight_bytes += bits / 8
        if name in reads.whole:
            block(module_path).weight_bytes += bits / 8
        elif name in reads.rows:
            row_bits = bits / tensor.shape[0]
            block(module_path).weight_bytes += row_bits / 8 * reads.rows[name]
        elif name in owned or _reads_through_module(name):
            block(module_path).weight_bytes += bits / 8


def _reads_through_module(name: str) -> bool:
    """Ternary scales and biases reach their op through the custom op's arguments, also counted whole."""
    return name.endswith((".scale", ".bias"))


def _order(name: str) -> tuple:
    parts = name.split(".")
    rank = {"embed": 0, "head": 9}.get(parts[0], 1 if len(parts) > 1 else 8)
    return (rank, parts[0], int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0)
