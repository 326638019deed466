"""A neuromorphic chip described as data: cores, memories, precisions and per-event costs.

The NeuronChip exporter maps a model onto a :class:`Chip`, its simulator charges every event
at the chip's costs, and the profiler reads the same figures. Presets live as TOML files in
``edgespike/chips/<name>.toml``; every numeric value there carries its source in a
``[sources]`` table (the style of SANA-FE's architecture files, which model exactly these
per-event costs). A chip is a 2-D mesh of tiles, ``cores_per_tile`` cores per tile:

    spike routed from core a to core b:  energy = spike_local_energy_j + hops(a, b) * hop_energy_j
                                         latency = spike_local_latency_s + hops(a, b) * hop_latency_s
    one core, one timestep:              cycles = synops * synop_cycles + neurons * neuron_update_cycles
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from edgespike.errors import EdgespikeError

CHIPS: tuple[str, ...] = ("loihi", "truenorth")


class ChipError(EdgespikeError, ValueError):
    """A chip description that cannot describe hardware; the message names the key and the fix."""


@dataclass(frozen=True)
class Chip:
    """One neuromorphic chip; units in a comment per field."""

    name: str
    cores: int  # neuromorphic cores on the chip
    neurons_per_core: int  # neurons (compartments) one core updates
    synapse_bytes_per_core: int  # synapse memory per core, bytes
    weight_bits: int  # widest synaptic weight a core stores, bits (signed); a layer's codes take their own width
    membrane_bits: int  # fixed-point membrane width, bits (signed)
    clock_hz: float  # time base the cycle counts use, Hz
    timestep_s: float  # minimum wall time of one algorithmic timestep (a tick), s; 0 = self-timed
    mesh_width: int  # tiles on a side (x) of the 2-D mesh NoC
    hop_latency_s: float  # one router-to-router hop, s
    hop_energy_j: float  # one router-to-router hop, J
    spike_local_latency_s: float  # spike delivered within a tile, s
    spike_local_energy_j: float  # spike delivered within a tile, J
    synop_energy_j: float  # per synaptic operation (one input spike x one fan-out weight), J
    neuron_update_energy_j: float  # per neuron per timestep, J
    host_link_bandwidth_bps: float  # chip <-> host link, bits per second
    host_link_latency_s: float  # per transfer on the host link, s
    host_link_energy_per_bit_j: float  # J per bit moved over the host link
    static_power_w: float  # leakage + clock of the whole chip, W
    sources: dict[str, str]  # field name -> citation for every numeric constant
    cores_per_tile: int = 1  # cores sharing one mesh router
    synop_cycles: int = 1  # cycles one synaptic operation occupies a core
    neuron_update_cycles: int = 1  # cycles one neuron update occupies a core

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise ChipError("chip name must be a non-empty string; set `name = \"...\"` in the chip file")
        for spec in dataclasses.fields(self):
            if spec.name in ("name", "sources"):
                continue
            value = getattr(self, spec.name)
            integral = spec.type == "int"
            if isinstance(value, bool) or not isinstance(value, (int, float)) or (integral and not isinstance(value, int)):
                kind = "an integer" if integral else "a number"
                raise ChipError(f"chip {self.name!r}: {spec.name} must be {kind}, got {value!r}; fix it in the chip file")
            if not math.isfinite(value):
                raise ChipError(f"chip {self.name!r}: {spec.name} must be finite, got {value!r}")
            positive = integral or spec.name in _POSITIVE
            if positive and value <= 0:
                raise ChipError(f"chip {self.name!r}: {spec.name} must be > 0, got {value!r}; a chip needs at least one of each")
            if value < 0:
                raise ChipError(f"chip {self.name!r}: {spec.name} cannot be negative, got {value!r}; costs and times are >= 0")
        if not 2 <= self.weight_bits <= 8:
            raise ChipError(f"chip {self.name!r}: weight_bits must be in [2, 8] (ternary needs 2, int8 8), got {self.weight_bits}")
        if not 8 <= self.membrane_bits <= 32:
            raise ChipError(f"chip {self.name!r}: membrane_bits must be in [8, 32], got {self.membrane_bits}")
        if self.mesh_width > self.tiles:
            raise ChipError(f"chip {self.name!r}: mesh_width {self.mesh_width} exceeds the {self.tiles} tiles; use <= {self.tiles}")
        numeric = {f.name for f in dataclasses.fields(self)} - {"name", "sources"}
        if not isinstance(self.sources, dict):
            raise ChipError(f"chip {self.name!r}: sources must be a table of field -> citation")
        unknown = sorted(set(self.sources) - numeric)
        if unknown:
            raise ChipError(f"chip {self.name!r}: sources names unknown fields {unknown}; use field names of Chip")
        missing = sorted(name for name in numeric if not str(self.sources.get(name, "")).strip())
        if missing:
            raise ChipError(f"chip {self.name!r}: no source for {missing}; every constant needs a citation under [sources]")

    @property
    def tiles(self) -> int:
        return -(-self.cores // self.cores_per_tile)

    def synapses_per_core(self, bits: int) -> int:
        """Weights of ``bits`` bits one core stores (2: ternary, 8: int8; at most ``weight_bits``)."""
        return self.synapse_bytes_per_core * 8 // bits

    @property
    def membrane_limit(self) -> int:
        """Largest membrane value the signed ``membrane_bits`` register holds."""
        return (1 << (self.membrane_bits - 1)) - 1

    def position(self, core: int) -> tuple[int, int]:
        """(x, y) of a core's tile on the mesh."""
        tile = core // self.cores_per_tile
        return tile % self.mesh_width, tile // self.mesh_width

    def hops(self, src: int, dst: int) -> int:
        """Router-to-router hops (dimension-order routing) from core ``src`` to core ``dst``."""
        (x0, y0), (x1, y1) = self.position(src), self.position(dst)
        return abs(x0 - x1) + abs(y0 - y1)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Chip":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ChipError(f"chip description has unknown keys {unknown}; known keys: {sorted(names)}")
        required = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING]
        missing = [name for name in required if name not in data]
        if missing:
            raise ChipError(f"chip description lacks {missing}; add them (with a source each) to the chip file")
        return cls(**data)

    def replace(self, **changes) -> "Chip":
        return dataclasses.replace(self, **changes)


_POSITIVE = {"clock_hz", "host_link_bandwidth_bps"}


def load_chip(name_or_path: str | Path = "loihi") -> Chip:
    """A preset by name (see :data:`CHIPS`) or a chip ``.toml`` file by path."""
    path = Path(name_or_path)
    if str(name_or_path) in CHIPS:
        text = resources.files("edgespike").joinpath("chips", f"{name_or_path}.toml").read_text()
        origin = f"preset {name_or_path!r}"
    elif path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise ChipError(f"chip file {path} does not exist; pass a preset ({', '.join(CHIPS)}) or a .toml path")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as err:
            raise ChipError(f"chip file {path} is not UTF-8 text ({err.reason} at byte {err.start}); save it as UTF-8 TOML") from None
        origin = str(path)
    else:
        raise ChipError(f"unknown chip {str(name_or_path)!r}; choose a preset ({', '.join(CHIPS)}) or pass a .toml path")
    try:
        data = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, RecursionError) as err:
        raise ChipError(f"chip {origin} is not valid TOML: {str(err)[:200]}") from None
    return Chip.from_dict(data)
