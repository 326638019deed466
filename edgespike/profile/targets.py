"""Profile targets as data: per-operation energies, memory access energies and a roofline.

A target is ``edgespike/profile/targets/<name>.toml`` (or a path to such a file); every numeric
constant has a citation in its ``[sources]`` table. ``spike_compute`` says how the hardware
does a spike times a weight:

    event   an add, only for active inputs and non-zero ternary weights (a zero-skipping ASIC)
    synop   an add for every fan-out weight of an active input (a neuromorphic core's synapse list)
    dense   a multiply-accumulate for every input, spike or not (an NPU: Core ML's ANE expands
            palettized weights to fp16 and multiplies the spike values)

``host`` is not a file: its peak and bandwidth are measured on this machine (``measure_host``).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from edgespike.errors import EdgespikeError

SPIKE_COMPUTE = ("event", "synop", "dense")
HOST = "host"


@dataclass(frozen=True)
class Target:
    """One target's costs; units in a comment per field, 0 where a cost does not apply."""

    name: str
    summary: str
    spike_compute: str  # event | synop | dense (module docstring)
    precision: str  # the arithmetic the target computes in (fp32, fp16, int8)
    mac_j: float  # one multiply-accumulate at ``precision``, J
    add_j: float  # one accumulate (a spike or ternary sign-add), J
    neuron_update_j: float  # one LIF neuron update (leak, integrate, compare), J
    spike_j: float  # one spike moved over the fabric, J (0: counted as activation memory)
    memory: bool  # charge memory accesses (false: compute only, the SNN papers' convention)
    sram_capacity_bytes: tuple[int, ...]  # on-chip memory tiers, smallest first
    sram_byte_j: tuple[float, ...]  # J per byte read from each tier
    dram_byte_j: float  # J per byte read from DRAM (working sets larger than every tier)
    peak_ops_per_s: float  # 1 MAC = 2 ops; 0: no latency estimate
    bandwidth_bytes_per_s: float  # DRAM bandwidth, bytes/s
    cache_bytes: int  # working sets up to this size stream at cache_bandwidth (host)
    cache_bandwidth_bytes_per_s: float  # bytes/s
    static_power_w: float  # W drawn whatever the work (neuromorphic chips), charged over the latency
    timestep_cycles_per_synop: float  # synop targets: cycles one synop occupies a core
    timestep_cycles_per_update: float  # synop targets: cycles one neuron update occupies a core
    clock_hz: float  # synop targets: core clock, Hz
    cores: int  # synop targets: cores the work spreads over
    sources: dict[str, str]  # field -> citation, for every numeric field that is not 0
    sync_per_timestep_s: float = 0.0  # synop targets: barrier sync added to every timestep, s

    def __post_init__(self):
        if self.spike_compute not in SPIKE_COMPUTE:
            raise EdgespikeError(f"target {self.name!r}: spike_compute must be one of {', '.join(SPIKE_COMPUTE)}, got {self.spike_compute!r}")
        if len(self.sram_capacity_bytes) != len(self.sram_byte_j):
            raise EdgespikeError(f"target {self.name!r}: sram_capacity_bytes and sram_byte_j need one entry per tier")
        for spec in dataclasses.fields(self):
            value = getattr(self, spec.name)
            values = value if isinstance(value, tuple) else (value,)
            if spec.name in ("name", "summary", "spike_compute", "precision", "memory", "sources"):
                continue
            for v in values:
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                    raise EdgespikeError(f"target {self.name!r}: {spec.name} must be a number, got {v!r}; fix the target file")
                if v < 0:
                    raise EdgespikeError(f"target {self.name!r}: {spec.name} cannot be negative, got {v!r}")
            if any(values) and not str(self.sources.get(spec.name, "")).strip():
                raise EdgespikeError(f"target {self.name!r}: no source for {spec.name}; every constant needs a citation under [sources]")

    def byte_j(self, working_set: float) -> float:
        """J per byte read for a working set of ``working_set`` bytes: the smallest tier holding it."""
        for capacity, energy in zip(self.sram_capacity_bytes, self.sram_byte_j):
            if working_set <= capacity:
                return energy
        return self.dram_byte_j


TARGET_DEFAULTS = {
    "spike_j": 0.0, "neuron_update_j": 0.0, "memory": True, "sram_capacity_bytes": (), "sram_byte_j": (),
    "dram_byte_j": 0.0, "peak_ops_per_s": 0.0, "bandwidth_bytes_per_s": 0.0, "cache_bytes": 0,
    "cache_bandwidth_bytes_per_s": 0.0, "static_power_w": 0.0, "timestep_cycles_per_synop": 0.0,
    "timestep_cycles_per_update": 0.0, "clock_hz": 0.0, "cores": 0, "sync_per_timestep_s": 0.0,
}  # fmt: skip


