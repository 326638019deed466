"""spikingbrain: GLA/SWA alternation, the 7B preset on meta, W8ASpike exactness per coding."""

import pytest
import torch

from edgespike.config import ConfigError
from edgespike.models import registry
from edgespike.models.spikingbrain import GatedLinearAttention, SlidingWindowAttention, gla_recurrence
from edgespike.nn import TernaryLinear
from edgespike.quant import quantize_activations, ternarize

CODINGS = [("binary", False), ("ternary", False), ("bitwise", False), ("bitwise", True)]
CODING_IDS = ["binary", "ternary", "bitwise", "bitwise-twos"]


def tiny(**overrides):
    return registry.create("spikingbrain", "tiny", **overrides).double()


def test_layers_alternate_gla_on_even_swa_on_odd():
    model = tiny(n_layers=4)
    assert [layer.kind for layer in model.layers] == ["gla", "swa", "gla", "swa"]
    assert [type(layer.attn) for layer in model.layers] == [GatedLinearAttention, SlidingWindowAttention] * 2
    state = model.init_state(2)
    assert state["layers.0.attn.S"].shape == (2, 4, 16, 16)  # [B, H, h, h]
    assert state["layers.1.attn.kv.k"].shape == (2, 2, 16, 16)  # [B, Hkv, W, h]
    assert not any(name.startswith("layers.0.attn.kv.") or name == "layers.1.attn.S" for name in state)


def test_7b_preset_builds_on_meta_with_the_seed_shapes():
    model = registry.create("spikingbrain", "spikingbrain-7b", device="meta")
    cfg = model.config
    d, V, L, ffn, kv, r, h = 3584, 152064, 28, 18944, 4 * 128, 16, 128
    assert (cfg.d_model, cfg.vocab_size, cfg.n_layers, cfg.n_heads, cfg.n_kv_heads, cfg.ffn_dim, cfg.window) == (
        d, V, L, 28, 4, ffn, 4096
    )  # fmt: skip
    gla, swa = model.layers[0], model.layers[1]
    assert gla.attn.k_proj.weight.shape == (kv, d) and gla.attn.gate_up.weight.shape == (d, r)
    assert swa.mlp.gate_proj.weight.shape == (ffn, d) and swa.mlp.down_proj.weight.shape == (d, ffn)
    assert model.lm_head.weight.shape == (V, d) and model.lm_head.weight is not model.embed.weight
    block = 2 * d * d + 2 * d * kv + 3 * d * ffn + 2 * d  # q, o, k, v, SwiGLU, norms
    gla_extra = d * d + d * r + r * d + d + h  # output gate, low-rank forget gate + bias, head norm
    assert model.num_parameters() == 2 * V * d + L * block + L // 2 * gla_extra + d
    assert 7.5e9 < model.num_parameters() < 8.0e9
    state = model.init_state(1)
    assert state["layers.0.attn.S"].shape == (1, 28, 128, 128) and state["layers.0.attn.S"].device.type == "meta"
    assert state["layers.27.attn.kv.v"].shape == (1, 4, 4096, 128)


def on_grid(encoder, shape):
    """Integer activations that fill the coding's range in every token: quantization is exact."""
    low, high = encoder.low, encoder.high
    if low < 0:  # signed: absmax maps onto the range's edge with scale 1
        x = torch.randint(low, high + 1, shape).double()
        x[..., 0] = low if -low >= high else high
        return x
    offset = torch.randint(-5, 5, shape[:-1] + (1,)).double()  # negative zero points too
    x = offset + torch.randint(0, high + 1, shape).double()
    x[..., 0], x[..., 1] = offset[..., 0], offset[..., 0] + high
    return x


@pytest.mark.parametrize("coding,twos", CODINGS, ids=CODING_IDS)
@pytest.mark.parametrize("weights", ["float", "ternary"])
def test_w8aspike_linear_equals_plain_linear_on_the_integer_grid(coding, twos, weights):
    model = tiny(coding=coding, twos_complement=twos, weights=weights)
    spikes_in, gate, up = model.layers[0].mlp.input_spikes, model.layers[0].mlp.gate_proj, model.layers[0].mlp.up_proj
    x = on_grid(spikes_in.encoder, (2, 3, 64))
    spiking_gate, spiking_up = spikes_in(x, gate, up)
    torch.testing.assert_close(spiking_gate, gate(x), atol=1e-12, rtol=0)
    torch.testing.assert_close(spiking_up, up(x), atol=1e-12, rtol=0)


