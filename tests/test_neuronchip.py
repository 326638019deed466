"""NeuronChip: mapping, the event-driven fixed-point simulator (hand-computed), bundles of every
family, bad input, and agreement of the demo model with eager float."""

import json
import shutil

import numpy as np
import pytest

from edgespike import models
from edgespike.capture import decode_step
from edgespike.chip import Chip, load_chip
from edgespike.errors import EdgespikeError
from edgespike.exporters import ExportOptions, export
from edgespike.exporters.neuronchip import LayerSpec, NeuronChipExporter, place, time_weighting
from edgespike.nn import LIF
from edgespike.runtimes import load
from edgespike.runtimes.eager import EagerSession
from edgespike.runtimes.neuronchip.simulator import ChipLayer, LayerSim, Ledger, LifParams

FAMILIES = ("pulse", "spikingbrain", "evospikenet", "neurogen", "ultimate")


def toy_chip(**changes) -> Chip:
    """4 cores of 2 neurons and 2 bytes of synapses (8 ternary weights), 2 tiles wide, round numbers."""
    fields = dict(
        name="toy", cores=4, neurons_per_core=2, synapse_bytes_per_core=2, weight_bits=2, membrane_bits=16,
        clock_hz=1e6, timestep_s=0.0, mesh_width=2, hop_latency_s=1e-6, hop_energy_j=1e-12,
        spike_local_latency_s=0.5e-6, spike_local_energy_j=0.5e-12, synop_energy_j=1e-12, neuron_update_energy_j=2e-12,
        host_link_bandwidth_bps=1e6, host_link_latency_s=1e-6, host_link_energy_per_bit_j=1e-12, static_power_w=1e-6,
        cores_per_tile=1, synop_cycles=1, neuron_update_cycles=2,
    )  # fmt: skip
    fields.update(changes)
    numeric = [k for k in fields if k != "name"]
    return Chip(sources={k: "test" for k in numeric}, **fields)


def write_chip(path, **changes):
    """The Loihi preset with ``changes``, as a chip .toml file."""
    data = load_chip("loihi").to_dict() | changes
    lines = [f'{k} = "{v}"' if isinstance(v, str) else f"{k} = {v!r}" for k, v in data.items() if k != "sources"]
    path.write_text("\n".join(lines + ["[sources]"] + [f'{k} = "{v}"' for k, v in data["sources"].items()]) + "\n")
    return path


def test_hand_computed_layer_mapping_cycles_spikes_energy():
    chip = toy_chip()
    # fan-in 4 at 2 bits = 1 byte per neuron: 2 neurons per core -> 3 neurons on cores 0 and 1
    slices = place([LayerSpec("fc", fan_in=4, neurons=3, source="host")], chip)["fc"]
    assert [(s.core, s.start, s.stop) for s in slices] == [(0, 0, 2), (1, 2, 3)]
    codes = np.array([[1, -1, 0, 1], [0, 1, 1, -1], [-1, 0, 1, 1]], dtype=np.int8)
    layer = ChipLayer("fc", 0, codes, np.full(3, 0.5, np.float32), None, [(0, 0, 2), (1, 2, 3)], None)
    spikes = np.array([[[1, 0, 1, 0]], [[0, 0, 0, 1]]], dtype=np.float32)  # [T=2, B=1, 4]
    ledger, sim = Ledger(chip), LayerSim(layer, chip)
    ledger.open(layer, (0,), 2)
    acc = sim.accumulate(spikes, ledger, new_stage=True)
    assert acc[:, 0].tolist() == [[1, 1, 0], [1, -1, 1]]
    assert sim.readout(acc)[:, 0].tolist() == [[0.5, 0.5, 0.0], [0.5, -0.5, 0.5]]
    stats = ledger.stats()
    # synops: 2 active inputs x 3 neurons + 1 x 3; core cycles t0: core0 2*2*1 + 2*2 = 8, core1 2*1 + 1*2 = 4;
    # t1: core0 1*2 + 4 = 6, core1 1 + 2 = 3 -> slowest 8 + 6
    assert (stats["synops"], stats["neuron_updates"], stats["cycles"]) == (9, 6, 14)
    # each active input goes to both cores: 3 inputs x 2 messages; core 1 is one hop from the host port at core 0
    assert (stats["noc_spikes"], stats["host_link_spikes_in"]) == (6, 3)
    assert (stats["host_link_bits_in"], stats["host_link_bits_out"]) == (2 * 4, 2 * 3 * 4)  # sums need 4 bits
    # per step: cycles / 1 MHz + 0.5 us local + 1 hop x 1 us; link: 1 us + 8 bits and 1 us + 24 bits at 1 Mb/s
    assert stats["latency_s"] == pytest.approx((8 + 1.5) * 1e-6 + (6 + 1.5) * 1e-6 + 9e-6 + 25e-6, rel=1e-12)
    energy = stats["energy_breakdown_j"]
    assert energy["synops"] == pytest.approx(9e-12) and energy["neuron_updates"] == pytest.approx(12e-12)
    assert energy["spikes_routed"] == pytest.approx(3 * (0.5e-12 + 1.5e-12))
    assert energy["host_link"] == pytest.approx(32e-12) and energy["static"] == pytest.approx(1e-6 * 51e-6)
    assert stats["energy_j"] == pytest.approx(110e-12)


