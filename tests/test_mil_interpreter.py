"""The numpy MIL interpreter on whole programs, checked independently of edgespike's exporter:
programs that coremltools converts straight from small torch modules (stateless and stateful)
must come out as torch computes them; damaged packages and unknown ops are named errors.
Tolerance: fp32 atol/rtol 1e-5; fp16 2e-2 (fp16 rounds to ~1e-3 relative after every op)."""

import copy
import shutil

import numpy as np
import pytest
import torch

ct = pytest.importorskip("coremltools")

from edgespike import models  # noqa: E402
from edgespike.errors import EdgespikeError  # noqa: E402
from edgespike.exporters import ExportOptions, export  # noqa: E402
from edgespike.runtimes import load  # noqa: E402
from edgespike.runtimes.coreml import ops  # noqa: E402
from edgespike.runtimes.coreml.interpreter import MILProgram  # noqa: E402
from edgespike.runtimes.eager import EagerSession  # noqa: E402


class Small(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(16, 8)

    def forward(self, x):
        h = torch.relu(self.linear(x)) * 2.0 - x[:, :8]
        return torch.softmax(h @ h.transpose(0, 1), dim=-1), torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6)


class Accumulator(torch.nn.Module):
    """A Core ML state: a running sum carried across calls, read and updated in place."""

    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(10, 4)
        self.register_buffer("total", torch.zeros(1, 4))

    def forward(self, tokens):
        x = self.embed(tokens)[:, 0]  # [1, 4]
        self.total.add_(torch.tanh(x))
        first, second = self.total.chunk(2, dim=-1)
        return torch.cat([first * 2.0, torch.sigmoid(second)], dim=-1)


def _convert(module, example, precision, path, **kwargs):
    program = torch.export.export(module.eval(), (example,)).run_decompositions({})
    mlmodel = ct.convert(
        program, minimum_deployment_target=ct.target.iOS18, skip_model_load=True,
        compute_precision=ct.precision.FLOAT16 if precision == "fp16" else ct.precision.FLOAT32, **kwargs,
    )
    mlmodel.save(str(path))
    return path


@pytest.mark.parametrize("precision,atol", [("fp32", 1e-5), ("fp16", 2e-2)])
def test_program_converted_from_torch_matches_torch(precision, atol, tmp_path):
    module, x = Small(), torch.randn(4, 16)
    path = _convert(module, x, precision, tmp_path / "small.mlpackage", inputs=[ct.TensorType(name="x", shape=x.shape)])
    outputs = list(MILProgram.load(path).run({"x": x.numpy()}, {}).values())
    with torch.no_grad():
        expected = [t.numpy() for t in module(x)]
    for ours, theirs in zip(outputs, expected, strict=True):
        assert ours.dtype == (np.float16 if precision == "fp16" else np.float32)
        np.testing.assert_allclose(ours.astype(np.float32), theirs, atol=atol, rtol=atol)


@pytest.mark.parametrize("precision,atol", [("fp32", 1e-3), ("fp16", 2e-2)])
def test_stateful_program_converted_from_torch_carries_its_state(precision, atol, tmp_path):
    """Over 6 calls the fp16 state accumulates; fp32 compute still stores it in fp16 (atol 1e-3)."""
    module, tokens = Accumulator(), torch.tensor([[3]])
    path = _convert(
        copy.deepcopy(module), tokens, precision, tmp_path / "acc.mlpackage",
        inputs=[ct.TensorType(name="tokens", shape=(1, 1), dtype=np.int32)],
        states=[ct.StateType(wrapped_type=ct.TensorType(shape=(1, 4), dtype=np.float16), name="total")],
    )
    program = MILProgram.load(path)
    assert program.state_names == ["total"]
    state = program.initial_state()
    for token in [3, 1, 4, 1, 5, 9]:
        (ours,) = program.run({"tokens": np.array([[token]], np.int32)}, state).values()
        with torch.no_grad():
            theirs = module(torch.tensor([[token]])).numpy()
        np.testing.assert_allclose(ours.astype(np.float32), theirs, atol=atol, rtol=atol)
    np.testing.assert_allclose(state["total"].astype(np.float32), module.total.numpy(), atol=atol)


@pytest.fixture(scope="module")
def small_package(tmp_path_factory):
    x = torch.randn(4, 16)
    return _convert(Small(), x, "fp32", tmp_path_factory.mktemp("mil") / "small.mlpackage",
                    inputs=[ct.TensorType(name="x", shape=x.shape)])


