"""NeuronChip: map the spiking layers of a decode step onto the cores of a neuromorphic chip.

A *chip layer* is an integer-coded linear whose input is spikes, found in the captured graph:

- plain: an ``edgespike::spike_linear`` (ternary, int4 or int8 codes, one scale per output) whose
  input is the output of a LIF (``edgespike::lif``) or of a spike encoder (``edgespike::spike_encode``),
  walked back through shape-only ops. Per timestep t the chip sums acc[j] = sum_i codes[j, i] * s_i[t];
  the sums go back to the host (y = acc * scale + bias) or drive a LIF on the same neurons.
- coded (SpikingBrain W8ASpike's QuantLinear): a linear whose input runs through its own encoder
  ``<linear>.spikes``, the bitwise-bidirectional coding x_int = sum_t 2^(T-1-t) * s[t], s in {-1, 0, +1},
  x ~ vth * x_int (vth per token, computed on the host). Its weights are 8-bit codes per group of
  ``group`` input columns with group scales, W = codes * s_g (or, with --weights int8 / int4 / ternary,
  per-row codes: one group). A neuron holds one compartment (dendritic accumulator) per group:

      acc_g[t] = sum_{i in g} codes[j, i] * s_i[t]                 integer, one synop per input spike
      A_g      = sum_t 2^(T-1-t) acc_g[t]  = 2 * A_g + acc_g[t]    an integer shift-add per timestep
      y_j      = vth * sum_g s_g * A_g + bias_j                    on the host, float (the scales are float)

  The shift-add runs on the chip when the worst case |A_g| <= group * max|code| * (2^T - 1) fits the
  membrane register (``membrane_bits``); otherwise the chip reads out every timestep's group sums and the
  host weights them (``time_weighting`` "host", T times the readout bits). Both are exact integers; only
  the scaling by s_g and vth is float, on the host, as the scales are arbitrary reals.

Synapses store each layer's codes at its own width: 2 bits ternary (packed), 4 int4, 8 int8 and
W8ASpike (stored as int8). A chip whose ``weight_bits`` is narrower refuses the layer: it runs on the
host and chip.json's host list says why and which setting maps it. Placement, per layer:

    neurons per core = min(chip.neurons_per_core // groups, synapses per core at the layer's width // fan_in)
    cores            = ceil(neurons / neurons per core), neurons split evenly over them

A LIF fed directly by a plain chip layer runs on those same neurons (fixed-point membrane, leak
by shift, Loihi style); its spikes travel over the mesh to the next chip layer. Everything
else runs on the host in float: embeddings, norms, attention, the LIFs and encoders that turn host
activations into spikes (their spikes cross the host link), linears fed by non-spikes.

Bundle: ``chip.json`` (chip, per-layer cores / neuron ranges / fan-in / fan-out / bytes / weight bits /
groups, host modules and why), ``chip_weights.safetensors`` (per core: codes, 2-bit packed when ternary,
else int8; scale [n] or group scales [n, G]; bias), ``host.safetensors`` (every other tensor of the
frozen model), plus the manifest.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from edgespike.capture import DecodeStep, export_step
from edgespike.chip import Chip, load_chip
from edgespike.errors import EdgespikeError
from edgespike.exporters.graph_walk import is_op, module_path, producer, spike_source
from edgespike.exporters.registry import ExportOptions, register_exporter, step_io
from edgespike.nn import LIF, RMSNorm, SpikeEncoder, TernaryLinear
from edgespike.quant import pack_ternary

log = logging.getLogger(__name__)

MAPPING_FILE = "chip.json"
CHIP_WEIGHTS = "chip_weights.safetensors"
HOST_WEIGHTS = "host.safetensors"
MAPPING_VERSION = 2  # 2: per-layer weight bits, weight groups, coded (bitwise) inputs
# Loihi's compartment decay constants are 12-bit: v -= (v * delta) >> 12 (Davies et al., IEEE Micro 2018)
DECAY_BITS = 12
MAX_FRAC_BITS = 16  # fractional bits of the membrane, at most (headroom decides, see lif_fixed_point)

@dataclass(frozen=True)
class CoreSlice:
    core: int  # core id on the chip
    start: int  # first neuron of the layer on this core
    stop: int  # one past the last

    @property
    def neurons(self) -> int:
        return self.stop - self.start


def _feeding_linear(lif_node):
    """The spike_linear node whose output is this LIF's input current unchanged, else None."""
    node = producer(lif_node.args[0])
    return node if is_op(node, "spike_linear") else None


