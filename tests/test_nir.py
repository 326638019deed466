"""NIR out and in: snntorch -> NIR -> edgespike equals snntorch; edgespike -> NIR -> edgespike equals
itself; the written file is standard NIR; a family with attention keeps its host work on the host;
bad graphs are one-line errors.

Tolerances: logits within 1e-5 of snntorch run step by step (float32 both sides: the only
difference is beta recovered from NIR's tau = dt / (1 - beta), at most one float32 ulp), spike
counts equal; the round trip within 1e-6, parameters exact.
"""

import json
import re

import nir
import numpy as np
import pytest
import snntorch as snn
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from edgespike import models
from edgespike.capture import decode_step
from edgespike.cli import app
from edgespike.errors import EdgespikeError
from edgespike.exporters import ExportOptions, export
from edgespike.runtimes import load
from edgespike.validate import validate_artifact

D, H, V, T = 8, 12, 10, 3
runner = CliRunner()


class SnnNet(torch.nn.Module):
    """nn.Linear -> snn.Leaky -> nn.Linear -> snn.Synaptic, per-neuron (learned) beta, thresholds != 1."""

    def __init__(self):
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.fc1 = torch.nn.Linear(D, H)
        self.lif1 = snn.Leaky(beta=torch.rand(H, generator=generator) * 0.5 + 0.4, threshold=torch.full((H,), 0.7),
                              learn_beta=True, init_hidden=True)
        self.fc2 = torch.nn.Linear(H, V, bias=False)
        self.syn2 = snn.Synaptic(alpha=torch.rand(V, generator=generator) * 0.4 + 0.5, beta=torch.rand(V, generator=generator) * 0.5 + 0.4,
                                 threshold=torch.full((V,), 1.3), init_hidden=True, output=True)
        with torch.no_grad():
            self.fc1.weight.copy_(torch.randn(H, D, generator=generator))
            self.fc2.weight.copy_(torch.randn(V, H, generator=generator))

    def forward(self, x):
        return self.syn2(self.fc2(self.lif1(self.fc1(x))))


def _invoke(*args):
    result = runner.invoke(app, [str(a) for a in args])
    return result


@pytest.fixture(scope="module")
def snn_import(tmp_path_factory):
    """The snntorch network, its NIR file, the embedding table and the imported model dir."""
    from snntorch.export_nir import export_to_nir

    root = tmp_path_factory.mktemp("nir")
    net = SnnNet()
    nir.write(root / "snn.nir", export_to_nir(net, torch.zeros(1, D), ignore_dims=[0]))
    embedding = torch.randn(V, D, generator=torch.Generator().manual_seed(1)) * 2
    save_file({"weight": embedding}, str(root / "emb.safetensors"))
    result = _invoke("import", "nir", root / "snn.nir", "--out", root / "model", "--embedding", root / "emb.safetensors",
                     "--readout", "membrane", "--timesteps", T)
    assert result.exit_code == 0, result.output
    return net, embedding, root


def test_snntorch_export_to_nir_imports_equal_to_snntorch(snn_import):
    net, embedding, root = snn_import
    model = models.load(root / "model").eval()
    tokens = torch.randint(0, V, (1, 24), generator=torch.Generator().manual_seed(2))
    counts = {"lif": [0, 0], "syn": [0, 0]}  # [snntorch, edgespike]
    hooks = [model.nodes[1].register_forward_hook(lambda m, i, o: counts["lif"].__setitem__(1, counts["lif"][1] + int(o[0].sum()))),
             model.nodes[3].lif.register_forward_hook(lambda m, i, o: counts["syn"].__setitem__(1, counts["syn"][1] + int(o[0].sum())))]
    with torch.no_grad():
        logits, _ = model(tokens)
        net.lif1.reset_mem()
        net.syn2.reset_mem()
        reference = []
        for token in tokens[0]:
            for _ in range(T):  # the token's embedding held as the input current for T steps
                spk1 = net.lif1(net.fc1(embedding[token][None]))
                spk2, _, mem2 = net.syn2(net.fc2(spk1))
                counts["lif"][0] += int(spk1.sum())
                counts["syn"][0] += int(spk2.sum())
            reference.append(mem2[0].clone())
    for hook in hooks:
        hook.remove()
    torch.testing.assert_close(logits[0], torch.stack(reference), atol=1e-5, rtol=1e-6)  # membranes reach ~30: float32 ulps
    assert counts["lif"][0] == counts["lif"][1] > 0 and counts["syn"][0] == counts["syn"][1] > 0, counts
    config = json.loads((root / "model" / "config.json").read_text())
    assert [n["type"] for n in config["nodes"]] == ["affine", "lif", "linear", "cuba_lif"]
    assert all(n["reset"] == "subtract" and n["delayed_reset"] and n["strict"] for n in config["nodes"][1::2])


