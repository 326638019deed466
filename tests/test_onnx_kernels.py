"""onnxruntime's MatMulNBits specialisation (runtimes/onnxruntime.py) against independent readings
of the same file: onnx's own ReferenceEvaluator (another ONNX implementation, the standard graph),
onnxruntime on the standard graph, and float64 numpy on the codes.

Tolerances: 1e-5 on logits between runtimes (fp32 reassociation); 1e-6 relative (to max |y|) for
one linear against float64, the dense split included; one int8 piece alone misses that (8e-3).
"""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgespike import models
from edgespike.exporters import ExportOptions, export
from edgespike.exporters import onnx as onnx_exporter
from edgespike.ops.lif import RESETS
from edgespike.quant.packing import pack_fields
from edgespike.runtimes import load
from edgespike.runtimes import onnxruntime as ort_runtime
from edgespike.runtimes.onnxruntime import OnnxSession, specialise

TOKENS = [1, 5, 9, 77, 3, 200, 13, 8]


def _artifact(tmp_path, weights="ternary"):
    model = models.create("pulse", "tiny")
    return export(model, "onnx", tmp_path / weights, ExportOptions(weights=weights), source="pulse:tiny")


def _rollout(session, tokens=TOKENS):
    return np.stack([session.step(t) for t in tokens])


def test_reference_evaluator_runs_the_file_and_agrees_with_the_specialised_session(tmp_path):
    from onnx.reference import ReferenceEvaluator

    result = _artifact(tmp_path)
    manifest = result.manifest
    reference = ReferenceEvaluator(onnx.load(str(result.path / "model.onnx")))
    names = [spec["name"] for spec in manifest["states"]]
    state = {f"state.{spec['name']}": np.zeros(spec["shape"], np.float32) for spec in manifest["states"]}
    theirs = []
    for token in TOKENS:  # the state carried, as the session carries it
        logits, *new_state = reference.run(None, {"tokens": np.array([[token]], np.int64), **state})
        state = {f"state.{name}": value for name, value in zip(names, new_state)}
        theirs.append(logits[0])
    session = OnnxSession(result.path, manifest)
    ours = _rollout(session)
    assert session.kernels["standard"] == 0
    assert np.abs(ours - np.stack(theirs)).max() <= 1e-5
    standard = load(result.path, runtime="onnxruntime-standard")  # the file as written, selectable by name
    assert "MatMulNBits" in load(result.path).runtime and "MatMulNBits" not in standard.runtime
    assert np.abs(ours - _rollout(standard)).max() <= 1e-5


def test_linears_fed_by_spikes_and_dense_ones_are_told_apart(tmp_path):
    """pulse: q, k, v, up and down read LIF spikes; o_proj reads the attention output (dense)."""
    result = _artifact(tmp_path)
    model = onnx.load(str(result.path / "model.onnx"))
    counts = specialise(model)
    layers = models.create("pulse", "tiny").config.n_layers
    assert counts == {"spike_fed": 5 * layers, "dense": layers, "standard": 0, "lif_unrolled": 3 * layers}
    kernels = [n for n in model.graph.node if n.op_type == "MatMulNBits"]
    assert len(kernels) == 6 * layers and {a.i for n in kernels for a in n.attribute if a.name == "bits"} == {2}
    assert not any(n.op_type in ("SpikeLinear", "LIF") for n in model.graph.node)
    assert not any(i.data_type == TensorProto.UINT2 for i in model.graph.initializer)  # read as MatMulNBits' weights


def test_int4_codes_take_the_four_bit_kernel(tmp_path):
    result = _artifact(tmp_path, "int4")
    model = onnx.load(str(result.path / "model.onnx"))
    specialise(model)
    bits = {a.i for n in model.graph.node if n.op_type == "MatMulNBits" for a in n.attribute if a.name == "bits"}
    assert bits == {4}
    standard = OnnxSession(result.path, result.manifest, specialised=False)
    assert np.abs(_rollout(OnnxSession(result.path, result.manifest)) - _rollout(standard)).max() <= 1e-5


def test_external_weights_are_read_from_the_same_span_of_the_data_file(tmp_path, monkeypatch):
    monkeypatch.setattr(onnx_exporter, "EXTERNAL_DATA_BYTES", 0)
    result = _artifact(tmp_path)
    assert "model.onnx.data" in result.manifest["files"]
    model = onnx.load(str(result.path / "model.onnx"), load_external_data=False)
    specialise(model)
    external = [i for i in model.graph.initializer if i.name.endswith(".nbits") and i.data_location == TensorProto.EXTERNAL]
    assert external and not any(i.raw_data for i in external)  # small ones stay inline (onnx_ir's threshold)
    standard = OnnxSession(result.path, result.manifest, specialised=False)
    assert np.abs(_rollout(OnnxSession(result.path, result.manifest)) - _rollout(standard)).max() <= 1e-5


