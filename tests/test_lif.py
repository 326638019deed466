"""edgespike::lif: hand-computed values; parity with snntorch's Leaky (spikes exactly equal,
membranes to 1e-6, fp32); the backward against autograd of an independent surrogate reference
(1e-12, float64); the lowerings of every law (ONNX in onnxruntime, Core ML in the MIL
interpreter, ExecuTorch, the NeuronChip fixed-point neurons) against eager, spikes exactly equal."""

import itertools
import json

import numpy as np
import pytest
import snntorch
import torch

import edgespike.ops  # noqa: F401
from edgespike import models
from edgespike.config import SpikeConfig
from edgespike.nn import LIF
from edgespike.ops.lif import RESETS


def lif(current, v0, beta=0.5, threshold=1.0, reset="subtract", delayed=False, strict=False, graded=1.0, slope=5.0):
    params = (torch.as_tensor(x, dtype=current.dtype) for x in (beta, threshold, graded))
    return torch.ops.edgespike.lif(current, v0, *params, reset, delayed, strict, slope)


def test_fp32_lif_hand_computed_subtract():
    # v: 0.6 -> 0.3+0.6=0.9 -> 0.45+0.6=1.05 fires, -> 0.05 -> 0.025+0.6=0.625
    current = torch.full((4, 1), 0.6)
    spikes, v = lif(current, torch.zeros(1))
    assert spikes.flatten().tolist() == [0.0, 0.0, 1.0, 0.0]
    assert v.item() == pytest.approx(0.625, abs=1e-6)


def test_fp32_lif_hand_computed_zero_reset():
    current = torch.tensor([[1.2], [0.5]])
    spikes, v = lif(current, torch.zeros(1), reset="zero")
    assert spikes.flatten().tolist() == [1.0, 0.0]
    assert v.item() == pytest.approx(0.5)


def test_hand_computed_delayed_strict_graded():
    # delayed subtract, beta 1, strict: v 1 (not > 1) -> 2 fires -> 2 - 1 = 1 (the reset lands a step late) -> 1
    current = torch.tensor([[1.0], [1.0], [0.0], [0.0]])
    spikes, v = lif(current, torch.zeros(1), beta=1.0, delayed=True, strict=True, graded=0.5)
    assert spikes.flatten().tolist() == [0.0, 0.5, 0.0, 0.0] and v.item() == 1.0
    # not strict: 1 fires -> 1 + 1 - 1 = 1 fires -> 1 - 1 = 0 -> 0
    spikes, v = lif(current, torch.zeros(1), beta=1.0, delayed=True)
    assert spikes.flatten().tolist() == [1.0, 1.0, 0.0, 0.0] and v.item() == 0.0
    # 2.5 fires and is kept (delayed) -> 2.5 - 1 = 1.5; immediate: 2.5 - 1 = 1.5 -> 1.5 fires -> 0.5
    assert lif(torch.tensor([[2.5], [0.0]]), torch.zeros(1), beta=1.0, delayed=True)[1].item() == 1.5
    assert lif(torch.tensor([[2.5], [0.0]]), torch.zeros(1), beta=1.0)[1].item() == 0.5


@pytest.mark.parametrize("delayed", [False, True])
def test_lif_chunks_compose(delayed):
    """Two calls with the carried membrane equal one call over all steps (decode == sequence)."""
    current = torch.randn(12, 3, 5)
    spikes, v = lif(current, torch.zeros(3, 5), beta=0.9, delayed=delayed)
    first, v_mid = lif(current[:7], torch.zeros(3, 5), beta=0.9, delayed=delayed)
    second, v_end = lif(current[7:], v_mid, beta=0.9, delayed=delayed)
    assert torch.equal(torch.cat([first, second]), spikes)
    assert torch.equal(v_end, v)


# --- parity with snntorch.Leaky ------------------------------------------------------------------

D = 6
GRID = torch.tensor([-0.5, -0.25, 0.0, 0.25, 0.5, 0.75, 1.0, 1.25])  # sums exact in fp32: ties with the threshold happen


def _inputs(kind: str, steps: int = 12, batch: int = 3):
    generator = torch.Generator().manual_seed(7)
    if kind == "grid":
        return tuple(GRID[torch.randint(0, len(GRID), shape, generator=generator)] for shape in ((steps, batch, D), (batch, D)))
    return torch.randn(steps, batch, D, generator=generator) * 0.8 + 0.3, torch.randn(batch, D, generator=generator)