@pytest.mark.parametrize("weighting, bits_out", [("chip", 4 * 6), ("host", 2 * 4 * 4)])
def test_hand_computed_coded_layer_sums_groups_and_weights_timesteps(weighting, bits_out):
    """A W8ASpike-style layer: 2 neurons, 4 inputs in 2 groups of 2, bitwise inputs over T = 2 steps."""
    chip = toy_chip(weight_bits=8, synapse_bytes_per_core=8)
    spec = LayerSpec("fc", fan_in=4, neurons=2, source="fc.spikes", signed=True, bits=8, group=2, timesteps=2)
    # 8-bit codes: 4 bytes per neuron, 2 compartments per neuron: one neuron per 2-neuron core
    assert [(s.core, s.start, s.stop) for s in place([spec], chip)["fc"]] == [(0, 0, 1), (1, 1, 2)]
    codes = np.array([[3, -1, 0, 2], [1, 1, -2, 0]], dtype=np.int8)
    scale = np.array([[0.5, 0.25], [1.0, 2.0]], dtype=np.float32)  # [neurons, groups]
    layer = ChipLayer("fc", 0, codes, scale, None, [(0, 0, 1), (1, 1, 2)], None, signed_input=True,
                      group_size=2, timesteps=2, time_weighting=weighting)
    spikes = np.array([[[1, 0, -1, 1]], [[0, 1, 1, -1]]], dtype=np.float32)  # x_int = 2 s[0] + s[1] = [2, 1, -1, 1]
    ledger, sim = Ledger(chip), LayerSim(layer, chip)
    ledger.open(layer, (0,), 2)
    weighted = sim.accumulate_coded(spikes, ledger, new_stage=True)
    # neuron 0: group 0: 3*2 - 1*1 = 5, group 1: 0*-1 + 2*1 = 2; neuron 1: 1*2 + 1*1 = 3, -2*-1 + 0 = 2
    assert weighted[0].tolist() == [[5, 2], [3, 2]]
    # y = vth * sum_g s_g A_g: (5*0.5 + 2*0.25) * 0.5, (3*1 + 2*2) * 0.5
    assert sim.readout_coded(weighted, np.array([0.5], np.float32))[0].tolist() == [1.5, 3.5]
    stats = ledger.stats()
    # 3 active inputs per step x 2 neurons; one update per compartment (2 x 2) per step
    assert (stats["synops"], stats["neuron_updates"]) == (12, 8)
    # in: 4 signed inputs x 2 steps x 2 bits. out, |acc_g| <= 2 * 3 = 6: once A_g (|A_g| <= 6 * 3: 6 bits) for
    # 4 compartments, or every step's sum (4 bits) twice
    assert (stats["host_link_bits_in"], stats["host_link_bits_out"]) == (16, bits_out)