@pytest.fixture(scope="module")
def exported(snn_import, tmp_path_factory):
    """The imported snntorch model exported to NIR (fp32 weights, validated) and its model."""
    _, _, root = snn_import
    out = tmp_path_factory.mktemp("export") / "nir"
    result = _invoke("export", root / "model", "--target", "nir", "--weights", "fp32", "--out", out, "--json")
    assert result.exit_code == 0, result.output
    return out, models.load(root / "model").eval()


def test_export_is_standard_nir_and_validates(exported):
    out, _ = exported
    graph = nir.read(out / "model.nir")
    assert {type(n) for n in graph.nodes.values()} == {nir.Input, nir.Affine, nir.LIF, nir.Linear, nir.CubaLIF, nir.Output}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["runnable"] and manifest["dt"] == pytest.approx(1e-4)
    assert [n["type"] for n in manifest["nir_nodes"]] == ["Input", "Affine", "LIF", "Linear", "CubaLIF", "Output"]
    assert set(manifest["neuron_laws"]) == {"lif1", "syn2"} and manifest["neuron_laws"]["lif1"]["delayed_reset"]
    assert {h["module"] for h in manifest["host_work"]} == {"embed", "(readout)"}
    v = manifest["validation"]
    assert v["passed"] and v["max_abs_logit_diff"] <= 1e-4 and v["top1_agreement"] == 1.0 and v["spike_flip_rate"] == 0.0
    assert v["runtime"].startswith("NIR executor")
    # the executor takes eager's state (set_state) every token: the spike-following conversion record
    assert v["tolerance"]["applies_to"] == "conversion" and v["conversion"]["max_abs_logit_diff"] <= 1e-4


def test_the_executor_takes_eagers_state(exported):
    """A fresh executor given eager's neuron state (mem and CubaLIF syn) continues as eager does."""
    from edgespike.runtimes import load
    from edgespike.runtimes.eager import EagerSession

    out, model = exported
    session, reference = load(out), EagerSession(model, T, "fp32")  # the export's --weights
    for token in (1, 4, 2, 7):
        reference.step(token)
    state = {name: value.numpy() for name, value in reference.step_module.state().items()}
    assert any(name.endswith(".syn") for name in state) and all(abs(v).max() > 0 for v in state.values())
    session.set_state(state)
    ours, theirs = session.step(3), reference.step(3)
    assert abs(ours - theirs).max() <= 1e-4
    session.reset()
    assert abs(session.step(3) - theirs).max() > 1e-3


