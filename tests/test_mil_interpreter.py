"""The numpy MIL interpreter, checked independently of edgespike's exporter: programs that
coremltools converts straight from small torch modules must come out as torch computes them."""

import numpy as np
import pytest
import torch

from edgespike.errors import EdgespikeError
from edgespike.runtimes import mil_interpreter
from edgespike.runtimes.mil_interpreter import MILProgram


class Small(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(16, 8)

    def forward(self, x):
        h = torch.relu(self.linear(x)) * 2.0 - x[:, :8]
        return torch.softmax(h @ h.transpose(0, 1), dim=-1), torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6)


def _convert(module, example, precision, tmp_path):
    import coremltools as ct

    program = torch.export.export(module.eval(), (example,)).run_decompositions({})
    mlmodel = ct.convert(
        program, inputs=[ct.TensorType(name="x", shape=example.shape)], minimum_deployment_target=ct.target.iOS18,
        compute_precision=ct.precision.FLOAT16 if precision == "fp16" else ct.precision.FLOAT32, skip_model_load=True,
    )
    path = tmp_path / f"{precision}.mlpackage"
    mlmodel.save(str(path))
    return MILProgram(path)


@pytest.mark.parametrize("precision,atol", [("fp32", 1e-5), ("fp16", 2e-2)])
def test_program_converted_from_torch_matches_torch(precision, atol, tmp_path):
    module, x = Small(), torch.randn(4, 16)
    program = _convert(module, x, precision, tmp_path)
    outputs = list(program.run({"x": x.numpy()}, {}).values())
    with torch.no_grad():
        expected = [t.numpy() for t in module(x)]
    for ours, theirs in zip(outputs, expected, strict=True):
        assert ours.dtype == (np.float16 if precision == "fp16" else np.float32)
        np.testing.assert_allclose(ours.astype(np.float32), theirs, atol=atol, rtol=atol)


def test_fp16_rounds_after_every_op():
    # 2049 is not a float16: an fp16 add of 2048 + 1 rounds back to 2048
    add = mil_interpreter.OPS["add"]
    assert np.asarray(add(np.float32(2048), np.float32(1))).astype(np.float16) == np.float16(2048)
    assert np.isinf(np.asarray(mil_interpreter.OPS["mul"](np.float32(300), np.float32(300))).astype(np.float16))


def test_unknown_op_is_named(tmp_path, monkeypatch):
    x = torch.randn(4, 16)
    program = _convert(Small(), x, "fp32", tmp_path)
    monkeypatch.delitem(mil_interpreter.OPS, "softmax")
    with pytest.raises(EdgespikeError, match="no implementation of op\\(s\\) softmax"):
        MILProgram(tmp_path / "fp32.mlpackage")
    assert program is not None


def test_exported_coreml_artifact_runs_on_linux(tmp_path):
    """Through the runtime registry, a Core ML artifact (fp32 compute, fp16 states) follows eager."""
    from edgespike import models
    from edgespike.exporters import ExportOptions, export
    from edgespike.runtimes import load
    from edgespike.runtimes.eager import EagerSession

    model = models.create("pulse", "tiny")
    export(model, "coreml", tmp_path / "coreml", ExportOptions(precision="fp32"), source="pulse:tiny")
    session, reference = load(tmp_path / "coreml"), EagerSession(model)
    assert session.runtime.startswith("mil-interpreter")
    agree, max_diff = 0, 0.0
    for token in [3, 17, 99, 5, 200, 7, 1, 2]:
        ours, theirs = session.step(token), reference.step(token)
        max_diff = max(max_diff, float(np.abs(ours - theirs).max()))
        agree += int(ours.argmax() == theirs.argmax())
    # Core ML keeps states in fp16: the carried membranes round, and a spike near threshold can
    # flip (measured here: max |diff| 0.11 after one such flip); the logits stay close.
    assert max_diff < 0.5 and agree >= 7