def test_the_shift_add_runs_on_chip_while_the_membrane_holds_it():
    spec = LayerSpec("fc", fan_in=4, neurons=2, source="fc.spikes", signed=True, bits=8, group=2, timesteps=2)
    assert time_weighting(spec, 3, toy_chip(membrane_bits=8)) == "chip"  # 2 * 3 * (2^2 - 1) = 18 <= 127
    spec.timesteps = 8
    assert time_weighting(spec, 3, toy_chip(membrane_bits=8)) == "host"  # 6 * 255 = 1530 > 127
    assert time_weighting(spec, 3, toy_chip(membrane_bits=16)) == "chip"


def test_int8_spike_fed_linears_map_on_8_bit_synapses_and_2_bit_chips_refuse_them(tmp_path):
    step = decode_step(models.create("pulse", "tiny"), weights="int8")
    loihi, truenorth = tmp_path / "loihi", tmp_path / "truenorth"
    for chip, staging in (("loihi", loihi), ("truenorth", truenorth)):
        staging.mkdir()
        NeuronChipExporter().lower(step, ExportOptions(precision="fp32", chip=chip), staging)
    mapped = json.loads((loihi / "chip.json").read_text())
    assert mapped["layers"] and {r["weight_bits"] for r in mapped["layers"]} == {8}
    assert all(r["groups"] == 1 and r["coded_input"] is None for r in mapped["layers"])
    assert any(r["lif"] for r in mapped["layers"])  # the LIFs they drive run on the same neurons
    refused = json.loads((truenorth / "chip.json").read_text())
    reasons = {h["module"]: h["reason"] for h in refused["host"]}
    assert refused["layers"] == []
    for record in mapped["layers"]:
        assert "8-bit weight codes" in reasons[record["name"]] and "weight_bits >= 8" in reasons[record["name"]]
        if record["lif"]:  # its LIF falls back to the host with it
            assert record["lif"]["module"] in reasons


def test_fixed_point_lif_leaks_by_shift_and_resets_by_subtraction():
    chip = toy_chip()
    # beta = 1 - 2048/4096 = 0.5; threshold 1.5 with 2 fractional bits -> 6 LSBs, one input spike = 4 LSBs
    lif = LifParams(frac_bits=2, decay=2048, decay_bits=12, threshold=1.5, reset="subtract")
    layer = ChipLayer("fc", 0, np.array([[1]], np.int8), np.ones(1, np.float32), None, [(0, 0, 1)], None, lif=lif)
    sim, ledger = LayerSim(layer, chip), Ledger(chip)
    ledger.open(layer, (0,), 3)
    acc = sim.accumulate(np.ones((3, 1, 1), np.float32), ledger, True)
    spikes, v = sim.lif(acc, np.zeros((1, 1), np.int64), ledger)
    # v: 0 + 4 = 4; 4 - 2 + 4 = 6 >= 6 fires -> 0; 0 + 4 = 4 (float: 1, 1.5 fires, 1)
    assert spikes[:, 0, 0].tolist() == [0, 1, 0] and v.tolist() == [[4]]
    assert ledger.stats()["chip_spikes"] == 1


def test_model_too_large_says_by_how_much_and_what_fits(tmp_path):
    with pytest.raises(EdgespikeError, match=r"needs 10 cores, the chip has 4 \(6 short\).*cores >= 10.*3x"):
        place([LayerSpec("fc", fan_in=4, neurons=20, source="host")], toy_chip())
    path = write_chip(tmp_path / "small.toml", cores=2, mesh_width=1)
    step = decode_step(models.create("pulse", "tiny"))
    with pytest.raises(EdgespikeError, match="needs 10 cores, the chip has 2 \\(8 short\\)"):
        NeuronChipExporter().lower(step, ExportOptions(precision="fp32", chip=str(path)), tmp_path)


