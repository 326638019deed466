"""NeuronChip bundles on SANA-FE (Boyle et al., "SANA-FE: Simulating Advanced Neuromorphic Architectures for
Fast Exploration"; ``sanafe`` 2.2.9, validated against measured Loihi energy and latency): the chip layers
become SANA-FE networks, the host part runs in float as in ``session.py``.

Architecture (``arch``): ``auto`` takes SANA-FE's own ``arch/loihi.yaml`` (bundled with the wheel) when the
bundle's chip is edgespike's ``loihi`` preset, else the chip file translated (``translate``); ``loihi``
forces SANA-FE's Loihi file; ``chip`` forces the translation. SANA-FE's ``truenorth.yaml`` is not offered:
every cost in it is 0.0 and its soma (model ``truenorth``) has a subtractive leak, which cannot hold the
chip's multiplicative one. Each stage (the layers reading the same spikes) is one SANA-FE network on the
cores chip.json gives it:

    input neurons   one per input spike line (two when the spikes are signed: +1 and -1 lines, the -1 line's
                    weights negated), on the cores of the source population, or for spikes from the host on
                    the lowest cores with room (core 0 first: the host port); a dummy input neuron on every
                    other tile the whole mapping uses, so SANA-FE's barrier-sync table sees all of them
    LIF layer       a leaky_integrate_fire neuron per chip neuron, in the membrane units of chip.json
                    (scale / 2^F): weights codes << F, bias bias_q, leak_decay 1 - decay / 2^decay_bits,
                    threshold thr_q - 2^-20 (SANA-FE fires on v > threshold, the chip on v >= thr_q; strict:
                    thr_q), reset subtract -> soft, zero -> hard (to 0), none -> none
    readout layer   the same neuron with leak_decay 0 and no threshold: its potential is the step's sum acc
    coded layer     one neuron per compartment (neuron, group), sparse group connections; leak_decay 2 is the
                    shift-add A = 2A + acc_g[t] (time_weighting chip), 0 the per-step sums (host)

One SANA-FE timestep per LIF timestep. SANA-FE delivers a spike one step after it is sent, so a token runs
1 + T steps: step 0 sends the first timestep's spikes while the LIF neurons hold (leak_decay 1, bias 0, no
threshold) and coded compartments clear (leak_decay 0); steps 1..T are the chip's T timesteps. Costs per
token: SANA-FE's energy (synapse, dendrite, soma, network) less step 0's soma energy (the holding updates),
SANA-FE's simulated time less one idle step (step 0's extra barrier sync), plus what SANA-FE does not model,
from the chip file and labelled so: the host link and static power. edgespike's own simulator runs beside it
on the same spikes; ``stats["edgespike_model"]`` holds its figures and ``spike_agreement`` the fraction of
chip LIF spikes both simulators agree on. Known differences: SANA-FE leaks in float truncated to 1/64 (the
chip: an integer shift, floored) and does not saturate the membrane; a delayed reset cannot be expressed.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from edgespike.chip import Chip, ChipError, load_chip
from edgespike.errors import EdgespikeError
from edgespike.runtimes.neuronchip.session import NeuronChipSession
from edgespike.runtimes.neuronchip.simulator import ChipLayer, LayerSim
from edgespike.runtimes.registry import native_output_silenced

ARCHS = ("auto", "loihi", "chip")
ARCH_ENV = "EDGESPIKE_SANAFE_ARCH"  # the architecture when the runtime is picked from the CLI
EPSILON = 2.0**-20  # v >= q as v > q - EPSILON: SANA-FE's potentials are multiples of 1/64 after its leak
HOLD = float("inf")  # a threshold no potential reaches



def _sim(chip, steps: int, **traces) -> dict:
    """``chip.sim`` with SANA-FE's own progress prints ("Executed steps: [n/n]") kept off stdout."""
    with native_output_silenced(1):
        return chip.sim(steps, **traces)

def import_sanafe():
    """The sanafe module, or a one-line error naming the extra to install."""
    try:
        import sanafe
    except ImportError:
        raise EdgespikeError("the sanafe runtime needs SANA-FE: pip install 'edgespike[sanafe]' (sanafe==2.2.9)") from None
    return sanafe


