"""NeuronChip: map the spiking layers of a decode step onto the cores of a neuromorphic chip.

A *chip layer* is a ternary linear (``edgespike::spike_linear``) whose input is spikes, the
output of a LIF (``edgespike::lif``) or of a spike encoder (``edgespike::spike_encode``), found
by walking the captured graph back through shape-only ops. Its output neurons go on cores:

    neurons per core = min(chip.neurons_per_core, chip.synapses_per_core // fan_in)
    cores            = ceil(neurons / neurons per core), neurons split evenly over them

A LIF fed directly by a chip layer runs on those same neurons (fixed-point membrane, leak
by shift, Loihi style); its spikes travel over the mesh to the next chip layer. Everything
else runs on the host in float: embeddings, norms, attention, the LIFs that turn host
activations into spikes (their spikes cross the host link), linears fed by non-spikes.

Bundle: ``chip.json`` (chip, per-layer cores / neuron ranges / fan-in / fan-out / bytes,
host modules and why), ``chip_weights.safetensors`` (per core: 2-bit packed codes, scale,
bias), ``host.safetensors`` (every other tensor of the frozen model), plus the manifest.
"""

from __future__ import annotations

import json
import logging
import math
import operator
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from edgespike.capture import DecodeStep, export_step
from edgespike.chip import Chip, load_chip
from edgespike.errors import EdgespikeError
from edgespike.exporters.registry import ExportOptions, register_exporter, step_io
from edgespike.nn import LIF, RMSNorm, SpikeEncoder, TernaryLinear
from edgespike.quant import pack_ternary

log = logging.getLogger(__name__)

MAPPING_FILE = "chip.json"
CHIP_WEIGHTS = "chip_weights.safetensors"
HOST_WEIGHTS = "host.safetensors"
MAPPING_VERSION = 1
# Loihi's compartment decay constants are 12-bit: v -= (v * delta) >> 12 (Davies et al., IEEE Micro 2018)
DECAY_BITS = 12
MAX_FRAC_BITS = 16  # fractional bits of the membrane, at most (headroom decides, see lif_fixed_point)

# ops that move or select spikes without changing their values
SHAPE_OPS = {
    "view", "reshape", "_unsafe_view", "slice", "select", "transpose", "permute", "unsqueeze", "squeeze",
    "expand", "clone", "contiguous", "alias", "detach", "_to_copy", "to", "unflatten", "flatten",
}  # fmt: skip
SPLIT_OPS = {"chunk", "split", "split_with_sizes", "unbind"}


@dataclass(frozen=True)
class CoreSlice:
    core: int  # core id on the chip
    start: int  # first neuron of the layer on this core
    stop: int  # one past the last

    @property
    def neurons(self) -> int:
        return self.stop - self.start


def _op_name(node) -> str:
    return getattr(node.target, "__name__", str(node.target)).split(".")[0]


def _is_op(node, name: str) -> bool:
    return node.op == "call_function" and str(node.target).startswith(f"edgespike.{name}.")


