"""ultimate: the hybrid readout, the RWKV state and its stable WKV form, ternary weights."""

import torch

from edgespike.models import ultimate  # noqa: F401  (registers the family)
from edgespike.models.registry import create
from edgespike.models.ultimate import EMPTY, wkv
from edgespike.nn import TernaryLinear


def logits_of(model, tokens, state=None):
    with torch.no_grad():
        return model(tokens, state)[0]


def test_hybrid_readout_uses_spikes_and_membranes():
    model = create("ultimate", "tiny").eval()
    tokens = torch.randint(0, 128, (2, 5))
    both = logits_of(model, tokens)
    heads = (model.readout.spike_head.weight, model.readout.membrane_head.weight)
    with torch.no_grad():
        for head in heads:
            kept = head.clone()
            head.zero_()
            assert not torch.allclose(logits_of(model, tokens), both), "a readout part contributes nothing"
            head.copy_(kept)
        for head in heads:
            head.zero_()
    assert torch.equal(logits_of(model, tokens), torch.zeros_like(both))  # nothing but the two heads


@torch.no_grad()
def test_rwkv_state_carries_across_tokens():
    model = create("ultimate", "tiny").eval()
    token = torch.tensor([[7]])
    _, after_a = model(torch.randint(0, 128, (1, 6)))
    _, after_b = model(torch.randint(0, 128, (1, 6)))
    assert not torch.equal(model(token, after_a)[0], model(token, after_b)[0])

    forgotten = dict(after_a)  # the WKV sums emptied, everything else kept
    for i in range(model.config.n_layers):
        for name, value in {"a": 0.0, "b": 0.0, "p": EMPTY}.items():
            forgotten[f"layers.{i}.time.{name}"] = torch.full_like(after_a[f"layers.{i}.time.{name}"], value)
    assert not torch.equal(model(token, after_a)[0], model(token, forgotten)[0])


def test_stable_wkv_equals_the_direct_sums_and_chunks_compose():
    """wkv_t = (sum_{i<t} e^{-(t-1-i)w + k_i} v_i + e^{u+k_t} v_t) / (same with v = 1), float64."""
    batch, seq, d = 2, 9, 5
    k, v = torch.randn(batch, seq, d, dtype=torch.float64) * 3, torch.randn(batch, seq, d, dtype=torch.float64)
    w, u = torch.rand(d, dtype=torch.float64) + 0.01, torch.randn(d, dtype=torch.float64)
    empty = {"a": torch.zeros(batch, d, dtype=torch.float64), "b": torch.zeros(batch, d, dtype=torch.float64),
             "p": torch.full((batch, d), EMPTY, dtype=torch.float64)}  # fmt: skip
    out, _ = wkv(k, v, w, u, empty)
    for t in range(seq):
        past = torch.exp(-(t - 1 - torch.arange(t, dtype=torch.float64))[:, None] * w + k[:, :t])  # [B, t, d]
        now = torch.exp(u + k[:, t])
        expected = ((past * v[:, :t]).sum(1) + now * v[:, t]) / (past.sum(1) + now)
        torch.testing.assert_close(out[:, t], expected, rtol=1e-12, atol=1e-12)
    first, state = wkv(k[:, :4], v[:, :4], w, u, empty)
    second, _ = wkv(k[:, 4:], v[:, 4:], w, u, state)
    torch.testing.assert_close(torch.cat([first, second], 1), out, rtol=1e-12, atol=1e-12)


def test_stable_wkv_stays_finite_where_exp_overflows():
    batch, seq, d = 1, 4, 3
    k = torch.full((batch, seq, d), 120.0)  # e^120 overflows float32
    empty = {"a": torch.zeros(batch, d), "b": torch.zeros(batch, d), "p": torch.full((batch, d), EMPTY)}
    out, state = wkv(k, torch.ones(batch, seq, d), torch.ones(d), torch.zeros(d), empty)
    assert torch.isfinite(out).all() and all(torch.isfinite(x).all() for x in state.values())
    torch.testing.assert_close(out, torch.ones_like(out))


def test_weights_are_ternary_in_qat_mode():
    model = create("ultimate", "tiny")
    assert model.config.weights == "ternary"
    linears = [m for m in model.modules() if isinstance(m, TernaryLinear)]
    assert linears and all(m.mode == "qat" for m in linears)
    for linear in linears:  # the forward uses exactly three weight values: codes {-1, 0, 1} times scale
        codes, scale = linear.ste_codes()
        assert codes.detach().unique().tolist() == [-1.0, 0.0, 1.0]
        torch.testing.assert_close(scale, linear.weight.detach().abs().mean().reshape(1))
    tokens = torch.randint(0, 128, (1, 4))
    ternary = logits_of(model, tokens)
    model.set_weights("float")
    assert not torch.allclose(logits_of(model, tokens), ternary)