def test_edgespike_nir_edgespike_round_trip(exported, tmp_path):
    out, model = exported
    result = _invoke("import", "nir", out / "model.nir", "--out", tmp_path / "again", "--embedding", out / "host.safetensors")
    assert result.exit_code == 0, result.output
    again = models.load(tmp_path / "again").eval()
    assert again.config.nodes == model.config.nodes and again.config.spike.timesteps == T
    assert again.config.readout == "membrane" and again.config.head is False
    original, copy = model.state_dict(), again.state_dict()
    assert original.keys() == copy.keys()
    for name in original:
        torch.testing.assert_close(copy[name], original[name], atol=0, rtol=0, msg=name)
    tokens = torch.randint(0, V, (2, 16), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(again(tokens)[0], model(tokens)[0], atol=1e-6, rtol=0)


def test_ternary_weights_are_written_as_their_values(tmp_path):
    model = models.create("nir_graph", "tiny")
    result = export(model, "nir", tmp_path / "nir", ExportOptions(weights="ternary"))
    graph = nir.read(result.path / "model.nir")
    weight = graph.nodes["fc1"].weight
    scale = np.abs(weight).max()
    assert set(np.unique(np.round(weight / scale, 6))) <= {-1.0, 0.0, 1.0}


def test_family_with_attention_keeps_its_host_work(tmp_path):
    model = models.create("pulse", "tiny")
    result = export(model, "nir", tmp_path / "nir", source="pulse:tiny", validate=lambda d, m: validate_artifact(d, m, model))
    manifest = result.manifest
    graph = nir.read(result.path / "model.nir")
    kinds = {name: type(n).__name__ for name, n in graph.nodes.items()}
    for block in ("layers.0", "layers.1"):
        assert kinds[f"{block}.attn_lif"] == kinds[f"{block}.hidden_lif"] == "LIF"
        assert {kinds[f"{block}.{p}"] for p in ("q_proj", "k_proj", "v_proj", "up", "down")} == {"Linear"}
        assert (f"{block}.up", f"{block}.hidden_lif") in graph.edges and (f"{block}.hidden_lif", f"{block}.down") in graph.edges
    reasons = {h["module"]: h["reason"] for h in manifest["host_work"]}
    assert "table lookup" in reasons["embed"] and "normalization" in reasons["layers.0.attn_norm"]
    assert "attention" in reasons["layers.0"] and "layers.0.o_proj" in reasons and "layers.0.q_proj" not in reasons
    assert not manifest["runnable"] and "not runnable alone" in manifest["runnable_note"]
    v = manifest["validation"]
    assert v["passed"] and v["max_abs_logit_diff"] <= 1e-3 and v["spikes_compared"] > 0 and v["spike_flip_rate"] == 0.0
    assert v["tolerance"]["applies_to"] == "conversion" and v["conversion"]["max_abs_logit_diff"] <= 1e-3


def test_host_loop_session_holds_no_host_copy_of_the_graph(tmp_path):
    """The host-loop session builds the family with its large tensors on the meta device (here every
    256 x 256 linear) and gives values only to the host work's, from host.safetensors: the graph's
    linears never get host codes, so the model never exists in fp32; its steps equal eager's."""
    from edgespike.runtimes.eager import EagerSession

    model = models.create("pulse", "tiny", d_model=256, ffn_dim=256)
    session = load(export(model, "nir", tmp_path / "nir").path)
    held = dict(session.step_module.model.named_buffers())
    assert held["layers.0.up.codes"].is_meta and held["layers.1.q_proj.codes"].is_meta
    frozen = dict(decode_step(model).model.named_buffers())
    assert torch.equal(held["layers.0.o_proj.codes"], frozen["layers.0.o_proj.codes"])  # host work: the export's codes
    eager = EagerSession(model, model.config.spike.timesteps, "ternary")
    for token in (5, 17, 3):
        assert abs(session.step(token) - eager.step(token)).max() <= 1e-4


def test_linear_reading_part_of_a_population_is_fed_by_the_host(tmp_path):
    """Ultimate's channel mix splits one LIF population's spikes between two linears (key, receptance):
    NIR has no node that takes a part, so the host feeds those linears through Input nodes."""
    model = models.create("ultimate", "tiny")
    result = export(model, "nir", tmp_path / "nir", validate=lambda d, m: validate_artifact(d, m, model))
    edges = {tuple(edge) for edge in result.manifest["nir_edges"]}
    for block in ("layers.0.channel", "layers.1.channel"):
        assert (f"input.{block}.key", f"{block}.key") in edges and (f"{block}.lif", f"output.{block}.lif") in edges
        assert (f"{block}.lif", f"{block}.key") not in edges
    v = result.manifest["validation"]
    assert v["passed"] and v["conversion"]["max_abs_logit_diff"] <= 1e-5 and v["spikes_compared"] > 0 and v["spike_flip_rate"] == 0.0


def _graph_file(path, nodes, edges):
    nir.write(path, nir.NIRGraph(nodes=nodes, edges=edges, type_check=False))
    return path


def _lif(n):
    tau = np.full(n, 1e-3)
    return nir.LIF(tau=tau, r=tau / 1e-4, v_leak=np.zeros(n), v_threshold=np.ones(n))


@pytest.mark.parametrize("case,message", [
    ("unknown", r"NIR node 'pool' has type 'SumPool2d', which edgespike does not import; supported: Input"),
    ("shapes", r"NIR edge 'lin' -> 'lif': 'lin' gives 6 values, 'lif' has 5 neurons"),
    ("cycle", r"NIR node 'lif' has 2 inputs .*recurrent loops"),
    ("not_nir", r"is not a NIR file"),
])
def test_bad_graphs_are_one_line_errors(tmp_path, case, message):
    path = tmp_path / "g.nir"
    inp, out = nir.Input(input_type={"input": np.array([4])}), nir.Output(output_type={"output": np.array([5])})
    lin = nir.Linear(weight=np.ones((6, 4), np.float32))
    if case == "unknown":
        pool = nir.SumPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0]))
        _graph_file(path, {"input": inp, "pool": pool, "output": out}, [("input", "pool"), ("pool", "output")])
    elif case == "shapes":
        _graph_file(path, {"input": inp, "lin": lin, "lif": _lif(5), "output": out}, [("input", "lin"), ("lin", "lif"), ("lif", "output")])
    elif case == "cycle":
        rec = nir.Linear(weight=np.eye(6, dtype=np.float32))
        _graph_file(path, {"input": inp, "lin": lin, "lif": _lif(6), "rec": rec, "output": out},
                    [("input", "lin"), ("lin", "lif"), ("lif", "rec"), ("rec", "lif"), ("lif", "output")])
    else:
        path.write_text("not hdf5")
    result = _invoke("import", "nir", path, "--out", tmp_path / "m", "--vocab-size", 10)
    assert isinstance(result.exception, EdgespikeError), result.output  # main() prints it on one line, exit 2
    assert re.search(message, str(result.exception)) and "\n" not in str(result.exception)
    assert not (tmp_path / "m").exists()


