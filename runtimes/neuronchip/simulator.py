"""Event-driven fixed-point simulation of chip layers, and the per-token cost ledger.

One chip layer, one timestep (row r), per input spike i that is active (s_i != 0):

    acc[j, g(i)] += codes[j, i] * s_i  for the neurons j of every core of the layer   (synops)
                                       g(i): the weight group of input i (one compartment per group; plain
                                       layers have one group, their per-row scale)
    readout layer:  y = acc * scale + bias   -> back to the host (integer sums over the link)
    LIF layer:      v = v - ((v * decay) >> decay_bits) + (acc << F) + bias_q
                    s = v >= thr_q (v > thr_q when strict);  reset: v -= s * thr_q ("subtract"),
                    v = 0 ("zero") or none; delayed_reset (edgespike.ops.lif's delayed law): step
                    t+1 applies step t's reset, zeroing v before the leak or subtracting after it
                    (v, thr_q, bias_q in units of scale / 2^F, saturated to membrane_bits)
    coded layer (bitwise inputs, T steps, most significant first):
                    A_g = 2 * A_g + acc_g[t] on the chip (one readout per token of |A_g| <= group * max|code|
                    * (2^T - 1)), or every acc_g[t] read out and weighted 2^(T-1-t) on the host when that
                    bound overflows the membrane; then the host computes y = vth * sum_g scale_g * A_g + bias

Time: within a stage (layers reading the same spikes) cores run in parallel; per timestep

    t_step = max(chip.timestep_s, max_core(cycles) / clock_hz + t_noc),
    cycles(core) = synops(core) * synop_cycles + neurons(core) * neuron_update_cycles,
    t_noc = spike_local_latency_s + max hops * hop_latency_s   (when any spike was routed),

and a stage adds one host-link transfer per direction it uses (latency + bits / bandwidth).
Energy: synops, neuron updates, routed spikes (local + hops), host-link bits, static power x time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from edgespike.chip import Chip

HOST_PORT = 0  # the host link attaches at core 0's tile


@dataclass
class LifParams:
    frac_bits: int  # F
    decay: int  # v -= (v * decay) >> decay_bits
    decay_bits: int
    threshold: float
    reset: str
    delayed_reset: bool = False
    strict: bool = False

    @classmethod
    def from_dict(cls, data: dict) -> "LifParams":
        return cls(data["frac_bits"], data["decay"], data["decay_bits"], data["threshold"], data["reset"],
                   data.get("delayed_reset", False), data.get("strict", False))


@dataclass
class ChipLayer:
    """One synaptic layer placed on cores; codes[neurons, fan_in] int8 (ternary, int4, int8)."""

    name: str
    stage: int
    codes: np.ndarray  # [neurons, fan_in] int8
    scale: np.ndarray  # [neurons] float32; coded layers [neurons, groups] (the group scales)
    bias: np.ndarray | None  # [neurons] float32
    cores: list[tuple[int, int, int]]  # (core, start, stop)
    source_cores: list[tuple[int, int, int]] | None  # cores of the population it reads; None: the host
    signed_input: bool = False
    lif: LifParams | None = None
    block: str = ""  # the model block it belongs to (per-layer latency)
    group_size: int | None = None  # input columns per weight group; None: fan_in (one group)
    timesteps: int = 0  # coded layers: bitwise input steps, weighted 2^(T-1-t); 0: plain (per-step sums)
    time_weighting: str = "chip"  # coded layers: the shift-add on the chip, or per-step readout ("host")

    @property
    def fan_in(self) -> int:
        return self.codes.shape[1]

    @property
    def neurons(self) -> int:
        return self.codes.shape[0]

    @property
    def groups(self) -> int:
        return self.fan_in // (self.group_size or self.fan_in)

    def sum_bound(self) -> int:
        """Largest |acc_g| of one timestep: group size x max|code| (spikes are -1, 0 or 1)."""
        return (self.group_size or self.fan_in) * max(1, int(np.abs(self.codes).max(initial=0)))

    def readout_bits(self, steps: int = 1) -> int:
        """Bits of one signed integer read back: a timestep's sum, or ``steps`` of them weighted 2^(steps-1-t)."""
        return math.ceil(math.log2(2 * self.sum_bound() * ((1 << steps) - 1) + 1))