def _module_path(node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    path = list(stack.values())[-1][0] if stack else ""
    return path.removeprefix("model.")


def spike_source(node):
    """The lif / spike_encode node whose spikes ``node`` carries unchanged, else None."""
    while node.op == "call_function":
        if node.target is operator.getitem:
            parent, index = node.args
            if _is_op(parent, "lif"):
                return parent if index == 0 else None  # output 1 is the membrane
            if parent.op == "call_function" and _op_name(parent) in SPLIT_OPS:
                node = parent.args[0]
                continue
            return None
        if _is_op(node, "spike_encode"):
            return node
        name = _op_name(node)
        if name in ("cat", "stack"):
            sources = [spike_source(x) for x in node.args[0]]
            if not sources or None in sources or len({_module_path(s) for s in sources}) != 1:
                return None
            return sources[0]
        if name not in SHAPE_OPS:
            return None
        node = node.args[0]
    return None


def _feeding_linear(lif_node):
    """The spike_linear node whose output is this LIF's input current unchanged, else None."""
    node = lif_node.args[0]
    while node.op == "call_function" and _op_name(node) in SHAPE_OPS:
        node = node.args[0]
    return node if _is_op(node, "spike_linear") else None


@dataclass
class LayerSpec:
    """One chip layer before placement."""

    name: str  # module path of the TernaryLinear
    fan_in: int  # synapses per neuron
    neurons: int  # output neurons
    source: str  # module path of the population whose spikes it reads
    source_layer: str | None = None  # the chip layer that population runs on; None: spikes come from the host
    signed: bool = False  # input spikes can be -1 (ternary / two's complement coding)
    lif: str | None = None  # module path of the LIF running on these neurons
    stage: int = 0  # layers of one stage read the same spikes and run at the same time


def find_chip_layers(step: DecodeStep) -> list[LayerSpec]:
    """The chip layers of a decode step, in execution order, from its captured graph (none
    unless the weights are ternary: the chip's synapses hold 2-bit ternary codes)."""
    if step.weights != "ternary":
        return []
    graph = export_step(step).graph
    layers: dict[str, LayerSpec] = {}
    stage_of: dict[str, int] = {}
    for node in graph.nodes:
        if not _is_op(node, "spike_linear"):
            continue
        source = spike_source(node.args[0])
        name = _module_path(node)
        if source is None or name in layers:
            continue
        source_path = _module_path(source)
        if _is_op(source, "lif") and _graded(step.model.get_submodule(source_path)):
            continue  # graded spikes are not binary events: a float matmul on the host
        signed = _is_op(source, "spike_encode") and (source.args[2] == "ternary" or bool(source.args[3:] and source.args[3]))
        linear = step.model.get_submodule(name)
        stage = stage_of.setdefault(source_path, len(stage_of))
        layers[name] = LayerSpec(name, linear.in_features, linear.out_features, source_path, signed=signed, stage=stage)
    for node in graph.nodes:
        if _is_op(node, "lif"):
            feeding = _feeding_linear(node)
            path = _module_path(node)
            if feeding is not None and _module_path(feeding) in layers and not chip_lif_refusal(step.model.get_submodule(path)):
                layers[_module_path(feeding)].lif = path
    population_layer = {spec.lif: spec for spec in layers.values() if spec.lif}
    for spec in layers.values():
        upstream = population_layer.get(spec.source)
        if upstream is not None and upstream.neurons == spec.fan_in:
            spec.source_layer = upstream.name
    return list(layers.values())


def neurons_per_core(chip: Chip, fan_in: int) -> int:
    return min(chip.neurons_per_core, chip.synapses_per_core // fan_in)


def cores_needed(layers: list[LayerSpec], chip: Chip) -> int:
    """Cores the layers take on ``chip``; raises when one neuron's synapses overflow a core."""
    total = 0
    for spec in layers:
        per_core = neurons_per_core(chip, spec.fan_in)
        if per_core == 0:
            need = math.ceil(spec.fan_in * chip.weight_bits / 8)
            raise EdgespikeError(
                f"layer {spec.name} has fan-in {spec.fan_in}: one neuron's synapses ({need} bytes) exceed a core's "
                f"synapse memory ({chip.synapse_bytes_per_core} bytes) on chip {chip.name}; "
                f"set synapse_bytes_per_core >= {need} in the chip file"
            )
        total += math.ceil(spec.neurons / per_core)
    return total


def place(layers: list[LayerSpec], chip: Chip) -> dict[str, list[CoreSlice]]:
    """Cores of each layer, layers in order on consecutive cores, neurons split evenly.
    Raises, saying by how much and which setting would fit, when the chip is too small."""
    needed = cores_needed(layers, chip)
    if needed > chip.cores:
        raise EdgespikeError(f"the model does not fit chip {chip.name}: {_fit_advice(layers, chip, needed)}")
    placement: dict[str, list[CoreSlice]] = {}
    core = 0
    for spec in layers:
        count = math.ceil(spec.neurons / neurons_per_core(chip, spec.fan_in))
        share, extra = divmod(spec.neurons, count)
        slices, start = [], 0
        for i in range(count):
            stop = start + share + (i < extra)
            slices.append(CoreSlice(core, start, stop))
            core, start = core + 1, stop
        placement[spec.name] = slices
    return placement


def _fit_advice(layers: list[LayerSpec], chip: Chip, needed: int) -> str:
    advice = f"it needs {needed} cores, the chip has {chip.cores} ({needed - chip.cores} short); set cores >= {needed}"
    for factor in range(2, 1025):
        bigger = chip.replace(neurons_per_core=chip.neurons_per_core * factor,
                              synapse_bytes_per_core=chip.synapse_bytes_per_core * factor)
        if cores_needed(layers, bigger) <= chip.cores:
            return (f"{advice}, or grow each core {factor}x (neurons_per_core >= {bigger.neurons_per_core}, "
                    f"synapse_bytes_per_core >= {bigger.synapse_bytes_per_core}) in the chip file")
    return f"{advice} in the chip file"


def row_bytes(chip: Chip, fan_in: int) -> int:
    """Synapse memory of one neuron's fan-in at the chip's weight precision."""
    return math.ceil(fan_in * chip.weight_bits / 8)


def _graded(lif: LIF) -> bool:
    return lif.graded_spikes_factor.numel() != 1 or float(lif.graded_spikes_factor) != 1.0


def chip_lif_refusal(lif: LIF) -> str | None:
    """Why the chip's fixed-point neurons cannot run ``lif`` (it stays on the host), else None:
    they fire binary spikes and share one decay and one threshold per layer."""
    if _graded(lif):
        return "graded spikes (graded_spikes_factor != 1): the chip's spikes are binary events"
    for name in ("beta", "threshold"):
        if getattr(lif, name).numel() != 1:
            return f"per-neuron {name}: the chip's neurons share one {name} per layer"
    return None


def lif_fixed_point(path: str, lif: LIF, chip: Chip, scale: torch.Tensor, bias: torch.Tensor | None, fan_in: int) -> dict:
    """Fixed-point parameters of a LIF on chip (scalar beta, clamped to [0, 1] as the op does,
    and threshold). The membrane counts units of scale / 2^F (per neuron), so the ternary
    accumulation enters exactly as acc << F; F is as large as the membrane width allows with 2x
    headroom over the threshold plus one timestep's full input and over the leaky sum of full
    negative inputs (values beyond saturate)."""
    beta, threshold = min(max(float(lif.beta), 0.0), 1.0), float(lif.threshold)
    threshold_units = (threshold / scale).abs().max().item()
    drive = fan_in + (0.0 if bias is None else (bias / scale).abs().max().item())
    headroom = 2 * max(threshold_units + drive, drive * min(1.0 / max(1.0 - beta, 1e-9), 64.0))
    frac_bits = max(0, min(MAX_FRAC_BITS, chip.membrane_bits - 2 - math.ceil(math.log2(headroom))))
    decay = round((1.0 - beta) * (1 << DECAY_BITS))
    return {
        "module": path,
        "beta": beta,
        "threshold": threshold,
        "reset": lif.reset,
        "delayed_reset": lif.delayed_reset,
        "strict": lif.strict,
        "frac_bits": frac_bits,
        "decay": decay,
        "decay_bits": DECAY_BITS,
        "beta_effective": 1.0 - decay / (1 << DECAY_BITS),
    }


def _host_reason(module: nn.Module, path: str, chip_lifs: set[str], weights: str) -> str | None:
    if isinstance(module, LIF):
        if path in chip_lifs:
            return None
        return chip_lif_refusal(module) or "LIF fed by host activations; its spikes cross the host link"
    if isinstance(module, SpikeEncoder):
        return "encodes host activations into spikes; they cross the host link"
    if isinstance(module, TernaryLinear) and weights != "ternary":
        return f"{weights} weights: the chip's synapses hold ternary codes (export with --weights ternary to map it)"
    if isinstance(module, TernaryLinear):
        return "input is not spikes (float activations): a float matmul"
    if isinstance(module, nn.Embedding):
        return "table lookup"
    if isinstance(module, RMSNorm):
        return "normalization (float)"
    if any(True for _ in module.parameters(recurse=False)) or any(True for _ in module.buffers(recurse=False)):
        return "float compute (no spiking ternary synapses)"
    return None


def build_bundle(step: DecodeStep, chip: Chip, staging: Path) -> dict:
    """Place ``step`` on ``chip`` and write the bundle files into ``staging``; returns the mapping."""
    if chip.weight_bits != 2:
        log.info("neuronchip: chip %s stores %d-bit weights; ternary codes are kept as int8", chip.name, chip.weight_bits)
    layers = find_chip_layers(step)
    placement = place(layers, chip)
    model = step.model
    chip_tensors: dict[str, torch.Tensor] = {}
    chip_keys: set[str] = set()
    records = []
    consumers: dict[str, list[LayerSpec]] = {}
    for spec in layers:
        if spec.source_layer:
            consumers.setdefault(spec.source_layer, []).append(spec)
    for spec in layers:
        linear: TernaryLinear = model.get_submodule(spec.name)
        codes = linear.codes  # [out, in] int8
        scale = linear.scale.expand(spec.neurons).float()
        bias = None if linear.bias is None else linear.bias.detach().float()
        chip_keys.update(f"{spec.name}.{key}" for key in ("codes", "scale", "bias") if getattr(linear, key, None) is not None)
        cores = []
        for piece in placement[spec.name]:
            rows = codes[piece.start : piece.stop]
            key = f"{spec.name}.core{piece.core}"
            chip_tensors[f"{key}.codes"] = pack_ternary(rows).contiguous() if chip.weight_bits == 2 else rows.contiguous()
            chip_tensors[f"{key}.scale"] = scale[piece.start : piece.stop].contiguous()
            if bias is not None:
                chip_tensors[f"{key}.bias"] = bias[piece.start : piece.stop].contiguous()
            cores.append({"core": piece.core, "neurons": [piece.start, piece.stop],
                          "synapse_bytes": piece.neurons * row_bytes(chip, spec.fan_in)})
        lif = None
        if spec.lif:
            lif = lif_fixed_point(spec.lif, model.get_submodule(spec.lif), chip, scale, bias, spec.fan_in)
        fan_out = sum(c.neurons for c in consumers.get(spec.name, []))
        records.append({
            "name": spec.name, "stage": spec.stage, "fan_in": spec.fan_in, "neurons": spec.neurons,
            "fan_out": fan_out, "source": spec.source, "source_layer": spec.source_layer, "signed_input": spec.signed,
            "readout": lif is None, "lif": lif, "has_bias": bias is not None, "cores": cores,
            "synapse_bytes": sum(c["synapse_bytes"] for c in cores),
        })  # fmt: skip
    chip_lifs = {spec.lif for spec in layers if spec.lif}
    chip_names = {spec.name for spec in layers}
    host = []
    for path, module in model.named_modules():
        if path in chip_names:
            continue
        reason = _host_reason(module, path, chip_lifs, step.weights)
        if reason:
            params = sum(t.numel() * t.element_size() for t in list(module.parameters(recurse=False)) + list(module.buffers(recurse=False)))
            host.append({"module": path, "type": type(module).__name__, "reason": reason, "bytes": params})
    host_tensors = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items() if k not in chip_keys}
    save_file(chip_tensors, str(staging / CHIP_WEIGHTS))
    save_file(host_tensors, str(staging / HOST_WEIGHTS))
    used = sum(len(r["cores"]) for r in records)
    mapping = {
        "format_version": MAPPING_VERSION,
        "chip": chip.to_dict(),
        "layers": records,
        "host": host,
        "summary": {
            "cores_used": used,
            "cores": chip.cores,
            "chip_neurons": sum(r["neurons"] for r in records),
            "chip_synapses": sum(r["neurons"] * r["fan_in"] for r in records),
            "synapse_bytes": sum(r["synapse_bytes"] for r in records),
            "host_modules": len(host),
        },
    }
    (staging / MAPPING_FILE).write_text(json.dumps(mapping, indent=2) + "\n")
    log.info("neuronchip: %d chip layers on %d/%d cores of %s; %d host modules",
             len(records), used, chip.cores, chip.name, len(host))
    return mapping


class NeuronChipExporter:
    name = "neuronchip"
    model_file = MAPPING_FILE
    runtime = "neuronchip"
    default_precision = "fp32"

    def lower(self, step: DecodeStep, options: ExportOptions, staging: Path) -> dict:
        if options.precision != "fp32":
            raise ValueError(f"neuronchip: the host part runs in fp32; precision {options.precision!r} is not supported")
        if step.batch != 1:
            raise ValueError(f"neuronchip: the simulator runs batch 1, got batch {step.batch}")
        chip = load_chip(getattr(options, "chip", None) or "loihi")
        mapping = build_bundle(step, chip, staging)
        return {
            **step_io(step),
            "chip": chip.name,
            "chip_layers": len(mapping["layers"]),
            **{key: mapping["summary"][key] for key in ("cores_used", "chip_neurons", "host_modules")},
        }


register_exporter(NeuronChipExporter())
