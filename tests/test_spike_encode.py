"""W8ASpike codings: exact over their ranges, all int8 values included."""

import pytest
import torch

from edgespike.ops import spike_range, spike_weights

INT8 = torch.arange(-128, 128, dtype=torch.float32)


def encode(x, timesteps, coding, twos=False):
    return torch.ops.edgespike.spike_encode(x, timesteps, coding, twos)


def decode(spikes, timesteps, coding, twos=False):
    return torch.tensordot(spike_weights(timesteps, coding, twos), spikes, dims=1)


def test_ternary_exact_over_all_int8():
    spikes = encode(INT8, 128, "ternary")
    assert set(spikes.unique().tolist()) == {-1.0, 0.0, 1.0}
    assert torch.equal(decode(spikes, 128, "ternary"), INT8)


def test_bitwise_twos_complement_exact_over_all_int8_in_8_steps():
    spikes = encode(INT8, 8, "bitwise", True)
    assert set(spikes.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(decode(spikes, 8, "bitwise", True), INT8)


def test_bitwise_unsigned_exact_over_all_uint8():
    values = torch.arange(0, 256, dtype=torch.float32)
    assert torch.equal(decode(encode(values, 8, "bitwise"), 8, "bitwise"), values)


def test_binary_exact_over_non_negative_int8_and_clamps_negatives():
    spikes = encode(INT8, 127, "binary")
    decoded = decode(spikes, 127, "binary")
    assert torch.equal(decoded[INT8 >= 0], INT8[INT8 >= 0])
    assert torch.all(decoded[INT8 < 0] == 0)
    # count coding: the spikes of a value are its first |x| steps
    assert spikes[:5, 128 + 5].tolist() == [1.0] * 5 and spikes[5, 128 + 5].item() == 0.0


@pytest.mark.parametrize("coding,twos", [("binary", False), ("ternary", False), ("bitwise", False), ("bitwise", True)])
def test_small_timesteps_clamp_to_range(coding, twos):
    low, high = spike_range(4, coding, twos)
    decoded = decode(encode(INT8, 4, coding, twos), 4, coding, twos)
    assert torch.equal(decoded, INT8.clamp(low, high))


def test_straight_through_gradient_is_the_decoder():
    x = torch.tensor([3.0, -2.0], requires_grad=True)
    spikes = encode(x, 4, "bitwise", True)
    upstream = torch.randn_like(spikes)
    (grad,) = torch.autograd.grad((spikes * upstream).sum(), x)
    torch.testing.assert_close(grad, torch.tensordot(spike_weights(4, "bitwise", True), upstream, dims=1))


def test_rejects_unknown_coding_and_twos_complement_misuse():
    with pytest.raises(ValueError, match="coding must be one of"):
        encode(INT8, 4, "gray")
    with pytest.raises(ValueError, match="bitwise coding only"):
        encode(INT8, 4, "ternary", True)