def target_names() -> list[str]:
    files = resources.files("edgespike.profile").joinpath("targets")
    return sorted([p.name.removesuffix(".toml") for p in files.iterdir() if p.name.endswith(".toml")] + [HOST])


def load_target(name_or_path: str, chip_model: str = "edgespike") -> Target:
    """A target by name (``target_names()``), ``host`` (measured now), or a .toml path; a target with a ``chip``
    takes its per-event costs from ``CHIP_MODELS[chip_model]``."""
    if chip_model not in CHIP_MODELS:
        raise EdgespikeError(f"unknown chip model {chip_model!r}; choose one of {', '.join(CHIP_MODELS)}")
    if name_or_path == HOST:
        if chip_model != "edgespike":
            raise EdgespikeError(f"--chip-model {chip_model} applies to targets with a chip (neuronchip); {HOST} has none: drop one")
        return measure_host()
        return measure_host()
    path = Path(name_or_path)
    if path.suffix == ".toml":
        if not path.is_file():
            raise EdgespikeError(f"target file {path} does not exist")
        try:
            text, origin = path.read_text(encoding="utf-8"), str(path)
        except UnicodeDecodeError as err:
            raise EdgespikeError(f"target file {path} is not UTF-8 text ({err.reason} at byte {err.start}); save it as UTF-8 TOML") from None
    elif name_or_path in target_names():
        text = resources.files("edgespike.profile").joinpath("targets", f"{name_or_path}.toml").read_text()
        origin = f"target {name_or_path!r}"
    else:
        raise EdgespikeError(f"unknown target {name_or_path!r}; choose from {', '.join(target_names())} or pass a .toml file")
    try:
        data = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, RecursionError) as err:
        raise EdgespikeError(f"{origin} is not valid TOML: {str(err)[:200]}") from None
    return _from_dict(data, origin, chip_model)


# non-numeric fields -> (check, what they must be); numbers are checked by Target itself
FIELD_KINDS = {
    "name": (lambda v: isinstance(v, str) and v != "", "a non-empty string"),
    "summary": (lambda v: isinstance(v, str), "a string"),
    "spike_compute": (lambda v: isinstance(v, str), "a string"),
    "precision": (lambda v: isinstance(v, str), "a string"),
    "memory": (lambda v: isinstance(v, bool), "true or false"),
    "sram_capacity_bytes": (lambda v: isinstance(v, list), "an array of numbers"),
    "sram_byte_j": (lambda v: isinstance(v, list), "an array of numbers"),
    "sources": (lambda v: isinstance(v, dict) and all(isinstance(x, str) for x in v.values()), "a table of field -> citation"),
    "chip": (lambda v: isinstance(v, str), "the name of a chip preset"),
}