def test_host_weights_hold_the_embedding(exported):
    out, model = exported
    host = load_file(str(out / "host.safetensors"))
    assert set(host) == {"embed.weight"}
    torch.testing.assert_close(host["embed.weight"], model.embed.weight.detach())


def test_write_graph_writes_nir_writes_file(tmp_path):
    """edgespike's writer (no deep copy of the weights) and nir.write give the same datasets, dtypes,
    values and compression, for a walked family's graph (Input / Affine / LIF / Output nodes, metadata)."""
    import h5py

    from edgespike.nir_io import write_graph

    exported = export(models.create("pulse", "tiny"), "nir", tmp_path / "nir", validate=None)
    graph = nir.read(exported.path / "model.nir")
    nir.write(tmp_path / "theirs.nir", graph)
    write_graph(tmp_path / "ours.nir", graph)

    def datasets(path):
        found = {}
        with h5py.File(path, "r") as f:
            f.visititems(lambda name, item: found.__setitem__(name, (item.dtype, item.compression, item[()]))
                         if isinstance(item, h5py.Dataset) else None)
        return found

    ours, theirs = datasets(tmp_path / "ours.nir"), datasets(tmp_path / "theirs.nir")
    assert ours.keys() == theirs.keys() and any(name.endswith("/weight") for name in ours)
    for name, (dtype, compression, value) in theirs.items():
        assert ours[name][:2] == (dtype, compression), name
        assert np.array_equal(ours[name][2], value), name