SNN_CASES = {  # Leaky keyword arguments beyond reset_mechanism
    "default": dict(beta=0.5),
    "threshold": dict(beta=0.75, threshold=1.25),
    "graded": dict(beta=0.5, graded_spikes_factor=2.5),
    "learned_beta": dict(beta=torch.tensor(0.75), learn_beta=True),
    "beta_above_one": dict(beta=torch.tensor(1.5)),  # clamped to 1, by both
    "per_neuron_beta": dict(beta=torch.tensor([0.25, 0.5, 1.0, 1.5, -0.5, 0.75]), learn_beta=True),
}


@pytest.mark.parametrize("kind", ["grid", "random"])
@pytest.mark.parametrize("case", SNN_CASES)
@pytest.mark.parametrize("reset", RESETS)
def test_matches_snntorch_leaky_over_calls_with_carried_membrane(reset, case, kind):
    """snntorch's default Leaky (reset_delay=True, fires on mem > threshold) is the delayed, strict
    law, fed its own beta / threshold / graded_spikes_factor tensors. snntorch runs step by step
    carrying its mem; the op runs 3 calls of 3, 4 and 5 steps carrying v."""
    leaky = snntorch.Leaky(reset_mechanism=reset, **SNN_CASES[case])
    current, v0 = _inputs(kind)
    with torch.no_grad():
        mem, theirs, their_mems = v0, [], []
        for t in range(current.shape[0]):
            spike, mem = leaky(current[t], mem)
            theirs.append(spike)
            their_mems.append(mem)
        v, ours, our_mems, start = v0, [], [], 0
        for length in (3, 4, 5):
            spikes, v = torch.ops.edgespike.lif(current[start : start + length], v, leaky.beta, leaky.threshold,
                                                leaky.graded_spikes_factor, reset, True, True)
            ours.append(spikes)
            our_mems.append(v)
            start += length
    assert torch.equal(torch.cat(ours), torch.stack(theirs))
    for ours_v, theirs_v in zip(our_mems, [their_mems[2], their_mems[6], their_mems[11]], strict=True):
        torch.testing.assert_close(ours_v, theirs_v, atol=1e-6, rtol=0)
    if case == "graded":
        assert set(torch.stack(theirs).unique().tolist()) == {0.0, 2.5}
    if kind == "grid":  # the grid ties the threshold: firing on >= would not match
        loose, _ = torch.ops.edgespike.lif(current, v0, leaky.beta, leaky.threshold, leaky.graded_spikes_factor, reset, True, False)
        assert not torch.equal(loose, torch.stack(theirs))


def test_lif_module_configured_as_snntorch_matches_leaky():
    """edgespike.nn.LIF with delayed_reset and strict (the config path) against Leaky's defaults."""
    module = LIF(SpikeConfig(beta=0.75, threshold=1.25, reset="zero", delayed_reset=True, strict=True))
    leaky = snntorch.Leaky(beta=0.75, threshold=1.25, reset_mechanism="zero")
    current, v0 = _inputs("grid")
    with torch.no_grad():
        spikes, v = module(current, v0)
        mem, theirs = v0, []
        for t in range(current.shape[0]):
            spike, mem = leaky(current[t], mem)
            theirs.append(spike)
    assert torch.equal(spikes, torch.stack(theirs))
    torch.testing.assert_close(v, mem, atol=1e-6, rtol=0)


def test_snntorch_without_reset_delay_is_not_the_immediate_law():
    """snntorch's reset_delay=False subtracts the previous step's reset before firing, then corrects
    it: a membrane left above threshold by a reset does not fire again, where edgespike's immediate
    law fires (v 2.5 -> fires, 1.5 -> fires). No parity is claimed for reset_delay=False."""
    current, v0 = torch.tensor([[[2.5]], [[0.0]]]), torch.zeros(1, 1)
    leaky = snntorch.Leaky(beta=1.0, reset_delay=False)
    with torch.no_grad():
        mem, theirs = v0, []
        for t in range(2):
            spike, mem = leaky(current[t], mem)
            theirs.append(spike.item())
    ours, _ = lif(current, v0, beta=1.0, strict=True)
    assert theirs == [1.0, 0.0] and ours.flatten().tolist() == [1.0, 1.0]


# --- backward ------------------------------------------------------------------------------------