def _from_dict(data: dict, origin: str, chip_model: str = "edgespike") -> Target:
    data = dict(data)
    for key, (check, what) in FIELD_KINDS.items():
        if key in data and not check(data[key]):
            raise EdgespikeError(f"{origin}: {key} must be {what}, got {str(data[key])[:60]!r}; fix the target file")
    chip = data.pop("chip", None)
    if chip is None and chip_model != "edgespike":
        raise EdgespikeError(f"--chip-model {chip_model} applies to targets with a chip (neuronchip); {origin} has none: "
                             "profile it without --chip-model")
    if chip is not None:  # a neuromorphic target takes its per-event costs from a chip model
        from_chip = CHIP_MODELS[chip_model](chip)
        data = {**from_chip, **data, "sources": {**from_chip["sources"], **data.get("sources", {})}}
    names = {f.name for f in dataclasses.fields(Target)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise EdgespikeError(f"{origin}: unknown keys {unknown}; known keys: {sorted(names)}")
    data = {**TARGET_DEFAULTS, **data}
    missing = sorted(names - set(data))
    if missing:
        raise EdgespikeError(f"{origin}: missing {missing}; every target states them (with a source each)")
    for key in ("sram_capacity_bytes", "sram_byte_j"):
        data[key] = tuple(data[key])
    return Target(**data)


def _chip_fields(chip_name: str) -> dict:
    from edgespike.chip import load_chip

    chip = load_chip(chip_name)
    fields = {
        "add_j": chip.synop_energy_j, "neuron_update_j": chip.neuron_update_energy_j, "spike_j": chip.spike_local_energy_j,
        "static_power_w": chip.static_power_w, "timestep_cycles_per_synop": chip.synop_cycles,
        "timestep_cycles_per_update": chip.neuron_update_cycles, "clock_hz": chip.clock_hz, "cores": chip.cores,
    }  # fmt: skip
    origin = {"add_j": "synop_energy_j", "neuron_update_j": "neuron_update_energy_j", "spike_j": "spike_local_energy_j",
              "timestep_cycles_per_synop": "synop_cycles", "timestep_cycles_per_update": "neuron_update_cycles"}  # fmt: skip
    sources = {key: f"edgespike/chips/{chip_name}.toml {origin.get(key, key)}: {chip.sources[origin.get(key, key)]}" for key in fields}
    return {**fields, "sources": sources}


def _sanafe_fields(chip_name: str) -> dict:
    """The chip file's fields with the per-event costs SANA-FE's Loihi architecture holds (synaptic event, neuron
    update, spike message, per-step barrier sync); what SANA-FE does not model (static power) stays the chip file's."""
    from edgespike.runtimes.neuronchip.sanafe import LOIHI_LABEL, loihi_costs

    if chip_name != "loihi":
        raise EdgespikeError(f"--chip-model sanafe holds {LOIHI_LABEL}, not chip {chip_name!r}; profile a loihi target "
                             "or use --chip-model edgespike")  # fmt: skip
    fields = _chip_fields(chip_name)
    cost = loihi_costs()
    clock = fields["clock_hz"]
    sanafe = {"add_j": cost["synop_j"], "neuron_update_j": cost["update_j"], "spike_j": cost["spike_j"],
              "timestep_cycles_per_synop": (cost["synop_s"][0] * clock, cost["synop_s"][1] + " x clock_hz"),
              "timestep_cycles_per_update": (cost["update_s"][0] * clock, cost["update_s"][1] + " x clock_hz"),
              "sync_per_timestep_s": cost["sync_s"]}  # fmt: skip
    return {**fields, **{key: value for key, (value, _) in sanafe.items()},
            "sources": {**fields["sources"], **{key: source for key, (_, source) in sanafe.items()}}}


CHIP_MODELS = {"edgespike": _chip_fields, "sanafe": _sanafe_fields}  # --chip-model: where a chip target's per-event costs come from


@functools.cache
def measure_host() -> Target:
    """This machine: fp32 matmul peak and STREAM-triad bandwidth (DRAM and last-level cache), measured."""
    a = np.random.default_rng(0).random((1024, 1024), dtype=np.float32)
    a @ a
    start = time.perf_counter()
    for _ in range(4):
        a @ a
    peak = 4 * 2 * 1024**3 / (time.perf_counter() - start)
    dram = _triad(8 << 20)  # 3 x 64 MB arrays: past any cache
    cache_bytes = _last_level_cache()
    cache = _triad(max(1, cache_bytes // 4 // 4 // 4))  # arrays filling a quarter of the cache
    source = "measured on this machine by edgespike.profile.targets.measure_host"
    return Target(
        name=HOST, summary="this machine (measured: fp32 matmul peak, STREAM-triad bandwidth)", spike_compute="event",
        precision="fp32", mac_j=0.0, add_j=0.0, neuron_update_j=0.0, spike_j=0.0, memory=False,
        sram_capacity_bytes=(), sram_byte_j=(), dram_byte_j=0.0, peak_ops_per_s=peak, bandwidth_bytes_per_s=dram,
        cache_bytes=cache_bytes, cache_bandwidth_bytes_per_s=cache, static_power_w=0.0, timestep_cycles_per_synop=0.0,
        timestep_cycles_per_update=0.0, clock_hz=0.0, cores=0,
        sources={"peak_ops_per_s": source + " (numpy fp32 1024^3 matmul)", "bandwidth_bytes_per_s": source + " (triad, 3 x 64 MB)",
                 "cache_bytes": "/sys/devices/system/cpu/cpu0/cache (largest level)",
                 "cache_bandwidth_bytes_per_s": source + " (triad within the last-level cache)"},
    )  # fmt: skip


def _triad(n: int) -> float:
    """Bytes/s of a = b + s * c over float32 arrays of ``n`` elements (best of 5). numpy does it in
    two passes (c -> a, then a + b -> a): five array transfers, all counted."""
    b, c = np.ones(n, np.float32), np.ones(n, np.float32)
    a = np.empty_like(b)
    best = math.inf
    for _ in range(5):
        start = time.perf_counter()
        np.multiply(c, np.float32(3.0), out=a)
        np.add(a, b, out=a)
        best = min(best, time.perf_counter() - start)
    return 4 * 5 * n / best


def _last_level_cache() -> int:
    sizes = []
    for index in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            text = (index / "size").read_text().strip()
        except OSError:
            continue
        scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1], 1)
        sizes.append(int(text.rstrip("KMG")) * scale)
    return max(sizes, default=32 << 20)