def _one_linear(codes: np.ndarray, scale: np.ndarray, graded: float | None):
    """A graph of one ai.edgespike SpikeLinear over UINT2 codes, as the exporter writes it; fed by a
    LIF's spikes (graded by ``graded``) or, with None, by a dense input."""
    n, k = codes.shape
    fields = helper.make_tensor("codes.uint2", TensorProto.UINT2, [n, k], pack_fields(codes.reshape(-1) + 1, 2).tobytes(), raw=True)
    nodes = [
        helper.make_node("DequantizeLinear", ["codes.uint2", "unit"], ["fields"]),
        helper.make_node("Sub", ["fields", "offset"], ["codes"]),
        helper.make_node("SpikeLinear", ["x" if graded is None else "spikes", "codes", "scale"], ["y"], domain="ai.edgespike"),
    ]
    inits = [fields, numpy_helper.from_array(np.float32(1), "unit"), numpy_helper.from_array(np.float32(1), "offset"),
             numpy_helper.from_array(scale, "scale")]
    functions = [onnx_exporter._spike_linear_body()]
    if graded is not None:
        inits += [numpy_helper.from_array(np.zeros((1, k), np.float32), "v0")]
        inits += [numpy_helper.from_array(np.full(1, v, np.float32), name) for name, v in
                  (("beta", 0.9), ("threshold", 1.0), ("graded", graded))]
        nodes.insert(0, helper.make_node("LIF", ["x", "v0", "beta", "threshold", "graded"], ["spikes", "v"], domain="ai.edgespike",
                                         reset=0, delayed_reset=0, strict=0))
        functions.append(onnx_exporter._lif_body())
    graph = helper.make_graph(nodes, "one_linear", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 1, k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    opsets = [helper.make_opsetid("", onnx_exporter.OPSET), helper.make_opsetid("ai.edgespike", 1)]
    return helper.make_model(graph, opset_imports=opsets, functions=functions)


def _run(model, **feeds) -> list[np.ndarray]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"]).run(None, feeds)


@pytest.mark.parametrize("graded", [None, 1.0, 0.37])
def test_one_linear_matches_float64(graded):
    rng = np.random.default_rng(0)
    k, n = 512, 384
    codes = rng.integers(-1, 2, size=(n, k)).astype(np.int8)
    scale = rng.uniform(0.01, 0.05, n).astype(np.float32)
    x = (rng.standard_normal((4, 1, k)) * 3).astype(np.float32)
    model = _one_linear(codes, scale, graded)
    counts = specialise(model)
    expected_counts = {"spike_fed": 0, "dense": 1, "standard": 0, "lif_unrolled": 0}
    if graded is not None:
        expected_counts.update(spike_fed=1, dense=0, lif_unrolled=1)
    assert counts == expected_counts
    if graded is None:
        inputs = x.astype(np.float64)
    else:  # the LIF's spikes, from the standard graph: the same law
        probe = _one_linear(codes, scale, graded)
        probe.graph.output.append(helper.make_empty_tensor_value_info("spikes"))
        inputs = _run(probe, x=x)[1].astype(np.float64)
        assert set(np.unique(inputs)) <= {0.0, np.float32(graded)}
    expected = (inputs @ codes.T.astype(np.float64)) * scale
    error = np.abs(_run(model, x=x)[0] - expected).max() / np.abs(expected).max()
    assert error <= 1e-6


def test_one_int8_piece_is_not_enough_for_dense_inputs(monkeypatch):
    """What the split is for: a dense input read as one int8 piece is off by ~1e-2."""
    monkeypatch.setattr(ort_runtime, "DENSE_PIECES", 1)
    rng = np.random.default_rng(0)
    codes = rng.integers(-1, 2, size=(384, 512)).astype(np.int8)
    scale = np.full(384, 0.02, np.float32)
    x = (rng.standard_normal((4, 1, 512)) * 3).astype(np.float32)
    model = _one_linear(codes, scale, None)
    specialise(model)
    expected = (x.astype(np.float64) @ codes.T.astype(np.float64)) * scale
    assert np.abs(_run(model, x=x)[0] - expected).max() / np.abs(expected).max() > 1e-3


@pytest.mark.parametrize("reset", RESETS)
@pytest.mark.parametrize("delayed", [0, 1])
@pytest.mark.parametrize("strict", [0, 1])
def test_unrolled_lif_is_the_scan_law(reset, delayed, strict):
    """Each reset law unrolled over T equals the ai.edgespike LIF function (its Scan body), bit for bit,
    on currents that land exactly on the threshold too (the >= / > difference)."""
    rng = np.random.default_rng(1)
    shape = (5, 2, 16)
    current = np.round(rng.uniform(-0.5, 1.5, shape) * 4) / 4  # multiples of 1/4: exact threshold hits
    nodes = [helper.make_node("LIF", ["current", "v0", "beta", "threshold", "graded"], ["spikes", "v"], domain="ai.edgespike",
                              reset=RESETS.index(reset), delayed_reset=delayed, strict=strict)]
    inits = [numpy_helper.from_array(rng.uniform(0, 0.5, shape[1:]).astype(np.float32), "v0"),
             numpy_helper.from_array(np.full(shape[2], 0.75, np.float32), "beta"),
             numpy_helper.from_array(np.float32(1.0), "threshold"), numpy_helper.from_array(np.float32(0.5), "graded")]
    graph = helper.make_graph(nodes, "lif", [helper.make_tensor_value_info("current", TensorProto.FLOAT, list(shape))],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("spikes", "v")], inits)
    opsets = [helper.make_opsetid("", onnx_exporter.OPSET), helper.make_opsetid("ai.edgespike", 1)]
    model = helper.make_model(graph, opset_imports=opsets, functions=[onnx_exporter._lif_body()])
    standard = _run(model, current=current.astype(np.float32))
    assert specialise(model)["lif_unrolled"] == 1
    unrolled = _run(model, current=current.astype(np.float32))
    assert standard[0].any() and not standard[0].all()  # some spikes, not all
    for theirs, ours in zip(standard, unrolled):
        np.testing.assert_array_equal(ours, theirs)

