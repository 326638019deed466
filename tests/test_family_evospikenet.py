"""evospikenet: the seed's parameter budget 2Vd + 12Ld², and ChronoSpikeAttention's time decay."""

import math

import pytest
import torch

from edgespike.config import ConfigError
from edgespike.models import registry
from edgespike.models.base import sub_state
from edgespike.models.evospikenet import formula_parameters
from edgespike.nn import repeat_over_time

SEED_TABLE = {  # preset: (L, d, the seed's rounded estimate in billions)
    "3b-balanced": (32, 2560, 2.7),
    "3b-wider": (32, 2816, 3.2),
    "3b-deeper": (40, 2560, 3.3),
    "7b-llama": (32, 4096, 6.7),
    "7b-larger": (40, 4096, 8.3),
}


@pytest.mark.parametrize("preset", SEED_TABLE)
def test_full_size_parameter_counts_match_the_seed(preset):
    n_layers, d_model, billions = SEED_TABLE[preset]
    model = registry.create("evospikenet", preset, device="meta")
    config = model.config
    assert (config.n_layers, config.d_model, config.vocab_size) == (n_layers, d_model, 30522)
    norms = (2 * n_layers + 1) * d_model
    assert formula_parameters(config) == 2 * 30522 * d_model + 12 * n_layers * d_model**2
    assert model.num_parameters() == formula_parameters(config) + norms
    assert round(model.num_parameters() / 1e9, 1) == billions
    assert all(t.device.type == "meta" for t in model.state_dict().values())


def linear_parameters(module):
    return sum(p.numel() for name, p in module.named_parameters() if not name.startswith("norm."))


def test_block_is_4d2_attention_plus_8d2_ffn_and_the_head_is_untied():
    model = registry.create("evospikenet", "tiny")
    d = model.config.d_model
    block = model.layers[0]
    assert linear_parameters(block.attn) == 4 * d * d and linear_parameters(block.ffn) == 8 * d * d
    assert not any(name.endswith("bias") for name, _ in model.named_parameters())
    assert model.head.weight.data_ptr() != model.embed.weight.data_ptr()


def test_chrono_attention_weights_decay_exponentially_with_age():
    """With q = 0 every score is equal, so the weights are exp(-m_h * age) over the window, normalized."""
    model = registry.create("evospikenet", "tiny", weights="float", window=4).double()
    attn = model.layers[0].attn
    d, T, H, h, W = 64, attn.timesteps, attn.n_heads, attn.head_dim, attn.window
    with torch.no_grad():
        attn.q_proj.weight.zero_()
        attn.o_proj.weight.copy_(torch.eye(d))
    x = torch.randn(1, 7, d, dtype=torch.float64)
    state = sub_state(model.init_state(1), "layers.0.attn.")
    with torch.no_grad():
        out, _ = attn(x, state)
        spikes, _ = attn.lif(repeat_over_time(attn.norm(x), T), state["v"])
        values = attn.v_proj(spikes).reshape(7, T, d).mean(dim=1)  # [S, d]
    assert spikes.sum() > 0
    for i in range(7):
        ages = torch.arange(min(i, W) + 1, dtype=torch.float64)  # keys i, i-1, ..., within the window
        for head in range(H):
            weights = torch.exp(-attn.slopes[head] * ages)
            expected = (weights[:, None] * values[i - ages.long(), head * h : (head + 1) * h]).sum(0) / weights.sum()
            torch.testing.assert_close(out[0, i, head * h : (head + 1) * h], expected, atol=1e-12, rtol=0)
    assert math.isclose(attn.slopes[0].item(), 2.0 ** (-8 / H))  # fixed, not learned
    assert "slopes" not in dict(model.named_parameters()) and not any("slopes" in k for k in model.state_dict())


def test_state_is_membranes_and_the_kv_window_per_layer():
    model = registry.create("evospikenet", "tiny")
    state = model.init_state(3)
    assert {k: tuple(v.shape) for k, v in state.items() if k.startswith("layers.1.")} == {
        "layers.1.attn.v": (3, 64),
        "layers.1.attn.kv.k": (3, 4, 16, 16),
        "layers.1.attn.kv.v": (3, 4, 16, 16),
        "layers.1.attn.kv.valid": (3, 16),
        "layers.1.ffn.v": (3, 64),
        "layers.1.ffn.v_hidden": (3, 256),
    }


def test_config_rejects_heads_that_do_not_divide_d():
    with pytest.raises(ConfigError, match="must divide by n_heads"):
        registry.preset_config("evospikenet", "tiny").replace(n_heads=5)