@dataclass
class Ledger:
    """Events and time of one token; ``close()`` folds the open stage into the totals."""

    chip: Chip
    synops: int = 0
    neuron_updates: int = 0
    chip_spikes: int = 0  # spikes fired by LIF neurons on the chip
    noc_messages: int = 0  # spike messages delivered over the mesh (one per destination core)
    noc_energy_j: float = 0.0
    host_bits_in: int = 0
    host_bits_out: int = 0
    host_spikes_in: int = 0  # spike events in the input bitmaps sent from the host
    host_transfers: int = 0
    cycles: int = 0  # sum over stages and timesteps of the slowest core's cycles
    busy_cycles: int = 0  # sum over cores of their cycles
    capacity_cycles: int = 0  # sum over stages of (cores in the stage x the stage's cycles)
    latency_s: float = 0.0
    noc_s: float = 0.0
    host_link_s: float = 0.0
    block_latency_s: dict[str, float] = field(default_factory=dict)
    _stage: tuple | None = None
    _core_cycles: dict[int, np.ndarray] = field(default_factory=dict)  # core -> [timesteps]
    _max_hops: np.ndarray | None = None  # [timesteps], -1: nothing routed
    _host_in_bits: int = 0
    _host_out_bits: int = 0
    _block: str = ""

    def open(self, layer: ChipLayer, stage_key: tuple, timesteps: int) -> bool:
        """Enter the stage of ``layer``; True when it is a new stage (its input not yet sent)."""
        if self._stage == stage_key:
            return False
        self.close()
        self._stage, self._block = stage_key, layer.block
        self._core_cycles = {}
        self._max_hops = np.full(timesteps, -1)
        return True

    def close(self) -> None:
        if self._stage is None:
            return
        chip = self.chip
        slowest = np.max(np.stack(list(self._core_cycles.values())), axis=0) if self._core_cycles else np.zeros(0, int)
        routed = self._max_hops >= 0
        noc = np.where(routed, chip.spike_local_latency_s + np.maximum(self._max_hops, 0) * chip.hop_latency_s, 0.0)
        steps = np.maximum(chip.timestep_s, slowest / chip.clock_hz + noc)
        link = sum(chip.host_link_latency_s + bits / chip.host_link_bandwidth_bps
                   for bits in (self._host_in_bits, self._host_out_bits) if bits)  # fmt: skip
        self.host_transfers += sum(1 for bits in (self._host_in_bits, self._host_out_bits) if bits)
        stage_s = float(steps.sum()) + link
        self.cycles += int(slowest.sum())
        self.busy_cycles += int(sum(c.sum() for c in self._core_cycles.values()))
        self.capacity_cycles += len(self._core_cycles) * int(slowest.sum())
        self.noc_s += float(noc.sum())
        self.host_link_s += link
        self.latency_s += stage_s
        self.block_latency_s[self._block] = self.block_latency_s.get(self._block, 0.0) + stage_s
        self.host_bits_in += self._host_in_bits
        self.host_bits_out += self._host_out_bits
        self._stage, self._host_in_bits, self._host_out_bits = None, 0, 0

    def energy(self) -> dict[str, float]:
        chip = self.chip
        return {
            "synops": self.synops * chip.synop_energy_j,
            "neuron_updates": self.neuron_updates * chip.neuron_update_energy_j,
            "spikes_routed": self.noc_energy_j,
            "host_link": (self.host_bits_in + self.host_bits_out) * chip.host_link_energy_per_bit_j,
            "static": chip.static_power_w * self.latency_s,
        }

    def stats(self) -> dict:
        self.close()
        energy = self.energy()
        bits = self.host_bits_in + self.host_bits_out
        return {
            "cycles": self.cycles,
            "latency_s": self.latency_s,
            "noc_s": self.noc_s,
            "host_link_s": self.host_link_s,
            "layer_latency_s": dict(self.block_latency_s),
            "energy_j": sum(energy.values()),
            "energy_breakdown_j": energy,
            "synops": self.synops,
            "neuron_updates": self.neuron_updates,
            "chip_spikes": self.chip_spikes,
            "noc_spikes": self.noc_messages,
            "host_link_bits_in": self.host_bits_in,
            "host_link_bits_out": self.host_bits_out,
            "host_link_spikes_in": self.host_spikes_in,
            "host_link_bandwidth_bps": bits / self.latency_s if self.latency_s else 0.0,
            # busy cycles of the cores in use over what they could have done while their stage ran
            "core_busy_utilization": self.busy_cycles / self.capacity_cycles if self.capacity_cycles else 0.0,
        }


