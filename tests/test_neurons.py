"""edgespike.nn.neurons against the real snntorch 1.0.0 neurons, every law, step by step."""

from __future__ import annotations

import pytest
import snntorch
import torch
from torch import nn

from edgespike.errors import EdgespikeError
from edgespike.nn.neurons import from_snntorch

WIDTH = 6


def make(kind: str, reset: str, delay: bool, init_hidden: bool = False, output: bool = False, all_to_all: bool = True):
    """A snntorch neuron with per-neuron decays outside [0, 1] (the clamp matters) and threshold != 1."""
    torch.manual_seed(0)
    beta = torch.rand(WIDTH) * 1.4 - 0.2
    kwargs = dict(threshold=0.7, reset_mechanism=reset, reset_delay=delay, init_hidden=init_hidden, output=output)
    if kind == "Leaky":
        return snntorch.Leaky(beta=beta, graded_spikes_factor=1.5, learn_beta=True, **kwargs)
    if kind == "Synaptic":
        return snntorch.Synaptic(alpha=torch.rand(WIDTH) * 1.2, beta=beta, learn_alpha=True, **kwargs)
    recurrent = dict(linear_features=WIDTH) if all_to_all else dict(all_to_all=False, V=torch.randn(WIDTH))
    if kind == "RLeaky":
        return snntorch.RLeaky(beta=beta, **recurrent, **kwargs)
    return snntorch.RSynaptic(alpha=torch.rand(WIDTH), beta=beta, **recurrent, **kwargs)


def inputs(steps: int = 24) -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(steps, 3, WIDTH) * 1.5  # big enough that membranes pass 2x threshold (r = 1 paths)


STATES = {"Leaky": 1, "Synaptic": 2, "RLeaky": 2, "RSynaptic": 3}


def explicit_run(neuron, kind, xs):
    """Call the neuron snntorch's explicit way, state passed back in, in its argument order."""
    state = [torch.zeros(xs.shape[1:]) for _ in range(STATES[kind])]
    outs = []
    for x in xs:
        result = neuron(x, *state)
        if kind in ("RLeaky", "RSynaptic"):
            state = [result[0], *result[1:]]
        else:
            state = list(result[1:])
        outs.append(torch.stack([result[0], result[-1]]))
    return torch.stack(outs)


@pytest.mark.parametrize("kind", list(STATES))
@pytest.mark.parametrize("reset", ["subtract", "zero", "none"])
@pytest.mark.parametrize("delay", [True, False])
def test_explicit_form_equals_snntorch(kind, reset, delay):
    """RSynaptic(reset_delay=False) included: snntorch 1.0.0 drops that correction, and so the lowering."""
    reference = make(kind, reset, delay)
    lowered = from_snntorch(reference, "lif")
    xs = inputs()
    with torch.no_grad():
        expected, got = explicit_run(reference, kind, xs), explicit_run(lowered, kind, xs)
    spikes = expected[:, 0]
    assert 0.05 < (spikes != 0).float().mean() < 0.95  # the laws are exercised, not a silent neuron
    if kind == "RLeaky":  # the op adds beta*mem to (input + recurrent), snntorch (beta*mem + input) + recurrent
        torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)
    else:
        assert torch.equal(got, expected)


@pytest.mark.parametrize("kind", list(STATES))
def test_hidden_form_carries_its_own_state_like_snntorch(kind):
    reference = make(kind, "zero", True, init_hidden=True, output=True, all_to_all=False)
    lowered = from_snntorch(reference, "lif")
    xs = inputs(16)
    with torch.no_grad():
        expected = [reference(x) for x in xs]
        got = [lowered(x) for x in xs]
    for e, g in zip(expected, got):
        assert len(e) == len(g)
        for a, b in zip(e, g):
            torch.testing.assert_close(b, a, rtol=0, atol=1e-6)
    assert set(lowered.hidden) == set(lowered.state_names)


def test_hidden_form_without_output_returns_spikes_only():
    lowered = from_snntorch(snntorch.Leaky(beta=0.9, init_hidden=True), "lif")
    assert isinstance(lowered(torch.ones(2, 3)), torch.Tensor)


def test_graded_spikes_and_learned_threshold_are_kept():
    reference = snntorch.Leaky(beta=0.8, threshold=torch.full((WIDTH,), 0.5), learn_threshold=True, graded_spikes_factor=2.5)
    lowered = from_snntorch(reference, "lif")
    spk, _ = lowered(torch.ones(1, WIDTH), torch.zeros(1, WIDTH))
    assert torch.equal(spk, torch.full((1, WIDTH), 2.5))


@pytest.mark.parametrize(
    "neuron, message",
    [
        (snntorch.Alpha(alpha=0.9, beta=0.8), r"snntorch.Alpha at 'x' is not supported; edgespike lowers snntorch Leaky"),
        (snntorch.Leaky(beta=0.9, inhibition=True), r"uses inhibition"),
        (snntorch.RLeaky(beta=0.9, conv2d_channels=2, kernel_size=3), r"convolutional recurrent"),
    ],
)
def test_unsupported_neurons_are_named(neuron, message):
    with pytest.raises(EdgespikeError, match=message):
        from_snntorch(neuron, "x")


def test_recurrent_linear_keeps_snntorch_names():
    reference = snntorch.RLeaky(beta=0.9, linear_features=4)
    lowered = from_snntorch(reference, "lif")
    assert isinstance(reference.recurrent, nn.Linear)
    torch.testing.assert_close(lowered.state_dict()["recurrent.weight"], reference.state_dict()["recurrent.weight"])
    assert {"beta", "threshold", "graded_spikes_factor"} <= set(lowered.state_dict())