@dataclass(frozen=True)
class Arch:
    """A SANA-FE architecture and the names of the units edgespike maps onto."""

    arch: object  # sanafe.Architecture
    label: str  # what it is, for every output
    cores: int  # cores built (the mesh rows up to the mapping's highest core)
    cores_per_tile: int
    neurons_per_core: int  # max_neurons_supported of every core (inputs included)
    input_units: int  # input soma units per core (one per input neuron)
    lif: str = "loihi_lif"
    inputs: str = "loihi_inputs"  # replicated: f"{inputs}[k]", k < neurons_per_core
    synapse: str = "loihi_dense_synapse"
    dendrite: str = "loihi_dendrites"
    sparse_synapse: str = "loihi_sparse_synapse"

    def core(self, core: int):
        return self.arch.tiles[core // self.cores_per_tile].cores[core % self.cores_per_tile]


def _rows(cores: int, cores_per_tile: int, width: int) -> int:
    """Mesh rows holding the first ``cores`` cores (SANA-FE builds only these: the rows beyond change no hop)."""
    return max(1, math.ceil(math.ceil(cores / cores_per_tile) / width))


def translate(chip: Chip, cores: int | None = None, inputs: int | None = None) -> str:
    """The chip file as a SANA-FE architecture (YAML): a width x height mesh of tiles, per-event costs as
    SANA-FE's units charge them (synapse per synop, soma per update, axon_in per delivered message, tile per hop;
    cycles / clock_hz as latencies; timestep_s as a fixed sync delay per step, added where the chip takes the max).
    ``cores``: build the mesh rows up to that core only; ``inputs``: input units per core (default: every neuron)."""
    if chip.cores % chip.cores_per_tile:
        raise ChipError(f"chip {chip.name!r}: cores {chip.cores} is not a multiple of cores_per_tile {chip.cores_per_tile}; "
                        "SANA-FE's tiles all hold the same cores: set cores to a multiple")
    if chip.tiles % chip.mesh_width:
        raise ChipError(f"chip {chip.name!r}: mesh_width {chip.mesh_width} does not divide the {chip.tiles} tiles; SANA-FE's mesh "
                        f"is width x height full tiles: set mesh_width to a divisor of {chip.tiles}")
    rows = _rows(cores or chip.cores, chip.cores_per_tile, chip.mesh_width)
    n, k = chip.neurons_per_core, inputs or chip.neurons_per_core
    hop = ", ".join(f"energy_{d}_hop: {chip.hop_energy_j!r}, latency_{d}_hop: {chip.hop_latency_s!r}"
                    for d in ("north", "east", "south", "west"))  # fmt: skip
    zero_soma = ("energy_access_neuron: 0.0, latency_access_neuron: 0.0, energy_update_neuron: 0.0, "
                 "latency_update_neuron: 0.0, energy_spike_out: 0.0, latency_spike_out: 0.0")  # fmt: skip
    synapse = f"energy_process_spike: {chip.synop_energy_j!r}, latency_process_spike: {chip.synop_cycles / chip.clock_hz!r}"
    return f"""architecture:
  name: edgespike_{chip.name}
  attributes: {{topology: mesh, width: {chip.mesh_width}, height: {rows}, link_buffer_size: 16,
               sync_model: fixed, latency_sync: {chip.timestep_s!r}}}
  tile:
    - name: tile[0..{rows * chip.mesh_width - 1}]
      attributes: {{{hop}}}
      core:
        - name: core[0..{chip.cores_per_tile - 1}]
          attributes: {{buffer_position: soma, buffer_inside_unit: false, max_neurons_supported: {n}}}
          axon_in:
            - name: axon_in
              attributes: {{energy_message_in: {chip.spike_local_energy_j!r}, latency_message_in: {chip.spike_local_latency_s!r}}}
          soma:
            - name: lif
              attributes: {{model: leaky_integrate_fire, energy_access_neuron: 0.0, latency_access_neuron: 0.0,
                           energy_update_neuron: {chip.neuron_update_energy_j!r},
                           latency_update_neuron: {chip.neuron_update_cycles / chip.clock_hz!r},
                           energy_spike_out: 0.0, latency_spike_out: 0.0}}
            - name: inputs[0..{k - 1}]
              attributes: {{model: input, {zero_soma}}}
          dendrite:
            - name: dendrites
              attributes: {{model: accumulator, energy_update: 0.0, latency_update: 0.0}}
          synapse:
            - name: dense_synapse
              attributes: {{model: current_based, {synapse}}}
            - name: sparse_synapse
              attributes: {{model: current_based, {synapse}}}
          axon_out:
            - name: axon_out
              attributes: {{energy_message_out: 0.0, latency_message_out: 0.0}}
"""


def loihi_yaml(cores: int = 128, inputs: int = 1024) -> str:
    """SANA-FE's bundled arch/loihi.yaml, built only up to the mesh row of core ``cores - 1`` and with ``inputs``
    input units per core (SpikingChip takes seconds for the whole file); no cost, width or unit changes."""
    text = (resources.files("sanafe.examples") / "loihi.yaml").read_text()
    rows = _rows(cores, 4, 8)
    edits = {"height: 4": f"height: {rows}", "loihi_tile[0..31]": f"loihi_tile[0..{rows * 8 - 1}]",
             "loihi_inputs[0..1023]": f"loihi_inputs[0..{inputs - 1}]"}  # fmt: skip
    for old, new in edits.items():
        if text.count(old) != 1:
            raise EdgespikeError(f"SANA-FE's loihi.yaml has no single {old!r}: a sanafe other than 2.2.9? pip install sanafe==2.2.9")
        text = text.replace(old, new)
    return text


def architecture(chip: Chip, choice: str = "auto", cores: int | None = None, inputs: int | None = None) -> Arch:
    """The SANA-FE architecture a bundle for ``chip`` runs on (see the module docstring); ``cores`` and ``inputs``
    trim it to what the mapping uses (cores up to the highest one used, input units per core)."""
    sanafe = import_sanafe()
    if choice not in ARCHS:
        raise EdgespikeError(f"unknown SANA-FE architecture {choice!r}; choose one of {', '.join(ARCHS)}")
    loihi = choice == "loihi" or (choice == "auto" and chip == load_chip("loihi"))
    if loihi and (cores or 0) > 128:
        raise EdgespikeError(f"the mapping needs {cores} cores, SANA-FE's Loihi has 128 ({cores - 128} short); "
                             "export for --chip loihi or use SANA-FE architecture 'chip'")
    text = loihi_yaml(cores or 128, min(inputs or 1024, 1024)) if loihi else translate(chip, cores, inputs)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "arch.yaml"
        path.write_text(text)
        arch = sanafe.load_arch(str(path))
    if loihi:
        return Arch(arch, "SANA-FE 2.2.9 arch/loihi.yaml (Davies et al. 2018 figures, validated against Loihi)",
                    cores=_rows(cores or 128, 4, 8) * 32, cores_per_tile=4, neurons_per_core=1024,
                    input_units=min(inputs or 1024, 1024))
    return Arch(arch, f"SANA-FE 2.2.9 on chip {chip.name} translated from its chip file (edgespike's constants)",
                cores=_rows(cores or chip.cores, chip.cores_per_tile, chip.mesh_width) * chip.mesh_width * chip.cores_per_tile,
                cores_per_tile=chip.cores_per_tile, neurons_per_core=chip.neurons_per_core, input_units=inputs or chip.neurons_per_core, lif="lif", inputs="inputs", synapse="dense_synapse",
                dendrite="dendrites", sparse_synapse="sparse_synapse")


LOIHI_LABEL = "SANA-FE (Boyle et al.) Loihi architecture"  # what every figure read from arch/loihi.yaml is labelled


def loihi_costs() -> dict[str, tuple[float, str]]:
    """Per-event costs of SANA-FE's Loihi architecture, read back through SANA-FE, each with where it comes from:
    J per synaptic event, per neuron update and per spike message (the soma's spike out, the axon's message out and
    in), s per synaptic event and per neuron update, and the barrier sync of one idle step with all 32 tiles in use."""
    sanafe = import_sanafe()
    arch = architecture(load_chip("loihi"), "loihi", inputs=1)
    core = arch.core(0)
    units = {unit.name: unit.model_info.model_attributes for unit in core.pipeline_hw}
    synapse, lif = units[arch.synapse], units[arch.lif]
    out, into = core.axon_out[0].metrics, core.axon_in[0].metrics
    net = sanafe.Network()
    idle = net.create_neuron_group("sync", len(arch.arch.tiles))
    for neuron, tile in zip(idle, arch.arch.tiles):
        neuron.set_attributes(soma_hw_name=f"{arch.inputs}[0]")
        neuron.map_to_core(tile.cores[0])
    chip = sanafe.SpikingChip(arch.arch)
    chip.load(net)
    sync_s = _sim(chip, 1)["sim_time"]
    where = f"{LOIHI_LABEL}: sanafe 2.2.9 arch/loihi.yaml"
    return {
        "synop_j": (synapse["energy_process_spike"], f"{where} {arch.synapse} energy_process_spike"),
        "synop_s": (synapse["latency_process_spike"], f"{where} {arch.synapse} latency_process_spike"),
        "update_j": (lif["energy_access_neuron"] + lif["energy_update_neuron"],
                     f"{where} {arch.lif} energy_access_neuron + energy_update_neuron"),
        "update_s": (lif["latency_access_neuron"] + lif["latency_update_neuron"],
                     f"{where} {arch.lif} latency_access_neuron + latency_update_neuron"),
        "spike_j": (lif["energy_spike_out"] + out.energy_message_out + into.energy_message_in,
                    f"{where} {arch.lif} energy_spike_out + axon_out energy_message_out + axon_in energy_message_in"),
        "sync_s": (sync_s, f"{where} latency_sync table: one idle step of SANA-FE with all {len(arch.arch.tiles)} tiles in use"),
    }  # fmt: skip


def _neuron_attributes(sim: LayerSim) -> tuple[dict, dict | None]:
    """(attributes of the T real steps, attributes of the holding step 0 or None when they are the same)."""
    layer = sim.layer
    if layer.lif is None:
        leak = 2.0 if layer.timesteps and layer.time_weighting == "chip" else 0.0
        run = {"threshold": HOLD, "leak_decay": leak, "reset_mode": "none", "bias": 0.0}
        return run, ({**run, "leak_decay": 0.0} if leak else None)
    lif = layer.lif
    modes = {"subtract": "soft", "zero": "hard", "none": "none"}
    runs = []
    for j in range(layer.neurons):
        q = float(sim.threshold_q[j])
        runs.append({"threshold": q if lif.strict else q - EPSILON, "leak_decay": 1.0 - lif.decay / (1 << lif.decay_bits),
                     "bias": float(sim.bias_q[j]), "reset_mode": modes[lif.reset], "reset": 0.0})
    return runs, {"threshold": HOLD, "leak_decay": 1.0, "bias": 0.0}


class Stage:
    """One stage's layers as a SANA-FE network on its own SpikingChip; ``run`` steps one token."""

    def __init__(self, sims: list[LayerSim], arch: Arch, mapped_tiles: set[int]):
        sanafe = import_sanafe()
        self.sims, self.arch = sims, arch
        first = sims[0].layer
        self.fan_in, self.signed = first.fan_in, first.signed_input
        net = sanafe.Network()
        used = {}  # core -> neurons mapped on it
        groups = []
        for k, sim in enumerate(sims):
            layer = sim.layer
            run, _ = _neuron_attributes(sim)
            group = net.create_neuron_group(f"layer{k}", layer.neurons * layer.groups, log_potential=True,
                                            log_spikes=layer.lif is not None, soma_hw_name=arch.lif,
                                            default_synapse_hw_name=arch.synapse if layer.groups == 1 else arch.sparse_synapse,
                                            default_dendrite_hw_name=arch.dendrite,
                                            model_attributes=run if isinstance(run, dict) else {})  # fmt: skip
            if not isinstance(run, dict):
                for neuron, attributes in zip(group, run):
                    neuron.set_attributes(model_attributes=attributes)
            for core, start, stop in layer.cores:
                for i in range(start * layer.groups, stop * layer.groups):
                    group[i].map_to_core(arch.core(core))
                used[core] = used.get(core, 0) + (stop - start) * layer.groups
            groups.append(group)
        lines = self.fan_in * (2 if self.signed else 1)
        inputs = net.create_neuron_group("in", lines, default_dendrite_hw_name=arch.dendrite)
        units: dict[int, int] = {}  # core -> input units taken
        for line, core in enumerate(self._input_cores(first, used, lines)):
            inputs[line].set_attributes(soma_hw_name=f"{arch.inputs}[{units.get(core, 0)}]")
            inputs[line].map_to_core(arch.core(core))
            units[core] = units.get(core, 0) + 1
            used[core] = used.get(core, 0) + 1
        stage_tiles = {core // arch.cores_per_tile for core in used}
        dummies = sorted(mapped_tiles - stage_tiles)
        if dummies:
            placeholder = net.create_neuron_group("sync", len(dummies))
            for neuron, tile in zip(placeholder, dummies):
                neuron.set_attributes(soma_hw_name=f"{arch.inputs}[0]")
                neuron.map_to_core(arch.core(tile * arch.cores_per_tile))
        for sim, group in zip(sims, groups):
            self._connect(sim, inputs, group)
        self.chip = sanafe.SpikingChip(arch.arch)
        try:
            self.chip.load(net)
        except sanafe.HardwareMappingError as err:
            raise EdgespikeError(f"SANA-FE cannot map stage {first.stage} ({first.name}): {str(err).splitlines()[0]}") from None
        mapped = self.chip.mapped_neuron_groups
        self.inputs = mapped["in"]
        self.neurons = [mapped[f"layer{k}"] for k in range(len(sims))]
        self.attributes = [_neuron_attributes(sim) for sim in sims]
        self.sync_s = _sim(self.chip, 1)["sim_time"]  # one idle step: the barrier sync of this mapping

    def _input_cores(self, layer: ChipLayer, used: dict[int, int], lines: int) -> list[int]:
        """The core of every input line: the source neuron's core, or the lowest cores with room (host spikes)."""
        if layer.source_cores is not None:
            owner = {}
            for core, start, stop in layer.source_cores:
                owner.update((i, core) for i in range(start, stop))
            return [owner[i % self.fan_in] for i in range(lines)]
        cores, core = [], 0
        while len(cores) < lines:
            if core >= self.arch.cores:
                raise EdgespikeError(f"SANA-FE: no room for the {lines} host input lines of stage {layer.stage} on the "
                                     f"{self.arch.cores} cores of {self.arch.label}")
            placed = sum(1 for c in cores if c == core)
            room = min(self.arch.neurons_per_core - used.get(core, 0) - placed, self.arch.input_units - placed)
            cores.extend([core] * min(room, lines - len(cores)))
            core += 1
        return cores

    def _connect(self, sim: LayerSim, inputs, group) -> None:
        layer = sim.layer
        shift = (1 << layer.lif.frac_bits) if layer.lif is not None else 1
        weights = layer.codes.astype(np.float64).T * shift  # [fan_in, neurons]
        if self.signed:
            weights = np.concatenate([weights, -weights])
        if layer.groups == 1:
            inputs.connect_neurons_dense(group, {"w": weights.reshape(-1).tolist()})
            return
        lines, size = weights.shape[0], layer.group_size or layer.fan_in
        src = np.repeat(np.arange(lines), layer.neurons)
        dst = np.tile(np.arange(layer.neurons) * layer.groups, lines) + (src % layer.fan_in) // size
        inputs.connect_neurons_sparse(group, {"w": weights.reshape(-1).tolist()}, list(zip(src.tolist(), dst.tolist())))

    def _set(self, k: int, attributes) -> None:
        if isinstance(attributes, dict):
            for neuron in self.neurons[k]:
                neuron.set_attributes(model_attributes=attributes)
        else:
            for neuron, values in zip(self.neurons[k], attributes):
                neuron.set_attributes(model_attributes=values)

    def run(self, spikes: np.ndarray) -> tuple[list[dict], dict]:
        """spikes[T, fan_in] in {-1, 0, 1} -> per layer {"potential": [T, n*G], "spikes": [T, n]}, and the costs."""
        steps = spikes.shape[0]
        lines = np.concatenate([spikes > 0, spikes < 0], axis=1) if self.signed else spikes > 0
        for line, neuron in enumerate(self.inputs):
            neuron.set_attributes(model_attributes={"spikes": lines[:, line].tolist()})
        for k, (_, hold) in enumerate(self.attributes):
            if hold is not None:
                self._set(k, hold)
        first = _sim(self.chip, 1)
        for k, (run, hold) in enumerate(self.attributes):
            if hold is not None:
                self._set(k, run)
        rest = _sim(self.chip, steps, spike_trace=True, potential_trace=True)
        potential = np.asarray(rest["potential_trace"], dtype=np.float64).reshape(steps, -1)
        outputs, offset = [], 0
        names = [f"layer{k}" for k in range(len(self.sims))]
        for sim, name in zip(self.sims, names):
            size = sim.layer.neurons * sim.layer.groups
            fired = np.zeros((steps, sim.layer.neurons), dtype=np.float32)
            for t, addresses in enumerate(rest["spike_trace"]):
                for address in addresses:
                    if address.group_name == name:
                        fired[t, address.neuron_offset] = 1.0
            outputs.append({"potential": potential[:, offset : offset + size], "spikes": fired})
            offset += size
        energy = {key: first["energy"][key] + rest["energy"][key] for key in ("synapse", "dendrite", "soma", "network")}
        energy["soma"] -= first["energy"]["soma"]  # step 0's holding updates are an artefact of the delivery delay
        costs = {"energy": energy, "sim_time": first["sim_time"] + rest["sim_time"] - self.sync_s,
                 "spikes": first["spikes"] + rest["spikes"], "packets": first["packets_sent"] + rest["packets_sent"],
                 "neurons_updated": rest["neurons_updated"], "neurons_fired": rest["neurons_fired"]}  # fmt: skip
        return outputs, costs


class SanafeSession(NeuronChipSession):
    """A neuronchip bundle with its chip layers on SANA-FE; ``stats`` as the simulator's, figures from SANA-FE."""

    def __init__(self, directory: Path, manifest: dict, arch: str | None = None):
        import_sanafe()
        super().__init__(directory, manifest)
        for record in self.mapping["layers"]:
            if record["lif"] and record["lif"].get("delayed_reset"):
                raise EdgespikeError(f"layer {record['name']}: its LIF {record['lif']['module']} has delayed_reset (snntorch's "
                                     "one-step-late reset), which SANA-FE's soma cannot express; run it on the neuronchip runtime")
        top = max((core for layer in self.layers for core, _, _ in layer.cores), default=-1) + 1
        widest = max((max(stop - start for _, start, stop in layer.source_cores or layer.cores) for layer in self.layers), default=1)
        host = max((layer.fan_in * (2 if layer.signed_input else 1) for layer in self.layers if layer.source_cores is None), default=1)
        self.arch = architecture(self.chip, arch or os.environ.get(ARCH_ENV, "auto"), top,
                                 min(self.chip.neurons_per_core, max(widest, host)))
        tiles = {core // self.arch.cores_per_tile for layer in self.layers for core, _, _ in layer.cores}
        by_stage: dict[int, list[LayerSim]] = {}
        for layer in self.layers:
            by_stage.setdefault(layer.stage, []).append(self.sims[layer.name])
        self.stages = {stage: Stage(sims, self.arch, tiles) for stage, sims in by_stage.items()}
        self.runtime = f"{self.arch.label}; host part in float PyTorch"
        self._results: dict[str, dict] = {}  # SANA-FE outputs of the running stage's layers not yet consumed
        self._lif_results: dict[str, dict] = {}  # a LIF layer's outputs, from its linear to its LIF

    def set_state(self, values: dict[str, np.ndarray]) -> None:
        raise EdgespikeError("the sanafe runtime cannot set SANA-FE's chip state; set it on the neuronchip runtime")

    def reset(self) -> None:
        super().reset()
        self._results.clear()
        for stage in self.stages.values():
            stage.chip.reset()

    @torch.no_grad()
    def step(self, token: int) -> np.ndarray:
        self._costs = {"energy": dict.fromkeys(("synapse", "dendrite", "soma", "network"), 0.0), "sim_time": 0.0,
                       "spikes": 0, "packets": 0, "neurons_updated": 0, "neurons_fired": 0}  # fmt: skip
        self._agree, self._compared, self._sanafe_s = 0, 0, 0.0
        logits = super().step(token)
        ours = {key: self.stats[key] for key in ("energy_j", "energy_breakdown_j", "latency_s", "layer_latency_s", "chip_spikes")}
        chip = self.chip
        latency = self._costs["sim_time"] + self.stats["host_link_s"]
        breakdown = {f"sanafe_{key}": value for key, value in self._costs["energy"].items()}
        breakdown["host_link (chip file)"] = self.stats["energy_breakdown_j"]["host_link"]
        breakdown["static (chip file)"] = chip.static_power_w * latency
        self.stats.update({
            "cost_model": self.arch.label,
            "latency_s": latency,
            "sanafe_chip_s": self._costs["sim_time"],
            "energy_j": sum(breakdown.values()),
            "energy_breakdown_j": breakdown,
            "sanafe_chip_energy_j": sum(self._costs["energy"].values()),
            "sanafe_spikes": self._costs["spikes"],
            "sanafe_packets": self._costs["packets"],
            "sanafe_neurons_updated": self._costs["neurons_updated"],
            "sanafe_neurons_fired": self._costs["neurons_fired"],
            "spike_agreement": self._agree / self._compared if self._compared else 1.0,
            "sanafe_s": self._sanafe_s,  # wall time in SANA-FE, this machine
            "simulator_s": self.stats["simulator_s"] - self._sanafe_s,  # wall time in edgespike's simulator
            "edgespike_model": ours,
        })  # fmt: skip
        return logits

    def _result(self, sim: LayerSim, spikes: np.ndarray) -> dict:
        """This layer's SANA-FE outputs for the token, running its stage when they are not pending."""
        name = sim.layer.name
        if name not in self._results:
            start = time.perf_counter()
            stage = self.stages[sim.layer.stage]
            outputs, costs = stage.run(spikes)
            self._sanafe_s += time.perf_counter() - start
            for key, value in costs["energy"].items():
                self._costs["energy"][key] += value
            for key in ("sim_time", "spikes", "packets", "neurons_updated", "neurons_fired"):
                self._costs[key] += costs[key]
            self._results.update((s.layer.name, out) for s, out in zip(stage.sims, outputs))
        return self._results.pop(name)

    @staticmethod
    def _rows(x: np.ndarray, fan_in: int) -> np.ndarray:
        spikes = x.reshape(x.shape[0], -1, fan_in)
        if spikes.shape[1] != 1:
            raise EdgespikeError(f"the sanafe runtime runs one position per timestep, got {spikes.shape[1]}; export with batch 1")
        return spikes

    def _linear(self, sim: LayerSim, x: torch.Tensor) -> torch.Tensor:
        layer = sim.layer
        spikes = self._rows(x.detach().numpy(), layer.fan_in)
        out = super()._linear(sim, x)  # edgespike's simulator: its ledger, and the sums its LIF takes
        result = self._result(sim, spikes[:, 0].astype(np.int64))
        if layer.lif is not None:
            self._lif_results[layer.name] = result  # its LIF call takes the spikes
            return out
        acc = np.rint(result["potential"]).astype(np.int64)[:, None]  # [T, 1, n]
        return torch.from_numpy(sim.readout(acc)).reshape(out.shape)

    def _coded(self, sim: LayerSim, encoder, x: torch.Tensor) -> torch.Tensor:
        layer = sim.layer
        spikes, vth = encoder(x)
        ours = super()._coded(sim, encoder, x)
        steps = spikes.shape[0]
        result = self._result(sim, self._rows(spikes.detach().numpy(), layer.fan_in)[:, 0].astype(np.int64))
        sums = np.rint(result["potential"]).astype(np.int64).reshape(steps, layer.neurons, layer.groups)
        if layer.time_weighting == "chip":
            weighted = sums[-1]
        else:
            weighted = np.tensordot(2 ** np.arange(steps - 1, -1, -1, dtype=np.int64), sums, axes=1)
        y = sim.readout_coded(weighted[None], vth.detach().reshape(-1).numpy())
        return torch.from_numpy(y).reshape(ours.shape).to(x.dtype)

    def _lif(self, sim: LayerSim, current: torch.Tensor, v0: torch.Tensor, *rest) -> tuple[torch.Tensor, torch.Tensor]:
        ours, _ = super()._lif(sim, current, v0, *rest)
        result = self._lif_results.pop(sim.layer.name)
        spikes = result["spikes"]
        self._agree += int((ours.numpy().reshape(spikes.shape) == spikes).sum())
        self._compared += spikes.size
        v = torch.from_numpy((result["potential"][-1] * sim.unit).astype(np.float32)).reshape(v0.shape)
        return torch.from_numpy(spikes).reshape(current.shape), v


def open_bundle(directory: Path, manifest: dict) -> SanafeSession:
    if manifest.get("target") != "neuronchip":
        raise EdgespikeError(f"{directory}: the sanafe runtime runs neuronchip bundles, this is a {manifest.get('target')} artifact")
    return SanafeSession(directory, manifest)