def test_impossible_chip_file_is_refused_before_mapping(tmp_path):
    path = write_chip(tmp_path / "bad.toml", synop_energy_j=-1.0)
    step = decode_step(models.create("pulse", "tiny"))
    with pytest.raises(EdgespikeError, match="synop_energy_j cannot be negative"):
        NeuronChipExporter().lower(step, ExportOptions(precision="fp32", chip=str(path)), tmp_path)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    root = tmp_path_factory.mktemp("neuronchip")
    return {family: (export(models.create(family, "tiny"), "neuronchip", root / family).path) for family in FAMILIES}


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_compiles_and_runs(bundles, family):
    model = models.create(family, "tiny")  # the LIF calls' shapes, not values, are compared
    session = load(bundles[family])
    mapping = json.loads((bundles[family] / "chip.json").read_text())
    eager = EagerSession(model)
    eager_spikes = []
    for module in eager.step_module.model.modules():
        if isinstance(module, LIF):
            module.register_forward_hook(lambda _m, _i, out: eager_spikes.append(out[0].shape))
    logits = session.step(5)
    eager.step(5)
    assert logits.shape == (model.config.vocab_size,) and np.isfinite(logits).all()
    assert [s.shape for s in session.last_spikes] == eager_spikes
    stats = session.stats
    assert stats["energy_j"] == pytest.approx(sum(stats["energy_breakdown_j"].values()))
    # host spike input, from the mapping alone: one bitmap per stage fed by the host, fan-in x T (x2 signed)
    T, first = model.config.spike.timesteps, {}
    for layer in mapping["layers"]:
        if layer["source_layer"] is None:
            first.setdefault(layer["stage"], layer["fan_in"] * T * (2 if layer["signed_input"] else 1))
    assert stats["host_link_bits_in"] == sum(first.values())
    listed = {h["module"] for h in mapping["host"]}
    if mapping["layers"]:
        assert stats["synops"] > 0 and stats["latency_s"] > 0
        assert not listed & {layer["name"] for layer in mapping["layers"]}
    else:  # neurogen: float sparse synapses stay on the host, and the mapping says so
        assert family == "neurogen" and stats["synops"] == 0
        assert any("Synapses" == h["type"] for h in mapping["host"])


def test_a_chip_sessions_own_state_given_to_a_fresh_one_continues_it(bundles):
    """set_state round trip: the host state and the chip's integer membranes (given in membrane
    units) carry over exactly, so validation's state-synced conversion record starts from it."""
    session, fresh = load(bundles["pulse"]), load(bundles["pulse"])
    for token in (5, 17, 3, 99):
        session.step(token)
    state = {name: value.numpy().copy() for name, value in session.step_module.state().items()}
    fresh.set_state(state)
    assert np.array_equal(fresh.step(42), session.step(42))
    fresh.reset()
    assert not np.array_equal(fresh.step(42), session.step(42))


def test_bundle_edited_after_export_fails_its_checksum(bundles, tmp_path):
    edited = tmp_path / "edited"
    shutil.copytree(bundles["pulse"], edited)
    mapping = json.loads((edited / "chip.json").read_text())
    mapping["layers"][0]["cores"][0]["core"] = 7
    (edited / "chip.json").write_text(json.dumps(mapping))
    with pytest.raises(EdgespikeError, match="chip.json does not match its sha256"):
        load(edited)


def test_demo_agrees_with_eager_on_held_out_text(tmp_path):
    from edgespike.data import encode, read_corpus, split_corpus

    model = models.load("demo")
    session = load(export(model, "neuronchip", tmp_path / "demo").path)
    eager = EagerSession(model)
    recorded = []
    for module in eager.step_module.model.modules():
        if isinstance(module, LIF):
            module.register_forward_hook(lambda _m, _i, out: recorded.append(out[0].numpy().copy()))
    tokens = encode(model.tokenizer, split_corpus(read_corpus())[1][:4000])[:24].tolist()
    agree = total = top1 = 0
    for token in tokens:
        recorded.clear()
        ours, reference = session.step(token), eager.step(token)
        agree += sum(int((a == b).sum()) for a, b in zip(session.last_spikes, recorded))
        total += sum(a.size for a in recorded)
        top1 += int(ours.argmax() == reference.argmax())
    # measured over 128 held-out tokens: 98.3% of spikes agree, top-1 83%
    assert agree / total > 0.95 and top1 / len(tokens) >= 0.7
    assert session.stats["max_layer_latency_s"] < 1e-3  # the seeds' "< 1 ms per layer", on Loihi-class costs