@pytest.mark.parametrize("coding,twos", CODINGS, ids=CODING_IDS)
def test_w8aspike_linear_equals_linear_of_dequantized_activations(coding, twos):
    model = tiny(coding=coding, twos_complement=twos)
    spikes_in, down = model.layers[1].mlp.hidden_spikes, model.layers[1].mlp.down_proj
    encoder = spikes_in.encoder
    x = torch.randn(2, 3, 128, dtype=torch.float64)
    zero = x.amin(dim=-1, keepdim=True) if encoder.low == 0 else torch.zeros(2, 3, 1, dtype=torch.float64)
    q, scale = quantize_activations(x - zero, encoder.low, encoder.high)
    (y,) = spikes_in(x, down)
    torch.testing.assert_close(y, down(q * scale + zero), atol=1e-12, rtol=0)
    assert (y - down(x)).abs().max() > 1e-3  # activations really are quantized to T steps


@pytest.mark.parametrize("coding,twos", CODINGS, ids=CODING_IDS)
def test_each_coding_runs_step_by_step_and_trains(coding, twos):
    model = tiny(coding=coding, twos_complement=twos)
    tokens = torch.randint(0, 256, (2, 6))
    logits, state = model(tokens)
    step_state, step_logits = model.init_state(2), []
    with torch.no_grad():
        for i in range(tokens.shape[1]):
            out, step_state = model(tokens[:, i : i + 1], step_state)
            step_logits.append(out)
    torch.testing.assert_close(torch.cat(step_logits, dim=1), logits.detach(), atol=1e-10, rtol=0)
    torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), tokens[:, 1:].flatten()).backward()
    for layer in model.layers:
        assert layer.attn.q_proj.weight.grad.abs().sum() > 0 and layer.mlp.down_proj.weight.grad.abs().sum() > 0


def test_gla_recurrence_matches_its_parallel_form():
    """o_t = sum_{j<=t} (q_t * prod_{j<u<=t} alpha_u) . k_j v_j + (q_t * prod_{u<=t} alpha_u) S_0."""
    B, H, S, h = 2, 3, 5, 4
    q, k, v = (torch.randn(B, H, S, h, dtype=torch.float64) for _ in range(3))
    alpha = torch.rand(B, H, S, h, dtype=torch.float64) * 0.5 + 0.5
    memory = torch.randn(B, H, h, h, dtype=torch.float64)
    out, final = gla_recurrence(q, k, v, alpha, memory)
    A = alpha.log().cumsum(dim=2)  # [B, H, S, h]
    decay = torch.exp(A[:, :, :, None] - A[:, :, None, :])  # [B, H, t, j, h]
    scores = torch.einsum("bhtc,bhjc,bhtjc->bhtj", q, k, decay) * torch.ones(S, S, dtype=torch.float64).tril()
    expected = scores @ v + (q * A.exp()) @ memory
    torch.testing.assert_close(out, expected, atol=1e-12, rtol=0)
    expected_final = A[:, :, -1, :, None].exp() * memory + torch.einsum(
        "bhjc,bhjv->bhcv", k * torch.exp(A[:, :, -1:] - A), v
    )
    torch.testing.assert_close(final, expected_final, atol=1e-12, rtol=0)


def test_frozen_blocks_run_their_linears_on_spikes():
    model = tiny().eval()  # float64: float32 noise would break rounding ties differently in QAT and frozen
    block_linears = {name: m for name, m in model.layers.named_modules() if isinstance(m, TernaryLinear)}
    assert len(block_linears) == 10 + 7  # GLA 7 + MLP 3, SWA 4 + MLP 3
    inputs = {}

    def record(name):
        def hook(module, args):
            inputs.setdefault(name, args[0])

        return hook

    for name, module in block_linears.items():
        module.register_forward_pre_hook(record(name))
    tokens = torch.randint(0, 256, (1, 5))
    with torch.no_grad():
        expected, _ = model(tokens)
        frozen = ternarize(model)
        assert all(m.mode == "frozen" for m in block_linears.values())
        torch.testing.assert_close(frozen(tokens)[0], expected, atol=1e-10, rtol=0)
    spiking = {name for name, x in inputs.items() if set(x.unique().tolist()) <= {-1.0, 0.0, 1.0}}
    assert set(block_linears) - spiking == {"0.attn.gate_up"}  # the one linear read unspiked


@pytest.mark.parametrize(
    "overrides,message",
    [
        ({"coding": "rate"}, "coding must be one of"),
        ({"coding": "ternary", "twos_complement": True}, "twos_complement applies to coding='bitwise' only"),
        ({"n_heads": 3}, "must divide by n_heads"),
        ({"gate_temperature": 0.0}, "gate_temperature must be > 0"),
    ],
)
def test_config_rejects_bad_values(overrides, message):
    with pytest.raises(ConfigError, match=message):
        registry.preset_config("spikingbrain", "tiny").replace(**overrides)