def test_unknown_op_is_named(small_package, monkeypatch):
    monkeypatch.delitem(ops.OPS, "softmax")
    with pytest.raises(EdgespikeError, match=r"no implementation of op\(s\) softmax; add them to .*OPS"):
        MILProgram.load(small_package)


def test_package_with_a_missing_weight_file_is_a_named_error(small_package, tmp_path):
    damaged = shutil.copytree(small_package, tmp_path / "damaged.mlpackage")
    weights = list(damaged.rglob("weight.bin"))
    assert weights, "the converted package stores its weights in a blob file"
    weights[0].unlink()
    with pytest.raises(EdgespikeError, match="cannot read the Core ML package .*re-export the model"):
        MILProgram.load(damaged)


@pytest.fixture(scope="module")
def pulse_fp32_artifact(tmp_path_factory):
    torch.manual_seed(0)
    model = models.create("pulse", "tiny")
    path = tmp_path_factory.mktemp("coreml") / "coreml"
    export(model, "coreml", path, ExportOptions(precision="fp32"), source="pulse:tiny")
    return model, path


def test_exported_fp32_package_reproduces_eager_step_by_step(pulse_fp32_artifact):
    """Through the runtime registry, with the fp16 state set from eager before every token, an
    fp32 package computes eager's step to float32 precision: the conversion adds no error."""
    model, path = pulse_fp32_artifact
    session, reference = load(path), EagerSession(model)
    assert session.runtime == "mil-interpreter"
    for token in [3, 17, 99, 5, 200, 7, 1, 2]:
        state = {name: value.numpy().astype(np.float16).astype(np.float32) for name, value in reference.step_module.state().items()}
        for name, value in state.items():  # eager too starts from the fp16-rounded state
            reference.step_module.state()[name].copy_(torch.from_numpy(value))
        session.set_state(state)
        np.testing.assert_allclose(session.step(token), reference.step(token), atol=1e-4, rtol=1e-4)
    assert len(session.last_spikes) == sum(1 for m in model.modules() if type(m).__name__ == "LIF")


def test_spike_rates_output_is_each_populations_firing_fraction(pulse_fp32_artifact):
    """The app's spike view: spike_rates[p] = mean of LIF call p's spikes [T, B, n] for the token."""
    model, path = pulse_fp32_artifact
    session = load(path)
    (rates,) = [o for o in session.manifest["outputs"] if o["name"] == "spike_rates"]
    lifs = [name for name, m in model.named_modules() if type(m).__name__ == "LIF"]
    assert rates["populations"] == lifs and rates["shape"] == [1, len(lifs)]
    values = session.program.run({"tokens": np.array([[42]], np.int32)}, session.state, keep=session.spike_values)
    expected = [values[name].astype(np.float32).mean() for name in session.spike_values]
    np.testing.assert_allclose(values["spike_rates"][0], expected, rtol=1e-6)
    assert 0 < values["spike_rates"].max() <= 1


@pytest.mark.parametrize("damage", ["missing", "edited"])
def test_damaged_package_fails_the_artifact_checksum(pulse_fp32_artifact, tmp_path, damage):
    _, path = pulse_fp32_artifact
    copy = shutil.copytree(path, tmp_path / "copy")
    program = next(copy.rglob("model.mlmodel"))
    if damage == "missing":
        next(copy.rglob("weight.bin")).unlink()
    else:
        program.write_bytes(program.read_bytes()[:-8] + b"\x00" * 8)
    with pytest.raises(EdgespikeError, match="missing; re-export" if damage == "missing" else "does not match its sha256"):
        load(copy)


def test_interpreter_check_against_another_session_from_the_same_state(pulse_fp32_artifact):
    """The macOS check (validation's ``mil_interpreter`` record) compares the interpreter with Core
    ML step by step from eager's state; here a second interpreter session stands in for Core ML."""
    from edgespike.runtimes.coreml import MILInterpreterSession
    from edgespike.validate import _interpreter_against

    model, path = pulse_fp32_artifact
    manifest = load(path).manifest
    record = _interpreter_against(MILInterpreterSession(path, manifest), path, manifest, model, [3, 17, 99, 5])
    assert record == {"against": "mil-interpreter", "max_abs_logit_diff": 0.0, "top1_agreement": 1.0}
