"""A NeuronChip bundle as a runtime session: the chip layers simulated (``simulator``), the host
part run in float PyTorch, rebuilt from the manifest's config and the bundle's weights.

The model is the family's own code (so the host part computes what eager computes); the
modules the mapping puts on the chip have their forward replaced by the simulator: chip
linears by event-driven integer accumulation, chip LIFs by the fixed-point membrane (kept
as integers between tokens, in the session). A coded linear (W8ASpike) runs its own encoder on
the host (x -> signed bitwise spikes, vth), the chip's per-group integer sums weighted over the
steps, and the host's y = vth * sum_g s_g * A_g + bias. After each ``step``:

    stats        the token's cycles, latency (total and per model block), energy with its
                 breakdown, spikes on the mesh and over the host link, core utilization
    last_spikes  the spikes of every LIF call, in call order, shaped as edgespike.nn.LIF returns them
"""

from __future__ import annotations

import json
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from edgespike.capture import DecodeStep
from edgespike.chip import Chip
from edgespike.errors import EdgespikeError
from edgespike.models import build, get_family
from edgespike.nn import LIF
from edgespike.quant import unpack_ternary
from edgespike.quant.weights import quantize_weights
from edgespike.runtimes.neuronchip.simulator import ChipLayer, LayerSim, Ledger, LifParams
from edgespike.runtimes.registry import check_token

MAPPING_VERSION = 2
CHIP_WEIGHTS = "chip_weights.safetensors"
HOST_WEIGHTS = "host.safetensors"


def _block(name: str) -> str:
    """The model block a module belongs to: "layers.3.mlp.up" -> "layers.3", "readout.x" -> "readout"."""
    parts = name.split(".")
    return ".".join(parts[:2]) if parts[0] == "layers" and len(parts) > 1 else parts[0]