@dataclass
class LayerSpec:
    """One chip layer before placement."""

    name: str  # module path of the linear
    fan_in: int  # synapses per neuron
    neurons: int  # output neurons
    source: str  # module path of the population whose spikes it reads
    source_layer: str | None = None  # the chip layer that population runs on; None: spikes come from the host
    signed: bool = False  # input spikes can be -1 (ternary / two's complement / bidirectional coding)
    lif: str | None = None  # module path of the LIF running on these neurons
    stage: int = 0  # layers of one stage read the same spikes and run at the same time
    bits: int = 2  # synapse width its codes need (signed)
    group: int | None = None  # input columns per weight group (one compartment each); None: fan_in
    timesteps: int = 0  # coded layers: the bitwise steps summed with weights 2^(T-1-t); 0: plain

    @property
    def groups(self) -> int:
        return self.fan_in // (self.group or self.fan_in)


def code_bits(codes: torch.Tensor) -> int:
    """Signed bits that hold every code (2 at least: a ternary synapse)."""
    return max(2, int(codes.abs().max()).bit_length() + 1) if codes.numel() else 2


def group_codes(linear: TernaryLinear) -> tuple[torch.Tensor, torch.Tensor, int] | None:
    """(codes[out, in] int, scales[out, G] float32, group) of a linear whose weights are integer codes
    times per-group scales: frozen codes (one group, the per-row scale) or a float weight rounded by a
    per-group ``weight_quantizer`` (W8ASpike: round(W / s_g) exactly as its GroupQuantizer computes it)."""
    out_features, in_features = linear.out_features, linear.in_features
    if linear.mode == "frozen":
        return linear.codes, linear.scale.float().expand(out_features)[:, None].clone(), in_features
    quantizer = getattr(linear, "weight_quantizer", None)
    if linear.mode != "float" or quantizer is None:
        return None
    grouped = linear.weight.float().reshape(out_features, -1, quantizer.group)  # as forward computes it (fp16 weights held in fp16)
    scales = quantizer.scales.to(grouped.dtype)
    codes = torch.round(grouped / scales).reshape(out_features, in_features)
    return codes.to(torch.int64), scales[..., 0].float().clone(), quantizer.group


def _coded_linear(model: nn.Module, encoder_path: str) -> TernaryLinear | None:
    """The linear whose own encoder (``<linear>.spikes``) is ``encoder_path``, if its weights are group codes."""
    parent, _, leaf = encoder_path.rpartition(".")
    if leaf != "spikes":
        return None
    linear = model.get_submodule(parent)
    if not isinstance(linear, TernaryLinear) or getattr(linear, "spikes", None) is not model.get_submodule(encoder_path):
        return None
    return linear if group_codes(linear) is not None else None


def find_chip_layers(step: DecodeStep) -> list[LayerSpec]:
    """The chip layers of a decode step, in execution order, from its captured graph: spike_linears
    fed by spikes (integer codes: --weights ternary / int4 / int8) and coded linears (W8ASpike)."""
    graph = export_step(step).graph
    model = step.model
    layers: dict[str, LayerSpec] = {}
    stage_of: dict[str, int] = {}
    for node in graph.nodes:
        if is_op(node, "spike_encode"):
            source_path = module_path(node)
            linear = _coded_linear(model, source_path)
            name = source_path.rpartition(".")[0]
            if linear is None or name in layers or node.args[2] != "bitwise":
                continue
            codes, _, group = group_codes(linear)
            stage = stage_of.setdefault(source_path, len(stage_of))
            bits = code_bits(codes) if linear.mode == "frozen" else max(8, code_bits(codes))  # W8ASpike's codes: int8
            layers[name] = LayerSpec(name, linear.in_features, linear.out_features, source_path, signed=True, stage=stage,
                                     bits=bits, group=group, timesteps=int(node.args[1]))
            continue
        if not is_op(node, "spike_linear"):
            continue
        source = spike_source(node.args[0])
        name = module_path(node)
        if source is None or name in layers:
            continue
        source_path = module_path(source)
        if is_op(source, "lif") and _graded(model.get_submodule(source_path)):
            continue  # graded spikes are not binary events: a float matmul on the host
        signed = is_op(source, "spike_encode") and (source.args[2] == "ternary" or bool(source.args[3:] and source.args[3]))
        linear = model.get_submodule(name)
        stage = stage_of.setdefault(source_path, len(stage_of))
        layers[name] = LayerSpec(name, linear.in_features, linear.out_features, source_path, signed=signed, stage=stage,
                                 bits=code_bits(linear.codes))
    for node in graph.nodes:
        if is_op(node, "lif"):
            feeding = _feeding_linear(node)
            path = module_path(node)
            if feeding is not None and module_path(feeding) in layers and not chip_lif_refusal(model.get_submodule(path)):
                layers[module_path(feeding)].lif = path
    link_sources(list(layers.values()))
    return list(layers.values())