def _surrogate_reference(current, v0, beta, threshold, reset, slope, delayed=False, strict=False, graded=1.0):
    """The same recurrence with a differentiable fast-sigmoid spike, via autograd; resets detached."""

    class Spike(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return (x > 0 if strict else x >= 0).to(x.dtype)

        @staticmethod
        def backward(ctx, grad):
            (x,) = ctx.saved_tensors
            return grad / (1 + slope * x.abs()) ** 2

    beta = min(max(beta, 0.0), 1.0)
    v, out = v0, []
    for t in range(current.shape[0]):
        if delayed:
            r = Spike.apply(v - threshold).detach()
            if reset == "subtract":
                v = beta * v + current[t] - r * threshold
            elif reset == "zero":
                v = beta * (1 - r) * v + current[t]
            else:
                v = beta * v + current[t]
            s = Spike.apply(v - threshold)
        else:
            v = beta * v + current[t]
            s = Spike.apply(v - threshold)
            if reset == "subtract":
                v = v - s.detach() * threshold
            elif reset == "zero":
                v = v * (1 - s.detach())
        out.append(s * graded)
    return torch.stack(out), v


@pytest.mark.parametrize("delayed", [False, True])
@pytest.mark.parametrize("reset", RESETS)
def test_lif_backward_matches_autograd_of_surrogate(reset, delayed):
    current = torch.randn(9, 4, 6, dtype=torch.float64, requires_grad=True)
    v0 = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    weights_s, weights_v = torch.randn(9, 4, 6, dtype=torch.float64), torch.randn(4, 6, dtype=torch.float64)
    spikes, v = lif(current, v0, 0.8, 0.7, reset, delayed, strict=delayed, graded=1.5, slope=3.0)
    grads = torch.autograd.grad((spikes * weights_s).sum() + (v * weights_v).sum(), (current, v0))
    ref_spikes, ref_v = _surrogate_reference(current, v0, 0.8, 0.7, reset, 3.0, delayed, delayed, 1.5)
    ref = torch.autograd.grad((ref_spikes * weights_s).sum() + (ref_v * weights_v).sum(), (current, v0))
    assert torch.equal(spikes, ref_spikes)
    torch.testing.assert_close(grads[0], ref[0], atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(grads[1], ref[1], atol=1e-12, rtol=1e-12)


def test_surrogate_gradient_is_nonzero_near_threshold_and_small_far():
    current = torch.tensor([[0.99], [-50.0]], requires_grad=True)  # step 0 near threshold, step 1 far below
    spikes, _ = lif(current[:1], torch.zeros(1))
    (grad_near,) = torch.autograd.grad(spikes.sum(), current)
    spikes, _ = lif(current[1:], torch.zeros(1))
    (grad_far,) = torch.autograd.grad(spikes.sum(), current)
    assert grad_near[0].item() > 0.9
    assert 0 < grad_far[1].item() < 1e-3


def test_lif_rejects_mismatched_membrane():
    with pytest.raises(ValueError, match="v0 must have shape"):
        lif(torch.zeros(2, 3), torch.zeros(4))


# --- lowerings -----------------------------------------------------------------------------------

SNNTORCH_SPIKE = SpikeConfig(reset="zero", delayed_reset=True, strict=True)
LAWS = list(itertools.product(RESETS, (False, True), (False, True)))  # (reset, delayed, strict)
PER_NEURON_BETA = [0.5, 1.5, 0.25, -0.5, 1.0, 0.75]  # clamped to [0, 1]
PER_NEURON_THRESHOLD = [0.5, 0.25, 0.75, 0.5, 1.0, 0.5]


class Laws(torch.nn.Module):
    """One op call per law, the parameters as buffers (constants to every target): beta per
    neuron; threshold per neuron or 0.5; graded 1, 1.5 or -0.5. forward -> (spikes, v) per law."""

    def __init__(self):
        super().__init__()
        for i in range(len(LAWS)):
            self.register_buffer(f"beta{i}", torch.tensor(PER_NEURON_BETA))
            self.register_buffer(f"threshold{i}", torch.tensor(PER_NEURON_THRESHOLD if i % 2 else 0.5))
            self.register_buffer(f"graded{i}", torch.tensor((1.0, 1.5, -0.5)[i % 3]))

    def forward(self, current, v0):
        out = []
        for i, law in enumerate(LAWS):
            params = (getattr(self, f"{name}{i}") for name in ("beta", "threshold", "graded"))
            out.extend(torch.ops.edgespike.lif(current, v0, *params, *law, 5.0))
        return tuple(out)


def _lowering_inputs():
    grid, random = _inputs("grid", steps=9, batch=2), _inputs("random", steps=9, batch=2)
    return [tuple(t.contiguous() for t in pair) for pair in (grid, random)]


def _assert_matches_eager(module, run, inputs):
    for current, v0 in inputs:
        with torch.no_grad():
            expected = [t.numpy() for t in module(current, v0)]
        outputs = run(current.numpy(), v0.numpy())
        assert len(outputs) == len(expected) == 2 * len(LAWS)
        for i, law in enumerate(LAWS):
            np.testing.assert_array_equal(outputs[2 * i], expected[2 * i], err_msg=f"spikes of {law}")
            np.testing.assert_allclose(outputs[2 * i + 1], expected[2 * i + 1], atol=1e-6, rtol=0, err_msg=f"v of {law}")


def test_onnx_function_runs_every_law_in_onnxruntime():
    """Through the exporter's translation and function bodies, checked, run by stock onnxruntime."""
    import onnx
    import onnxruntime as ort
    from edgespike.exporters import onnx as onnx_exporter

    module, inputs = Laws().eval(), _lowering_inputs()
    ops = onnx_exporter._ops()
    onnx_exporter._register_schemas(ops)
    program = torch.onnx.export(
        module, inputs[0], dynamo=True, opset_version=onnx_exporter.OPSET, input_names=["current", "v0"],
        custom_translation_table={op.torch_op: op.translate for op in ops}, optimize=False, verbose=False,
    )
    model = program.model_proto
    assert sum(node.op_type == "LIF" and node.domain == onnx_exporter.DOMAIN for node in model.graph.node) == len(LAWS)
    model.functions.extend(op.body() for op in ops if op.name == "LIF")
    onnx.checker.check_model(model, full_check=True)
    session = ort.InferenceSession(model.SerializeToString())
    _assert_matches_eager(module, lambda c, v: session.run(None, {"current": c, "v0": v}), inputs)


def _coreml_program(module, inputs, path, ct):
    from edgespike.exporters.coreml import _register_composites
    from edgespike.runtimes.coreml.interpreter import MILProgram

    _register_composites()
    current, v0 = inputs
    mlmodel = ct.convert(
        torch.export.export(module, inputs).run_decompositions({}), minimum_deployment_target=ct.target.iOS18,
        inputs=[ct.TensorType(name="current", shape=current.shape), ct.TensorType(name="v0", shape=v0.shape)],
        compute_precision=ct.precision.FLOAT32, skip_model_load=True,
    )
    mlmodel.save(str(path))
    return MILProgram.load(path)


def test_coreml_composite_runs_every_law_in_the_mil_interpreter(tmp_path):
    import coremltools as ct
    from edgespike.exporters.coreml import SPIKES_SUFFIX

    module, inputs = Laws().eval(), _lowering_inputs()
    program = _coreml_program(module, inputs[0], tmp_path / "laws.mlpackage", ct)
    _assert_matches_eager(module, lambda c, v: list(program.run({"current": c, "v0": v}, {}).values()), inputs)
    names = list(program.run({"current": inputs[0][0].numpy(), "v0": inputs[0][1].numpy()}, {}))
    assert all(SPIKES_SUFFIX in name for name in names[::2])  # validation reads the (graded) stacked spikes by name


def test_coreml_refuses_a_computed_lif_parameter(tmp_path):
    import coremltools as ct

    class ComputedBeta(torch.nn.Module):
        def forward(self, current, v0, beta):
            return torch.ops.edgespike.lif(current, v0, beta, torch.tensor(1.0), torch.tensor(1.0), "subtract")

    inputs = (torch.zeros(2, 3), torch.zeros(3), torch.full((3,), 0.5))
    from edgespike.exporters.coreml import _register_composites

    _register_composites()
    with pytest.raises(ValueError, match="beta of LIF .* must be a constant tensor"):
        ct.convert(torch.export.export(ComputedBeta(), inputs).run_decompositions({}), minimum_deployment_target=ct.target.iOS18,
                   inputs=[ct.TensorType(name=n, shape=t.shape) for n, t in zip(("current", "v0", "beta"), inputs)],
                   skip_model_load=True)


@pytest.mark.parametrize("reset,delayed,strict", LAWS)
def test_lif_scan_is_the_reference_bit_for_bit(reset, delayed, strict):
    from edgespike.ops.lif import lif_reference, lif_scan

    current, v0 = _inputs("random", steps=40, batch=2)
    params = torch.tensor(PER_NEURON_BETA), torch.tensor(PER_NEURON_THRESHOLD), torch.tensor(1.5)
    for ours, theirs in zip(lif_scan(current, v0, *params, reset, delayed, strict), lif_reference(current, v0, *params, reset, delayed, strict)):
        assert torch.equal(ours, theirs)


@pytest.mark.parametrize("steps", [9, 40])  # 40: past UNROLLED_LIF_STEPS, one torch.scan loop (a prefill's LIF)
def test_executorch_program_runs_every_law(steps):
    from executorch.exir import to_edge
    from executorch.runtime import Runtime

    from edgespike.exporters.executorch import DECOMPOSITIONS, UNROLLED_LIF_STEPS

    assert (steps > UNROLLED_LIF_STEPS) == (steps == 40)
    module = Laws().eval()
    inputs = [tuple(t.contiguous() for t in _inputs(kind, steps=steps, batch=2)) for kind in ("grid", "random")]
    program = to_edge(torch.export.export(module, inputs[0]).run_decompositions(DECOMPOSITIONS)).to_executorch()
    method = Runtime.get().load_program(program.buffer).load_method("forward")
    run = lambda c, v: [t.numpy() for t in method.execute([torch.from_numpy(c), torch.from_numpy(v)])]  # noqa: E731
    _assert_matches_eager(module, run, inputs)


@pytest.mark.parametrize("reset,delayed,strict", LAWS)
def test_neuronchip_fixed_point_neurons_run_every_law(reset, delayed, strict):
    """Where fixed point is exact (beta 1/2 as a decay shift, inputs of +-0.5, threshold 0.75, 10
    fractional bits over 8 steps) the chip's integer LIF equals the op, carried over two calls."""
    from edgespike.chip import load_chip
    from edgespike.runtimes.neuronchip.simulator import ChipLayer, LayerSim, Ledger, LifParams

    chip = load_chip("loihi")
    params = LifParams(frac_bits=10, decay=2048, decay_bits=12, threshold=0.75, reset=reset, delayed_reset=delayed, strict=strict)
    codes = np.concatenate([np.eye(D), -np.eye(D)], axis=1).astype(np.int8)  # acc = spikes[:D] - spikes[D:]
    layer = ChipLayer("fc", 0, codes, np.full(D, 0.5, np.float32), None, [(0, 0, D)], None, lif=params)
    sim, ledger = LayerSim(layer, chip), Ledger(chip)
    inputs = (torch.rand(8, 1, 2 * D, generator=torch.Generator().manual_seed(3)) < torch.tensor([0.8] * D + [0.3] * D)).float().numpy()
    ledger.open(layer, (0,), 8)
    acc = sim.accumulate(inputs, ledger, True)
    first, membrane = sim.lif(acc[:5], np.zeros((1, D), np.int64), ledger)
    second, membrane = sim.lif(acc[5:], membrane, ledger)
    current = torch.from_numpy(acc.astype(np.float32) * 0.5)
    spikes, v = lif(current, torch.zeros(1, D), 0.5, 0.75, reset, delayed, strict)
    np.testing.assert_array_equal(np.concatenate([first, second]), spikes.numpy())
    np.testing.assert_array_equal(membrane * sim.unit, v.numpy())
    assert spikes.sum() > 0


def test_neuronchip_keeps_lifs_it_cannot_run_on_the_host(tmp_path):
    """Graded spikes and per-neuron beta / threshold stay on the host, each with its reason; the
    layer that read graded spikes becomes a host matmul; snntorch's law runs on the chip."""
    from edgespike.capture import decode_step
    from edgespike.exporters import ExportOptions
    from edgespike.exporters.neuronchip import NeuronChipExporter

    model = models.create("pulse", "tiny", n_layers=3, spike=SNNTORCH_SPIKE)
    first, second = model.layers[0], model.layers[1]
    first.hidden_lif.beta = torch.linspace(0.5, 0.9, first.up.out_features)
    second.hidden_lif.graded_spikes_factor = torch.tensor(0.5)
    NeuronChipExporter().lower(decode_step(model), ExportOptions(precision="fp32"), tmp_path)
    mapping = json.loads((tmp_path / "chip.json").read_text())
    layers = {layer["name"]: layer for layer in mapping["layers"]}
    host = {entry["module"]: entry["reason"] for entry in mapping["host"]}
    assert layers["layers.0.up"]["lif"] is None and "per-neuron beta" in host["layers.0.hidden_lif"]
    assert layers["layers.1.up"]["lif"] is None and "graded spikes" in host["layers.1.hidden_lif"]
    assert "layers.1.down" not in layers and "layers.0.down" in layers
    lif = layers["layers.2.up"]["lif"]
    assert (lif["module"], lif["reset"], lif["delayed_reset"], lif["strict"]) == ("layers.2.hidden_lif", "zero", True, True)


def test_neuronchip_bundle_of_the_snntorch_law_validates(tmp_path):
    from edgespike.exporters import export
    from edgespike.validate import validate_artifact

    model = models.create("pulse", "tiny", spike=SNNTORCH_SPIKE)
    result = export(model, "neuronchip", tmp_path / "chip", validate=lambda d, m: validate_artifact(d, m, model))
    mapping = json.loads((result.path / "chip.json").read_text())
    assert all(layer["lif"]["delayed_reset"] for layer in mapping["layers"] if layer["lif"])
    assert result.manifest["validation"]["passed"]


def test_lif_fake_kernel_traces_under_export():
    class M(torch.nn.Module):
        def forward(self, current, v0):
            return torch.ops.edgespike.lif(current, v0, torch.tensor(0.9), torch.tensor(1.0), torch.tensor(1.0), "subtract")

    program = torch.export.export(M(), (torch.randn(4, 2, 3), torch.zeros(2, 3)))
    targets = [str(node.target) for node in program.graph.nodes if node.op == "call_function"]
    assert "edgespike.lif.default" in targets


def test_coreml_ternary_spike_linear_is_exact_in_fp16_compute(tmp_path):
    """Spikes x ternary codes sum to integers, which fp16 holds exactly up to 2048, and the scale
    multiply stays fp32: at --precision fp16 the spike-fed linear equals float64's sum to fp32 rounding
    (a weight of codes x scale rounded to fp16, as it was stored before, is off by ~1e-4 relative)."""
    import coremltools as ct
    from edgespike.exporters.coreml import _compute_precision, _register_composites
    from edgespike.runtimes.coreml.interpreter import MILProgram

    class SpikeFed(torch.nn.Module):
        def __init__(self, codes, scale):
            super().__init__()
            self.register_buffer("codes", codes)
            self.register_buffer("scale", scale)

        def forward(self, spikes):
            return torch.ops.edgespike.spike_linear(spikes, self.codes, self.scale)

    generator = torch.Generator().manual_seed(0)
    codes = torch.randint(-1, 2, (48, 700), generator=generator, dtype=torch.int8)
    scale = torch.rand(48, generator=generator) * 0.37 + 0.01
    spikes = (torch.rand(4, 700, generator=generator) < 0.3).float()
    _register_composites()
    mlmodel = ct.convert(
        torch.export.export(SpikeFed(codes, scale), (spikes,)).run_decompositions({}), minimum_deployment_target=ct.target.iOS18,
        inputs=[ct.TensorType(name="spikes", shape=spikes.shape)], outputs=[ct.TensorType(name="y", dtype=np.float32)],
        compute_precision=_compute_precision("fp16", "fp16x2"), skip_model_load=True,
    )
    mlmodel.save(str(tmp_path / "linear.mlpackage"))
    program = MILProgram.load(tmp_path / "linear.mlpackage")
    ops = [op.op_type for op in program.function.operations]
    assert "cast" in ops and ops.index("mul") > ops.index("matmul")  # the sums in fp16, then the scale in fp32
    (out,) = program.run({"spikes": spikes.numpy()}, {}).values()
    exact = (torch.nn.functional.linear(spikes.double(), codes.double()) * scale.double()).numpy()
    np.testing.assert_allclose(out, exact, rtol=1e-6, atol=1e-6)
    rounded_weight = (codes.double() * scale.double()[:, None]).half().double()
    assert np.abs(torch.nn.functional.linear(spikes.double(), rounded_weight).numpy() - exact).max() > 1e-4
