"""edgespike::lif against hand-computed values and an autograd reference of its surrogate."""

import pytest
import torch

import edgespike.ops  # noqa: F401


def lif(current, v0, beta=0.5, threshold=1.0, reset="subtract", slope=5.0):
    return torch.ops.edgespike.lif(current, v0, beta, threshold, reset, slope)


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


def test_lif_chunks_compose():
    """Two calls with the carried membrane equal one call over all steps (decode == sequence)."""
    current = torch.randn(12, 3, 5)
    spikes, v = lif(current, torch.zeros(3, 5), beta=0.9)
    first, v_mid = lif(current[:7], torch.zeros(3, 5), beta=0.9)
    second, v_end = lif(current[7:], v_mid, beta=0.9)
    assert torch.equal(torch.cat([first, second]), spikes)
    assert torch.equal(v_end, v)


def _surrogate_reference(current, v0, beta, threshold, reset, slope):
    """The same recurrence with a differentiable fast-sigmoid spike, via autograd."""

    class Spike(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return (x >= 0).to(x.dtype)

        @staticmethod
        def backward(ctx, grad):
            (x,) = ctx.saved_tensors
            return grad / (1 + slope * x.abs()) ** 2

    v, out = v0, []
    for t in range(current.shape[0]):
        v = beta * v + current[t]
        s = Spike.apply(v - threshold)
        v = v - s.detach() * threshold if reset == "subtract" else v * (1 - s.detach())
        out.append(s)
    return torch.stack(out), v


@pytest.mark.parametrize("reset", ["subtract", "zero"])
def test_lif_backward_matches_autograd_of_surrogate(reset):
    current = torch.randn(9, 4, 6, dtype=torch.float64, requires_grad=True)
    v0 = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    weights_s, weights_v = torch.randn(9, 4, 6, dtype=torch.float64), torch.randn(4, 6, dtype=torch.float64)
    spikes, v = lif(current, v0, 0.8, 0.7, reset, 3.0)
    grads = torch.autograd.grad((spikes * weights_s).sum() + (v * weights_v).sum(), (current, v0))
    ref_spikes, ref_v = _surrogate_reference(current, v0, 0.8, 0.7, reset, 3.0)
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


def test_lif_fake_kernel_traces_under_export():
    class M(torch.nn.Module):
        def forward(self, current, v0):
            return torch.ops.edgespike.lif(current, v0, 0.9, 1.0, "subtract", 5.0)

    program = torch.export.export(M(), (torch.randn(4, 2, 3), torch.zeros(2, 3)))
    targets = [str(node.target) for node in program.graph.nodes if node.op == "call_function"]
    assert "edgespike.lif.default" in targets
