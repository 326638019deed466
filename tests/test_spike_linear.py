"""edgespike::spike_linear and TernaryLinear: ternary codes, scales, STE, 2-bit packing."""

import pytest
import torch

from edgespike.nn import TernaryLinear
from edgespike.quant import absmean_scale, pack_ternary, ternarize, ternary_codes, unpack_ternary


def test_ternary_linear_spikes_equal_float_linear_of_dequantized_weights():
    spikes = (torch.rand(4, 3, 16) > 0.7).float()
    codes = torch.randint(-1, 2, (8, 16), dtype=torch.int8)
    scale = torch.rand(8) + 0.1
    out = torch.ops.edgespike.spike_linear(spikes, codes, scale)
    torch.testing.assert_close(out, spikes @ (codes.float() * scale[:, None]).T)
    # additions only: with unit scale every output is an integer count of signed adds
    counts = torch.ops.edgespike.spike_linear(spikes, codes, torch.ones(1))
    assert torch.equal(counts, counts.round())


def test_ternary_codes_absmean():
    weight = torch.tensor([[0.9, -0.1, -2.0, 0.4]])
    scale = absmean_scale(weight, per_channel=False)
    assert scale.item() == pytest.approx(0.85)
    assert ternary_codes(weight, scale).tolist() == [[1, 0, -1, 0]]


@pytest.mark.parametrize("per_channel", [False, True])
def test_ternary_linear_freeze_keeps_outputs(per_channel):
    layer = TernaryLinear(16, 8, per_channel=per_channel)
    spikes = (torch.rand(5, 16) > 0.5).float()
    before = layer(spikes)
    layer.freeze()
    assert layer.codes.dtype == torch.int8 and set(layer.codes.unique().tolist()) <= {-1, 0, 1}
    assert layer.scale.shape == ((8,) if per_channel else (1,))
    torch.testing.assert_close(layer(spikes), before)


def test_straight_through_estimator_passes_gradient_to_latent_weight():
    layer = TernaryLinear(6, 3)
    x = torch.randn(4, 6)
    upstream = torch.randn(4, 3)
    (layer(x) * upstream).sum().backward()
    torch.testing.assert_close(layer.weight.grad, upstream.T @ x)


def test_ternarize_replaces_plain_linears_and_freezes():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Sequential(torch.nn.Linear(4, 2)))
    ternarize(model)
    layers = [m for m in model.modules() if isinstance(m, TernaryLinear)]
    assert len(layers) == 2 and all(m.mode == "frozen" for m in layers)


@pytest.mark.parametrize("n", [1, 3, 4, 7, 64, 129])
def test_two_bit_packing_round_trips(n):
    codes = torch.randint(-1, 2, (5, n), dtype=torch.int8)
    packed = pack_ternary(codes)
    assert packed.dtype == torch.uint8 and packed.shape == (5, (n + 3) // 4)
    assert torch.equal(unpack_ternary(packed, n), codes)


def test_packing_rejects_non_ternary_codes():
    with pytest.raises(ValueError, match="must lie in"):
        pack_ternary(torch.tensor([[2]], dtype=torch.int8))