def _core_of(cores: list[tuple[int, int, int]], fan_in: int) -> np.ndarray:
    """[fan_in] core id of every input neuron of a population placed on ``cores``."""
    owner = np.empty(fan_in, dtype=np.int64)
    for core, start, stop in cores:
        owner[start:stop] = core
    return owner


class LayerSim:
    """Runs one ChipLayer on spikes, charging a Ledger."""

    def __init__(self, layer: ChipLayer, chip: Chip):
        self.layer, self.chip = layer, chip
        self.codes = layer.codes.astype(np.int32)
        dest = [core for core, _, _ in layer.cores]
        if layer.source_cores is None:
            src = np.full(layer.fan_in, HOST_PORT)
        else:
            src = _core_of(layer.source_cores, layer.fan_in)
        # hops[i, k]: from the core of input i to destination core k
        self.hops = np.array([[chip.hops(int(s), d) for d in dest] for s in src], dtype=np.int64).reshape(layer.fan_in, len(dest))
        self.message_energy = chip.spike_local_energy_j + self.hops * chip.hop_energy_j  # [fan_in, cores]
        self.core_neurons = np.array([stop - start for _, start, stop in layer.cores], dtype=np.int64)
        # group_of[i, g] = 1 where input i belongs to weight group g
        self.group_of = np.eye(layer.groups, dtype=np.int64)[np.arange(layer.fan_in) // (layer.group_size or layer.fan_in)]
        if layer.lif is not None:
            lif = layer.lif
            unit = layer.scale.astype(np.float64) / (1 << lif.frac_bits)  # value of one membrane LSB, per neuron
            self.unit = unit
            self.threshold_q = np.round(lif.threshold / unit).astype(np.int64)
            self.bias_q = np.zeros(layer.neurons, np.int64) if layer.bias is None else np.round(layer.bias / unit).astype(np.int64)
            self.limit = chip.membrane_limit

    def accumulate(self, spikes: np.ndarray, ledger: Ledger, new_stage: bool) -> np.ndarray:
        """Plain layer: spikes[R, M, fan_in] -> integer sums acc[R, M, neurons] (int64), events charged."""
        rows, batch, _ = spikes.shape
        acc = self._sums(spikes, ledger, new_stage)[..., 0]
        if self.layer.lif is None:
            ledger._host_out_bits += rows * batch * self.layer.neurons * self.layer.readout_bits()
        return acc

    def accumulate_coded(self, spikes: np.ndarray, ledger: Ledger, new_stage: bool) -> np.ndarray:
        """Coded layer: spikes[T, M, fan_in] (bitwise, most significant first) -> A[M, neurons, groups]
        (int64) = sum_t 2^(T-1-t) acc[t], shift-added on the chip or weighted on the host."""
        layer = self.layer
        steps, batch, _ = spikes.shape
        sums = self._sums(spikes, ledger, new_stage)
        weighted = np.zeros(sums.shape[1:], dtype=np.int64)
        for t in range(steps):  # the integer shift-add, most significant step first
            weighted = 2 * weighted + sums[t]
        values = batch * layer.neurons * layer.groups
        if layer.time_weighting == "chip":
            assert np.abs(weighted).max(initial=0) <= self.chip.membrane_limit  # the exporter's bound guarantees it
            ledger._host_out_bits += values * layer.readout_bits(steps)
        else:
            ledger._host_out_bits += steps * values * layer.readout_bits()
        return weighted

    def _sums(self, spikes: np.ndarray, ledger: Ledger, new_stage: bool) -> np.ndarray:
        """spikes[R, M, fan_in] -> per-group integer sums [R, M, neurons, groups] (int64); charges the
        synops, neuron (compartment) updates, mesh messages and host input, not the readout."""
        rows, batch, _ = spikes.shape
        layer, chip = self.layer, self.chip
        acc = np.zeros((rows, batch, layer.neurons, layer.groups), dtype=np.int64)
        host_input = layer.source_cores is None
        for r in range(rows):
            for m in range(batch):
                active = np.flatnonzero(spikes[r, m])
                if active.size == 0:
                    continue
                terms = self.codes[:, active].astype(np.int64) * spikes[r, m, active].astype(np.int64)  # [n, k]
                acc[r, m] = terms @ self.group_of[active]
                n = active.size
                ledger.synops += n * layer.neurons
                cycles = n * self.core_neurons * chip.synop_cycles
                for k, (core, _, _) in enumerate(layer.cores):
                    ledger._core_cycles.setdefault(core, np.zeros(rows, np.int64))[r] += cycles[k]
                ledger.noc_messages += n * len(layer.cores)
                ledger.noc_energy_j += float(self.message_energy[active].sum())
                ledger._max_hops[r] = max(ledger._max_hops[r], int(self.hops[active].max()))
                if host_input and new_stage:
                    ledger.host_spikes_in += n
        for k, (core, _, _) in enumerate(layer.cores):
            ledger._core_cycles.setdefault(core, np.zeros(rows, np.int64))
            ledger._core_cycles[core] += batch * self.core_neurons[k] * layer.groups * chip.neuron_update_cycles
        ledger.neuron_updates += rows * batch * layer.neurons * layer.groups
        if host_input and new_stage:
            ledger._host_in_bits += rows * batch * layer.fan_in * (2 if layer.signed_input else 1)
        return acc

    def readout_coded(self, weighted: np.ndarray, vth: np.ndarray) -> np.ndarray:
        """A[M, n, G], vth[M] -> y[M, n] = vth * sum_g scale_g * A_g + bias (float64, then float32)."""
        layer = self.layer
        y = (weighted * layer.scale.astype(np.float64)).sum(axis=-1) * vth.astype(np.float64)[:, None]
        y = y if layer.bias is None else y + layer.bias.astype(np.float64)
        return y.astype(np.float32)

    def readout(self, acc: np.ndarray) -> np.ndarray:
        layer = self.layer
        y = acc.astype(np.float32) * layer.scale
        return y if layer.bias is None else y + layer.bias

    def lif(self, acc: np.ndarray, v0: np.ndarray, ledger: Ledger) -> tuple[np.ndarray, np.ndarray]:
        """acc[R, M, n], v0[M, n] (int64 membrane) -> spikes[R, M, n] float32, v[M, n] int64."""
        lif = self.layer.lif
        delayed, reset = lif.delayed_reset, lif.reset
        v = v0.copy()
        spikes = np.zeros(acc.shape, dtype=np.float32)
        fired = self._fired(v)  # delayed: the previous step's spike, its reset still due
        for r in range(acc.shape[0]):
            if delayed and reset == "zero":
                v = np.where(fired, 0, v)
            v = v - ((v * lif.decay) >> lif.decay_bits) + (acc[r] << lif.frac_bits) + self.bias_q
            if delayed and reset == "subtract":
                v = v - fired * self.threshold_q
            v = np.clip(v, -self.limit - 1, self.limit)
            fired = self._fired(v)
            if not delayed and reset == "subtract":
                v = v - fired * self.threshold_q
            elif not delayed and reset == "zero":
                v = np.where(fired, 0, v)
            spikes[r] = fired
        ledger.chip_spikes += int(spikes.sum())
        return spikes, v

    def _fired(self, v: np.ndarray) -> np.ndarray:
        return v > self.threshold_q if self.layer.lif.strict else v >= self.threshold_q
