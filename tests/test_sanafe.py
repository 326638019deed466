"""The sanafe runtime: a hand-built two-layer network against the per-event costs of SANA-FE's Loihi file,
the demo's chip export on SANA-FE beside edgespike's simulator, and bad input."""

import re
import subprocess
import sys
import tomllib

import numpy as np
import pytest
import yaml

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


@pytest.fixture(scope="module")
def demo_bundle(tmp_path_factory):
    return export(models.load("demo"), "neuronchip", tmp_path_factory.mktemp("sanafe") / "demo").path


def test_demo_chip_export_runs_on_sanafe(demo_bundle, monkeypatch):
    monkeypatch.setenv("EDGESPIKE_NEURONCHIP_RUNTIME", "sanafe")  # what validate (no --runtime) reads
    session, ours = load(demo_bundle), load(demo_bundle, runtime="neuronchip")
    assert isinstance(session, SanafeSession) and "SANA-FE" in session.runtime
    synop_j = _costs(session.arch)["synop"]
    for token in (17, 300, 42):
        logits, reference = session.step(token), ours.step(token)
        stats = session.stats
        assert np.isfinite(logits).all() and logits.argmax() == reference.argmax()
        assert stats["spike_agreement"] > 0.99 and "SANA-FE" in stats["cost_model"]
        assert stats["energy_j"] == pytest.approx(sum(stats["energy_breakdown_j"].values()))
        # the same synaptic events in both simulators, each charged its own file's synop energy
        assert stats["energy_breakdown_j"]["sanafe_synapse"] == pytest.approx(stats["synops"] * synop_j)
        assert stats["edgespike_model"]["energy_breakdown_j"]["synops"] == pytest.approx(stats["synops"] * ours.chip.synop_energy_j)


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


def test_runtime_option_names_the_choices_and_reaches_the_bench_worker(demo_bundle):
    from edgespike.bench import BenchOptions, bench

    done = subprocess.run([sys.executable, "-m", "edgespike.cli", "generate", str(demo_bundle), "--prompt", "a", "--runtime", "onnx"],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 2 and "choose one of neuronchip, sanafe" in done.stderr and "Traceback" not in done.stderr
    report = bench([str(demo_bundle)], BenchOptions(prompt_tokens=1, new_tokens=1, repeats=1), baseline=False, model="demo",
                   runtime="sanafe")
    assert "SANA-FE" in report["results"][0]["runtime"]  # the fresh worker process ran it on SANA-FE


def _loihi_files() -> tuple[dict, dict]:
    """(edgespike's loihi.toml, SANA-FE's arch/loihi.yaml) as data, read here from the files themselves."""
    from importlib import resources

    ours = tomllib.loads((resources.files("edgespike") / "chips" / "loihi.toml").read_text())
    arch = yaml.safe_load((resources.files("sanafe.examples") / "loihi.yaml").read_text())["architecture"]
    core = arch["tile"][0]["core"][0]
    units = {unit["name"]: unit["attributes"] for kind in ("soma", "synapse", "axon_in", "axon_out") for unit in core[kind]}
    lif, tiles = units["loihi_lif"], int(re.search(r"\.\.(\d+)\]", arch["tile"][0]["name"]).group(1)) + 1  # loihi_tile[0..31]
    sync = arch["attributes"]["latency_sync"]
    theirs = {"synop_j": units["loihi_dense_synapse"]["energy_process_spike"], "synop_s": units["loihi_dense_synapse"]["latency_process_spike"],
              "update_j": lif["energy_access_neuron"] + lif["energy_update_neuron"],
              "update_s": lif["latency_access_neuron"] + lif["latency_update_neuron"],
              "spike_j": lif["energy_spike_out"] + units["loihi_out"]["energy_message_out"] + units["loihi_in"]["energy_message_in"],
              "sync_s": sync[max(k for k in sync if k <= tiles)]}  # the table's entry for every tile in use
    return ours, theirs


def test_profile_chip_models_differ_by_what_the_per_event_constants_imply():
    from edgespike.profile import ProfileOptions, profile

    runs = {m: profile("demo", ProfileOptions(targets=["neuronchip"], tokens=8, chip_model=m)) for m in ("edgespike", "sanafe")}
    per_token = runs["edgespike"]["per_token"]
    assert runs["sanafe"]["per_token"] == per_token  # the same counted work, only the costs differ
    ours, theirs = _loihi_files()
    steps = runs["edgespike"]["model"]["timesteps"]
    cycles = {"edgespike": (ours["synop_cycles"], ours["neuron_update_cycles"], 0.0),
              "sanafe": (theirs["synop_s"] * ours["clock_hz"], theirs["update_s"] * ours["clock_hz"], theirs["sync_s"])}
    chip_j = {"edgespike": (ours["synop_energy_j"], ours["neuron_update_energy_j"], ours["spike_local_energy_j"]),
              "sanafe": (theirs["synop_j"], theirs["update_j"], theirs["spike_j"])}
    expected = {}
    for m, (synop_j, update_j, spike_j) in chip_j.items():
        synop_c, update_c, sync_s = cycles[m]
        seconds = (per_token["synops"] * synop_c + per_token["neuron_updates"] * update_c) / ours["clock_hz"] / ours["cores"] + steps * sync_s
        assert runs[m]["targets"]["neuronchip"]["latency_per_token_s"] == pytest.approx(seconds)
        expected[m] = (per_token["synops"] * synop_j + per_token["neuron_updates"] * update_j + per_token["spikes"] * spike_j
                       + ours["static_power_w"] * seconds)  # fmt: skip
    # the rest (host work, memory) is charged alike: the per-token energies differ by the chip events' costs alone
    energy = {m: run["targets"]["neuronchip"]["energy_per_token_j"] for m, run in runs.items()}
    assert energy["sanafe"] - energy["edgespike"] == pytest.approx(expected["sanafe"] - expected["edgespike"], rel=1e-9)
    assert energy["sanafe"] / energy["edgespike"] != pytest.approx(1.0, abs=1e-3)
    sources = runs["sanafe"]["targets"]["neuronchip"]["sources"]
    for key in ("add_j", "neuron_update_j", "spike_j", "sync_per_timestep_s"):
        assert sources[key].startswith("SANA-FE (Boyle et al.) Loihi architecture")
    assert not runs["edgespike"]["targets"]["neuronchip"]["sources"]["add_j"].startswith("SANA-FE (Boyle et al.)")