def _load(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise EdgespikeError(f"{path} is not a readable safetensors file: {err}; export the bundle again") from None


def chip_layers(mapping: dict, tensors: dict[str, torch.Tensor]) -> list[ChipLayer]:
    """The mapping's layers with their weights gathered back from the per-core tensors."""
    placed = {record["name"]: record for record in mapping["layers"]}
    layers = []
    for record in mapping["layers"]:
        codes, scales, biases = [], [], []
        for core in record["cores"]:
            key = f"{record['name']}.core{core['core']}"
            stored = tensors[f"{key}.codes"]
            codes.append(unpack_ternary(stored, record["fan_in"]) if record["weight_bits"] == 2 else stored)
            scales.append(tensors[f"{key}.scale"])
            if record["has_bias"]:
                biases.append(tensors[f"{key}.bias"])
        as_slices = lambda r: [(c["core"], *c["neurons"]) for c in r["cores"]]  # noqa: E731
        source = placed.get(record["source_layer"]) if record["source_layer"] else None
        coded = record["coded_input"] or {}
        layers.append(ChipLayer(
            name=record["name"], stage=record["stage"], codes=torch.cat(codes).numpy(),
            scale=torch.cat(scales).numpy(), bias=torch.cat(biases).numpy() if biases else None,
            cores=as_slices(record), source_cores=as_slices(source) if source else None,
            signed_input=record["signed_input"], lif=LifParams.from_dict(record["lif"]) if record["lif"] else None,
            block=_block(record["name"]), group_size=record["group_size"], timesteps=coded.get("timesteps", 0),
            time_weighting=coded.get("time_weighting", "chip"),
        ))  # fmt: skip
    return layers


def _linear_state(layer: ChipLayer, linear: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The host model's state of a chip linear, rebuilt from the chip's tensors (its forward is replaced;
    the state keeps the model loadable): frozen codes + scale, or a float weight codes x group scales."""
    codes, scale = torch.from_numpy(layer.codes), torch.from_numpy(layer.scale)
    state = {} if layer.bias is None else {f"{layer.name}.bias": torch.from_numpy(layer.bias)}
    if linear.mode == "frozen":
        return state | {f"{layer.name}.codes": codes, f"{layer.name}.scale": scale.reshape(-1)[: linear.scale.numel()].clone()}
    grouped = codes.reshape(layer.neurons, layer.groups, -1).float() * scale[..., None]
    return state | {f"{layer.name}.weight": grouped.reshape(layer.neurons, layer.fan_in),
                    f"{layer.name}.weight_quantizer.scales": scale[..., None].clone()}


class NeuronChipSession:
    def __init__(self, directory: Path, manifest: dict):
        self.manifest = manifest
        mapping = json.loads((directory / manifest["model_file"]).read_text())
        if mapping.get("format_version") != MAPPING_VERSION:
            raise EdgespikeError(f"{directory}: chip mapping format {mapping.get('format_version')} is not "
                                 f"{MAPPING_VERSION}; export the bundle again with this edgespike")
        self.mapping = mapping
        self.chip = Chip.from_dict(mapping["chip"])
        chip_tensors = _load(directory / CHIP_WEIGHTS)
        self.layers = chip_layers(mapping, chip_tensors)
        config = get_family(manifest["config"]["family"]).model_class.config_class.from_dict(manifest["config"])
        model = quantize_weights(build(config), manifest.get("weights", "ternary")).eval()
        state = _load(directory / HOST_WEIGHTS)
        for layer in self.layers:
            state.update(_linear_state(layer, model.get_submodule(layer.name)))
        model.load_state_dict(state)
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        self.step_module = DecodeStep(model, weights=manifest.get("weights", "ternary")).eval()
        self.sims = {layer.name: LayerSim(layer, self.chip) for layer in self.layers}
        for layer in self.layers:
            linear = model.get_submodule(layer.name)
            sim = self.sims[layer.name]
            linear.forward = partial(self._coded, sim, linear.spikes) if layer.timesteps else partial(self._linear, sim)
            if layer.lif is not None:
                lif_path = next(r["lif"]["module"] for r in mapping["layers"] if r["name"] == layer.name)
                model.get_submodule(lif_path).forward = partial(self._lif, self.sims[layer.name])
        for module in model.modules():
            if isinstance(module, LIF):
                module.register_forward_hook(lambda _m, _i, out: self.last_spikes.append(out[0].numpy().copy()))
        summary = mapping["summary"]
        self.runtime = (f"NeuronChip simulator ({self.chip.name}, {summary['cores_used']}/{self.chip.cores} cores, "
                        f"{self.chip.membrane_bits}-bit fixed-point membranes)")
        self.last_spikes: list[np.ndarray] = []
        self.stats: dict = {}
        self._membranes: dict[str, np.ndarray] = {}  # chip LIF membranes, integer, across tokens
        self._pending: dict[str, np.ndarray] = {}  # a chip LIF layer's sums, from its linear to its LIF
        self._ledger = Ledger(self.chip)
        self._sim_s = 0.0

    def reset(self) -> None:
        self.step_module.reset()
        self._membranes.clear()

    @torch.no_grad()
    def set_state(self, values: dict[str, np.ndarray]) -> None:
        """Overwrite the carried state (by the manifest's state names); each chip LIF's integer
        membrane becomes its given one in membrane units, rounded (``_lif``)."""
        for spec in self.step_module.specs:
            getattr(self.step_module, spec.buffer).copy_(torch.from_numpy(np.asarray(values[spec.name])))
        self._membranes.clear()

    @torch.no_grad()
    def step(self, token: int) -> np.ndarray:
        check_token(token, self.manifest["vocab_size"])
        self.last_spikes, self._ledger, self._sim_s = [], Ledger(self.chip), 0.0
        start = time.perf_counter()
        logits = self.step_module.advance(token)[0].numpy()
        wall = time.perf_counter() - start
        stats = self._ledger.stats()
        summary = self.mapping["summary"]
        stats.update({
            "cores_used": summary["cores_used"],
            "cores": self.chip.cores,
            "core_neuron_fill": summary["chip_compartments"] / max(1, summary["cores_used"] * self.chip.neurons_per_core),
            "max_layer_latency_s": max(stats["layer_latency_s"].values(), default=0.0),
            "host_compute_s": wall - self._sim_s,  # measured on this machine: the float host part
            "simulator_s": self._sim_s,
        })  # fmt: skip
        self.stats = stats
        return logits

    def _linear(self, sim: LayerSim, x: torch.Tensor) -> torch.Tensor:
        start = time.perf_counter()
        layer = sim.layer
        rows = x.shape[0]
        spikes = x.detach().reshape(rows, -1, layer.fan_in).numpy()
        new_stage = self._ledger.open(layer, (layer.stage,), rows)
        acc = sim.accumulate(spikes, self._ledger, new_stage)
        if layer.lif is not None:
            self._pending[layer.name] = acc
        out = torch.from_numpy(sim.readout(acc)).reshape(*x.shape[:-1], layer.neurons)
        self._sim_s += time.perf_counter() - start
        return out

    def _coded(self, sim: LayerSim, encoder, x: torch.Tensor) -> torch.Tensor:
        """A coded linear: the host encodes x (the model's own encoder), the chip sums, the host scales."""
        spikes, vth = encoder(x)  # [T, ..., fan_in] in {-1, 0, 1}, [..., 1]
        start = time.perf_counter()
        layer = sim.layer
        steps = spikes.shape[0]
        new_stage = self._ledger.open(layer, (layer.stage,), steps)
        weighted = sim.accumulate_coded(spikes.detach().reshape(steps, -1, layer.fan_in).numpy(), self._ledger, new_stage)
        y = sim.readout_coded(weighted, vth.detach().reshape(-1).numpy())
        self._sim_s += time.perf_counter() - start
        return torch.from_numpy(y).reshape(*x.shape[:-1], layer.neurons).to(x.dtype)

    def _lif(self, sim: LayerSim, current: torch.Tensor, v0: torch.Tensor, *_) -> tuple[torch.Tensor, torch.Tensor]:
        start = time.perf_counter()
        layer = sim.layer
        acc = self._pending.pop(layer.name)
        membrane = self._membranes.get(layer.name)
        if membrane is None:  # after a reset (zeros) or set_state: the host's membrane, in membrane units
            membrane = np.rint(v0.double().numpy().reshape(acc.shape[1:]) / sim.unit).astype(np.int64)
        spikes, membrane = sim.lif(acc, membrane, self._ledger)
        self._membranes[layer.name] = membrane
        v = torch.from_numpy((membrane * sim.unit).astype(np.float32)).reshape(v0.shape)
        self._sim_s += time.perf_counter() - start
        return torch.from_numpy(spikes).reshape(current.shape), v


def open_bundle(directory: Path, manifest: dict) -> NeuronChipSession:
    return NeuronChipSession(directory, manifest)
