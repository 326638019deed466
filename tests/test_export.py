"""Exporters, one chain per family x target: export -> lower -> check structure -> run -> compare
with the eager ternarized reference (validation, a 64-token rollout with the state carried).

Tolerances (edgespike.validate.TOLERANCES): fp32 ONNX/ExecuTorch max |logit diff| <= 1e-3 and
top-1 agreement >= 0.99; spike flips are reported where the runtime exposes them (ONNX).
Core ML cannot execute on Linux: there its package runs in the numpy MIL interpreter, fp16
rounding included; its tolerance applies to the conversion (edgespike.validate's docstring).
"""

import json
import platform
from collections import Counter

import pytest

from edgespike import models
from edgespike.errors import EdgespikeError
from edgespike.exporters import ExportOptions, export
from edgespike.nn import LIF
from edgespike.validate import validate_artifact

FAMILIES = sorted(models.FAMILIES)


def _export(family, target, tmp_path, **kwargs):
    model = models.create(family, "tiny")
    return export(
        model, target, tmp_path / target, source=f"{family}:tiny",
        validate=lambda d, m: validate_artifact(d, m, model), **kwargs,
    )


@pytest.mark.parametrize("family", FAMILIES)
def test_onnx(family, tmp_path):
    import onnx

    result = _export(family, "onnx", tmp_path)
    model = onnx.load(str(result.path / "model.onnx"))
    onnx.checker.check_model(model, full_check=True)
    custom = Counter(n.op_type for n in model.graph.node if n.domain == "ai.edgespike")
    assert custom["SpikeLinear"] > 0 and (custom["LIF"] > 0 or custom["SpikeEncode"] > 0)
    assert {f.name for f in model.functions} == set(custom)
    # ternary weights stored as INT2, never float
    int2 = [i for i in model.graph.initializer if i.data_type == onnx.TensorProto.INT2]
    assert len(int2) == custom["SpikeLinear"] and all(len(i.raw_data) * 4 >= _numel(i) for i in int2)
    names = [i.name for i in model.graph.input]
    assert names[0] == "tokens" and all(n.startswith("state.") for n in names[1:])
    assert [o.name for o in model.graph.output][0] == "logits"
    v = result.manifest["validation"]
    assert v["passed"] and v["max_abs_logit_diff"] <= 1e-3 and v["top1_agreement"] >= 0.99
    assert v["tokens"] == 64 and v["greedy_match"] is not None


@pytest.mark.parametrize("family", FAMILIES)
def test_executorch(family, tmp_path):
    result = _export(family, "executorch", tmp_path)
    assert result.manifest["xnnpack_delegates"] > 0
    assert len(result.manifest["mutable_buffers"]) == len(result.manifest["states"])
    v = result.manifest["validation"]
    assert v["passed"] and v["max_abs_logit_diff"] <= 1e-3 and v["top1_agreement"] >= 0.99


@pytest.mark.parametrize("family", FAMILIES)
def test_fp16_coreml(family, tmp_path):
    """Numeric on Linux through the MIL interpreter; the tolerance applies to the conversion record
    (state set from eager every token), the rollout's numbers are reported, fp16 flips included."""
    result = _export(family, "coreml", tmp_path)
    v = result.manifest["validation"]
    assert v["passed"], v
    assert all(v["checks"].values())
    assert result.manifest["precision"] == "fp16" and result.manifest["minimum_deployment_target"] == "iOS18"
    if platform.system() != "Darwin":
        assert v["runtime"] == "mil-interpreter"
    assert v["conversion"]["top1_agreement"] >= 0.9 and v["conversion"]["max_abs_logit_diff"] <= 1.5
    assert 0.0 <= v["top1_agreement"] <= 1.0 and v["greedy_match"] in (True, False)
    has_lif = any(isinstance(m, LIF) for m in models.create(family, "tiny").modules())
    # every LIF's spikes are compared where the model has LIF neurons; fp16 flips some, never most
    assert (v["spike_flip_rate"] is not None) == has_lif and (not has_lif or v["spike_flip_rate"] < 0.2)
    assert bool(result.manifest["spike_values"]) == has_lif


def _numel(tensor):
    count = 1
    for d in tensor.dims:
        count *= d
    return count


def test_manifest_lists_every_file_with_its_sha256(tmp_path):
    result = _export("pulse", "onnx", tmp_path)
    manifest = json.loads((result.path / "manifest.json").read_text())
    assert set(manifest["files"]) == {"model.onnx"}
    assert manifest["format_version"] == 1 and manifest["states"] and manifest["validation"]["passed"]


def test_existing_output_needs_force_and_failed_export_leaves_nothing(tmp_path):
    (tmp_path / "onnx").mkdir()
    with pytest.raises(EdgespikeError, match="already exists; pass --force"):
        _export("pulse", "onnx", tmp_path)
    model = models.create("pulse", "tiny")

    def failing_validation(directory, manifest):
        return {"passed": False, "reason": "forced failure"}

    with pytest.raises(EdgespikeError, match="failed validation: forced failure"):
        export(model, "onnx", tmp_path / "fresh", validate=failing_validation)
    assert not (tmp_path / "fresh").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["onnx"]  # no partial dirs left behind


@pytest.mark.parametrize("timesteps", [0, 10_000])
def test_bad_timesteps(timesteps, tmp_path):
    with pytest.raises(EdgespikeError, match="--timesteps must be an integer in"):
        _export("pulse", "onnx", tmp_path, options=ExportOptions(timesteps=timesteps))


def test_unlowerable_module_is_named(tmp_path):
    import torch

    model = models.create("pulse", "tiny")
    model.layers[0].extra = torch.nn.GRU(4, 4)
    with pytest.raises(EdgespikeError, match=r"module 'layers.0.extra' of type torch.nn.modules.rnn.GRU cannot be lowered"):
        export(model, "onnx", tmp_path / "x")


def test_state_that_does_not_start_at_zero_is_refused():
    """Core ML's makeState(), the ONNX sessions and the iOS app zero-fill the carried state."""
    from edgespike.capture import decode_step

    model = models.create("pulse", "tiny")
    zeros = model.init_state
    model.init_state = lambda batch: {name: value + (name.endswith("v_mlp")) for name, value in zeros(batch).items()}
    with pytest.raises(EdgespikeError, match=r"state 'layers.0.v_mlp' of pulse does not start at zero; .*init_state must return zeros"):
        decode_step(model)
