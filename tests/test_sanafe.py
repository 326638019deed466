"""The sanafe runtime: a hand-built two-layer network against the per-event costs of SANA-FE's Loihi file,
the demo's chip export on SANA-FE beside edgespike's simulator, and bad input."""

import sys

import numpy as np
import pytest

from edgespike import models
from edgespike.chip import load_chip
from edgespike.errors import EdgespikeError
from edgespike.exporters import export
from edgespike.runtimes import load
from edgespike.runtimes.neuronchip.sanafe import SanafeSession, Stage, architecture, import_sanafe, translate
from edgespike.runtimes.neuronchip.simulator import ChipLayer, LayerSim, LifParams
from tests.test_neuronchip import toy_chip


def _costs(arch):
    """Per-event costs as SANA-FE's architecture holds them (read back through its API)."""
    core = arch.arch.tiles[0].cores[0]
    units = {unit.name: unit.model_info.model_attributes for unit in core.pipeline_hw}
    lif = units["loihi_lif"]
    return {"synop": units["loihi_dense_synapse"]["energy_process_spike"],
            "update": lif["energy_access_neuron"] + lif["energy_update_neuron"], "fire": lif["energy_spike_out"],
            "message": core.axon_out[0].metrics.energy_message_out}  # fmt: skip


def test_hand_built_two_layer_network_against_the_loihi_file():
    chip = load_chip("loihi")
    arch = architecture(chip, "auto", cores=8, inputs=4)
    cost = _costs(arch)
    assert (cost["synop"], cost["update"], cost["fire"], cost["message"]) == pytest.approx((35.5e-12, 72.8e-12, 69.3e-12, 111e-12))
    # a: 3 host spike lines -> 2 LIF neurons on core 0 (beta 1, threshold 2, subtract); b: a's spikes -> 2 sums on core 5
    a = ChipLayer("a", 0, np.array([[1, 1, 0], [1, -1, 1]], np.int8), np.ones(2, np.float32), None, [(0, 0, 2)], None,
                  lif=LifParams(0, 0, 12, 2.0, "subtract"))
    b = ChipLayer("b", 1, np.array([[1, -1], [1, 1]], np.int8), np.ones(2, np.float32), None, [(5, 0, 2)], [(0, 0, 2)])
    x = np.array([[1, 1, 0], [1, 0, 1], [0, 1, 1]])  # [T=3, fan_in]
    (out_a,), cost_a = Stage([LayerSim(a, chip)], arch, {0, 1}).run(x)
    # v: [2, 1] fires n0 -> [0, 1]; + [1, 2] = [1, 3] fires n1 -> [1, 1]; + [1, 0] = [2, 1] fires n0
    assert out_a["spikes"].tolist() == [[1, 0], [0, 1], [1, 0]]
    fired = 3
    energy = cost_a["energy"]
    assert energy["synapse"] == pytest.approx(6 * 2 * cost["synop"])  # 6 input spikes x 2 synapses each (dense)
    assert energy["soma"] == pytest.approx(3 * 2 * cost["update"] + fired * cost["fire"])  # every neuron, every step
    assert energy["network"] == pytest.approx(6 * cost["message"])  # one message per spike, core 0 to core 0: no hop
    (out_b,), cost_b = Stage([LayerSim(b, chip)], arch, {0, 1}).run(out_a["spikes"].astype(np.int64))
    assert out_b["potential"].tolist() == [[1, 1], [-1, 1], [1, 1]]  # the step's sums, read back
    assert cost_b["packets"] == fired and cost_b["energy"]["synapse"] == pytest.approx(fired * 2 * cost["synop"])
    assert cost_b["energy"]["network"] == pytest.approx(fired * (cost["message"] + 3.0e-12))  # tile 0 -> 1: one east hop


def test_demo_chip_export_runs_on_sanafe(tmp_path, monkeypatch):
    bundle = export(models.load("demo"), "neuronchip", tmp_path / "demo").path
    monkeypatch.setenv("EDGESPIKE_NEURONCHIP_RUNTIME", "sanafe")
    session, ours = load(bundle), load(bundle, runtime="neuronchip")
    assert isinstance(session, SanafeSession) and "SANA-FE" in session.runtime
    synop_j = _costs(session.arch)["synop"]
    for token in (17, 300, 42):
        logits, reference = session.step(token), ours.step(token)
        stats = session.stats
        assert np.isfinite(logits).all() and logits.argmax() == reference.argmax()
        assert stats["spike_agreement"] > 0.99 and "SANA-FE" in stats["cost_model"]
        assert stats["energy_j"] == pytest.approx(sum(stats["energy_breakdown_j"].values()))
        # the same synaptic events in both simulators, charged 35.5 pJ (SANA-FE) and 23.6 pJ (edgespike's Loihi preset)
        assert stats["energy_breakdown_j"]["sanafe_synapse"] == pytest.approx(stats["synops"] * synop_j)
        assert stats["edgespike_model"]["energy_breakdown_j"]["synops"] == pytest.approx(stats["synops"] * 23.6e-12)


def test_chip_file_sanafe_cannot_represent_names_the_field():
    with pytest.raises(EdgespikeError, match="mesh_width 4 does not divide the 6 tiles"):
        translate(toy_chip(cores=6, mesh_width=4))
    with pytest.raises(EdgespikeError, match="cores 6 is not a multiple of cores_per_tile 4"):
        translate(toy_chip(cores=6, cores_per_tile=4, mesh_width=1))


def test_mapping_needing_more_cores_than_the_architecture_says_how_many():
    with pytest.raises(EdgespikeError, match=r"needs 200 cores, SANA-FE's Loihi has 128 \(72 short\)"):
        architecture(load_chip("loihi"), "loihi", cores=200)


def test_sanafe_missing_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "sanafe", None)
    with pytest.raises(EdgespikeError, match=r"pip install 'edgespike\[sanafe\]'"):
        import_sanafe()


def test_check_budget_holds_sanafe_energy_per_token():
    from edgespike.check import Budget, TargetReport, _verdicts, load_budgets

    budget = Budget(max_sanafe_energy_per_token_j=30e-6)
    over = TargetReport("neuronchip", validation={"passed": True}, sanafe_energy_per_token_j=35e-6)
    verdict = next(v for v in _verdicts(over, budget, 1000) if v.budget == "max_sanafe_energy_per_token_j")
    assert verdict.passed is False and verdict.actual == 35e-6
    other = TargetReport("onnx", validation={"passed": True})
    verdict = next(v for v in _verdicts(other, budget, 1000) if v.budget == "max_sanafe_energy_per_token_j")
    assert verdict.passed is None and "neuronchip bundles only" in verdict.note
    targets = ("coreml", "onnx", "executorch", "neuronchip", "nir")
    assert load_budgets(None, targets)["neuronchip"].max_sanafe_energy_per_token_j is None  # opt-in