def link_sources(layers: list[LayerSpec]) -> None:
    """Point each layer at the chip layer whose LIF spikes it reads (None: they come from the host)."""
    population_layer = {spec.lif: spec for spec in layers if spec.lif}
    for spec in layers:
        upstream = population_layer.get(spec.source)
        spec.source_layer = upstream.name if upstream is not None and upstream.neurons == spec.fan_in else None


def weight_refusal(spec: LayerSpec, chip: Chip) -> str | None:
    """Why ``chip`` cannot hold the layer's synapses (it then runs on the host), else None."""
    if spec.bits <= chip.weight_bits:
        return None
    return (f"{spec.bits}-bit weight codes: chip {chip.name} stores synaptic weights of at most {chip.weight_bits} bits; "
            f"set weight_bits >= {spec.bits} in the chip file (e.g. --chip loihi) to map it")


def neurons_per_core(chip: Chip, spec: LayerSpec) -> int:
    return min(chip.neurons_per_core // spec.groups, chip.synapses_per_core(spec.bits) // spec.fan_in)


def cores_needed(layers: list[LayerSpec], chip: Chip) -> int:
    """Cores the layers take on ``chip``; raises when one neuron's synapses or compartments overflow a core."""
    total = 0
    for spec in layers:
        per_core = neurons_per_core(chip, spec)
        if per_core == 0:
            need = row_bytes(spec.fan_in, spec.bits)
            if spec.groups > chip.neurons_per_core:
                raise EdgespikeError(
                    f"layer {spec.name} has {spec.groups} weight groups, one compartment each: more than a core's "
                    f"{chip.neurons_per_core} neurons on chip {chip.name}; set neurons_per_core >= {spec.groups} in the chip file"
                )
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
        count = math.ceil(spec.neurons / neurons_per_core(chip, spec))
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


def row_bytes(fan_in: int, bits: int) -> int:
    """Synapse memory of one neuron's fan-in at ``bits`` per weight."""
    return math.ceil(fan_in * bits / 8)


def time_weighting(spec: LayerSpec, max_code: int, chip: Chip) -> str:
    """Where a coded layer weights its T steps: on the chip when the shift-add's worst case fits the
    membrane register, else on the host (every step's group sums read out)."""
    return "chip" if (spec.group or spec.fan_in) * max_code * ((1 << spec.timesteps) - 1) <= chip.membrane_limit else "host"


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


def lif_fixed_point(path: str, lif: LIF, chip: Chip, scale: torch.Tensor, bias: torch.Tensor | None, drive: int) -> dict:
    """Fixed-point parameters of a LIF on chip (scalar beta, clamped to [0, 1] as the op does,
    and threshold). The membrane counts units of scale / 2^F (per neuron), so the integer
    accumulation (|acc| <= ``drive`` = fan_in * max|code|) enters exactly as acc << F; F is as large
    as the membrane width allows with 2x headroom over the threshold plus one timestep's full input
    and over the leaky sum of full negative inputs (values beyond saturate)."""
    beta, threshold = min(max(float(lif.beta), 0.0), 1.0), float(lif.threshold)
    threshold_units = (threshold / scale).abs().max().item()
    drive = drive + (0.0 if bias is None else (bias / scale).abs().max().item())
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


def _host_reason(module: nn.Module, path: str, chip_lifs: set[str], chip_sources: set[str], weights: str) -> str | None:
    if isinstance(module, LIF):
        if path in chip_lifs:
            return None
        return chip_lif_refusal(module) or "LIF fed by host activations; its spikes cross the host link"
    if isinstance(module, SpikeEncoder):
        if path in chip_sources:
            return "encodes host activations into spikes; they cross the host link"
        return "encodes activations into spikes that host compute reads (no chip layer)"
    if isinstance(module, TernaryLinear) and module.mode != "frozen":
        return f"{weights} float weights: the chip's synapses hold integer codes (--weights ternary / int4 / int8)"
    if isinstance(module, TernaryLinear):
        return "input is not spikes (float activations): a float matmul"
    if isinstance(module, nn.Embedding):
        return "table lookup"
    if isinstance(module, RMSNorm):
        return "normalization (float)"
    if any(True for _ in module.parameters(recurse=False)) or any(True for _ in module.buffers(recurse=False)):
        return "float compute (no spiking integer synapses)"
    return None


def _layer_weights(linear: TernaryLinear, spec: LayerSpec) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """(codes[n, fan_in] int8, scale [n] (plain) or [n, G] (coded), the linear's state keys the chip holds)."""
    if spec.timesteps:
        codes, scales, _ = group_codes(linear)
        held = ["codes", "scale"] if linear.mode == "frozen" else ["weight", "weight_quantizer.scales"]
        return codes.to(torch.int8), scales, held
    return linear.codes, linear.scale.expand(spec.neurons).float(), ["codes", "scale"]


def _host_entry(path: str, module: nn.Module, reason: str) -> dict:
    tensors = list(module.parameters(recurse=False)) + list(module.buffers(recurse=False))
    return {"module": path, "type": type(module).__name__, "reason": reason, "bytes": sum(t.numel() * t.element_size() for t in tensors)}


def build_bundle(step: DecodeStep, chip: Chip, staging: Path) -> dict:
    """Place ``step`` on ``chip`` and write the bundle files into ``staging``; returns the mapping."""
    model = step.model
    found = find_chip_layers(step)
    refused = {spec.name: reason for spec in found if (reason := weight_refusal(spec, chip))}
    layers = [spec for spec in found if spec.name not in refused]
    for spec in layers:  # a refused layer's LIF runs on the host: its spikes come over the link
        if spec.source_layer in refused:
            spec.source_layer = None
    placement = place(layers, chip)
    chip_tensors: dict[str, torch.Tensor] = {}
    chip_keys: set[str] = set()
    records = []
    consumers: dict[str, list[LayerSpec]] = {}
    for spec in layers:
        if spec.source_layer:
            consumers.setdefault(spec.source_layer, []).append(spec)
    for spec in layers:
        linear: TernaryLinear = model.get_submodule(spec.name)
        codes, scale, held = _layer_weights(linear, spec)
        bias = None if linear.bias is None else linear.bias.detach().float()
        chip_keys.update(f"{spec.name}.{key}" for key in held + (["bias"] if bias is not None else []))
        max_code = max(1, int(codes.abs().max()))
        cores = []
        for piece in placement[spec.name]:
            rows = codes[piece.start : piece.stop]
            key = f"{spec.name}.core{piece.core}"
            chip_tensors[f"{key}.codes"] = pack_ternary(rows).contiguous() if spec.bits == 2 else rows.contiguous()
            chip_tensors[f"{key}.scale"] = scale[piece.start : piece.stop].contiguous()
            if bias is not None:
                chip_tensors[f"{key}.bias"] = bias[piece.start : piece.stop].contiguous()
            cores.append({"core": piece.core, "neurons": [piece.start, piece.stop],
                          "synapse_bytes": piece.neurons * row_bytes(spec.fan_in, spec.bits)})
        lif = None
        if spec.lif:
            lif = lif_fixed_point(spec.lif, model.get_submodule(spec.lif), chip, scale, bias, spec.fan_in * max_code)
        fan_out = sum(c.neurons for c in consumers.get(spec.name, []))
        coded = None
        if spec.timesteps:
            coded = {"coding": "bitwise-bidirectional", "timesteps": spec.timesteps, "module": spec.source,
                     "time_weighting": time_weighting(spec, max_code, chip), "scaling": "host: y = vth * sum_g s_g * A_g + bias"}
        records.append({
            "name": spec.name, "stage": spec.stage, "fan_in": spec.fan_in, "neurons": spec.neurons,
            "fan_out": fan_out, "source": spec.source, "source_layer": spec.source_layer, "signed_input": spec.signed,
            "weight_bits": spec.bits, "max_code": max_code, "group_size": spec.group or spec.fan_in, "groups": spec.groups,
            "compartments": spec.neurons * spec.groups, "coded_input": coded,
            "readout": lif is None, "lif": lif, "has_bias": bias is not None, "cores": cores,
            "synapse_bytes": sum(c["synapse_bytes"] for c in cores),
        })  # fmt: skip
    chip_lifs = {spec.lif for spec in layers if spec.lif}
    chip_sources = {spec.source for spec in layers if spec.source_layer is None}
    chip_names = {spec.name for spec in layers}
    host = [_host_entry(name, model.get_submodule(name), reason) for name, reason in refused.items()]
    inside = tuple(f"{name}." for name in chip_names)  # a chip layer's own parts (its quantizer's scales)
    for path, module in model.named_modules():
        if path in chip_names or path in refused or (path.startswith(inside) and not isinstance(module, SpikeEncoder)):
            continue
        reason = _host_reason(module, path, chip_lifs, chip_sources, step.weights)
        if reason:
            host.append(_host_entry(path, module, reason))
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
            "chip_compartments": sum(r["compartments"] for r in records),
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
    stored_weight_bits = None
    prefill_tokens = 0  # a chip steps its cores in time: no prefill entry

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
