"""Chip descriptions: presets load, round-trip through TOML, and impossible values are rejected."""

import dataclasses

import pytest

from edgespike.chip import CHIPS, Chip, load_chip
from edgespike.errors import EdgespikeError


def write_toml(path, data):
    """A chip dict as TOML (flat keys + a [sources] table), the preset files' layout."""
    lines = [f"{key} = {value!r}" if not isinstance(value, str) else f'{key} = "{value}"'
             for key, value in data.items() if key != "sources"]
    lines.append("[sources]")
    lines += [f'{key} = "{value}"' for key, value in data.get("sources", {}).items()]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("name", CHIPS)
def test_preset_loads_with_a_source_for_every_constant(name):
    chip = load_chip(name)
    numeric = {f.name for f in dataclasses.fields(Chip)} - {"name", "sources"}
    assert chip.name == name
    assert set(chip.sources) == numeric
    assert chip.tiles * chip.cores_per_tile >= chip.cores


def test_loihi_preset_carries_the_published_figures():
    chip = load_chip("loihi")
    assert (chip.cores, chip.neurons_per_core) == (128, 1024)
    # up to 8-bit synaptic weights (Davies et al. 2018; Lava's weightutils), ternary ones packed 4x denser
    assert chip.weight_bits == 8 and chip.synapses_per_core(2) == 4 * chip.synapses_per_core(8) == 4 * 131072
    truenorth = load_chip("truenorth")
    assert truenorth.cores * truenorth.neurons_per_core == 1 << 20
    assert truenorth.timestep_s == pytest.approx(1e-3)
    assert truenorth.weight_bits == 2  # binary crossbar: ternary via two axon types, nothing wider


def test_loihi_synop_and_spike_message_are_sanafe_validated_figures():
    """loihi.toml's header: these two constants follow SANA-FE's arch/loihi.yaml (validated against measured Loihi)."""
    pytest.importorskip("sanafe")
    from edgespike.runtimes.neuronchip.sanafe import architecture

    chip = load_chip("loihi")
    arch = architecture(chip, "loihi", inputs=1)
    core = arch.core(0)
    synapse = next(unit for unit in core.pipeline_hw if unit.name == arch.synapse).model_info.model_attributes
    assert chip.synop_energy_j == synapse["energy_process_spike"]
    assert chip.spike_local_energy_j == core.axon_out[0].metrics.energy_message_out


@pytest.mark.parametrize("name", CHIPS)
def test_round_trip_through_a_toml_file(tmp_path, name):
    chip = load_chip(name)
    again = load_chip(write_toml(tmp_path / f"{name}.toml", chip.to_dict()))
    assert again == chip
    assert Chip.from_dict(chip.to_dict()) == chip


def test_mesh_hops_follow_tile_positions():
    chip = load_chip("loihi")  # 4 cores per tile, 8 tiles wide
    assert chip.hops(0, 3) == 0  # same tile
    assert chip.hops(0, 4) == 1  # next tile east
    assert chip.hops(0, 32) == 1  # next row
    assert chip.hops(0, 127) == 7 + 3


@pytest.mark.parametrize(
    "change, words",
    [
        ({"cores": 0}, "cores must be > 0"),
        ({"synop_energy_j": -1e-12}, "synop_energy_j cannot be negative"),
        ({"host_link_bandwidth_bps": 0.0}, "host_link_bandwidth_bps must be > 0"),
        ({"neurons_per_core": 2.5}, "neurons_per_core must be an integer"),
        ({"hop_energy_j": "cheap"}, "hop_energy_j must be a number"),
        ({"weight_bits": 1}, "weight_bits must be in [2, 8]"),
        ({"mesh_width": 1000}, "mesh_width 1000 exceeds"),
    ],
)
def test_impossible_values_are_rejected_by_name(tmp_path, change, words):
    data = {**load_chip("loihi").to_dict(), **change}
    with pytest.raises(EdgespikeError, match=words.replace("[", r"\[").replace("]", r"\]")):
        load_chip(write_toml(tmp_path / "bad.toml", data))


def test_missing_unknown_and_unsourced_keys_are_named(tmp_path):
    base = load_chip("loihi").to_dict()
    missing = {k: v for k, v in base.items() if k != "clock_hz"}
    with pytest.raises(EdgespikeError, match="clock_hz"):
        load_chip(write_toml(tmp_path / "a.toml", missing))
    with pytest.raises(EdgespikeError, match="unknown keys.*warp_drive"):
        load_chip(write_toml(tmp_path / "b.toml", {**base, "warp_drive": 1}))
    unsourced = {**base, "sources": {k: v for k, v in base["sources"].items() if k != "static_power_w"}}
    with pytest.raises(EdgespikeError, match="no source for.*static_power_w"):
        load_chip(write_toml(tmp_path / "c.toml", unsourced))


def test_unknown_preset_and_missing_file_say_what_exists(tmp_path):
    with pytest.raises(EdgespikeError, match="loihi, truenorth"):
        load_chip("spinnaker")
    with pytest.raises(EdgespikeError, match="does not exist"):
        load_chip(tmp_path / "nowhere.toml")
    (tmp_path / "broken.toml").write_text("cores = = 3\n")
    with pytest.raises(EdgespikeError, match="not valid TOML"):
        load_chip(tmp_path / "broken.toml")
