"""Every family's tiny preset against the SpikingLM contract (DESIGN.md)."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from edgespike import models
from edgespike.errors import EdgespikeError
from edgespike.nn import LIF, SpikeEncoder

FAMILIES = sorted(name for name, family in models.FAMILIES.items() if "tiny" in family.presets)  # users' modules: test_module.py


def record_spikes(model):
    """Collect the spikes of every LIF population and spike encoder, in call order, per module."""
    spikes = {}
    handles = [
        module.register_forward_hook(lambda m, i, out, name=name: spikes.setdefault(name, []).append(out[0]))
        for name, module in model.named_modules()
        if isinstance(module, (LIF, SpikeEncoder))
    ]
    return spikes, handles


@pytest.mark.parametrize("family", FAMILIES)
def test_sequence_equals_token_by_token(family):
    """One forward over a sequence == the tokens one at a time with the carried state.

    float64, logits within 1e-9; LIF spikes identical (time-major, so the per-token calls
    concatenate to the sequence call's layout); encoder spikes ([T, B, S, d]) identical
    once the per-token calls are concatenated along S."""
    model = models.create(family, "tiny").double().eval()
    tokens = torch.randint(0, model.config.vocab_size, (2, 12))
    spikes_seq, handles = record_spikes(model)
    with torch.no_grad():
        logits, state = model(tokens)
    for h in handles:
        h.remove()
    spikes_step, handles = record_spikes(model)
    step_state = model.init_state(2)
    step_logits = []
    with torch.no_grad():
        for i in range(tokens.shape[1]):
            out, step_state = model(tokens[:, i : i + 1], step_state)
            step_logits.append(out)
    for h in handles:
        h.remove()
    assert logits.shape == (2, 12, model.config.vocab_size)
    torch.testing.assert_close(torch.cat(step_logits, dim=1), logits, atol=1e-9, rtol=1e-9)
    assert state.keys() == step_state.keys()
    for name in state:
        torch.testing.assert_close(step_state[name], state[name], atol=1e-9, rtol=1e-9)
    total_spikes = 0
    for name, calls in spikes_seq.items():
        seq = torch.cat(calls)
        step = torch.cat(spikes_step[name], dim=2 if isinstance(dict(model.named_modules())[name], SpikeEncoder) else 0)
        if seq.shape == step.shape:
            assert torch.equal(seq, step), f"spikes of {name} differ"
        else:  # a population run step-major inside a token (e.g. NeuroGen's loops)
            assert seq.abs().sum() == step.abs().sum(), f"spike count of {name} differs"
        total_spikes += int(seq.abs().sum())
    assert total_spikes > 0, "nothing fired: the comparison would be vacuous"


@pytest.mark.parametrize("family", FAMILIES)
def test_init_state_shapes_are_fixed_and_match_the_forward(family):
    model = models.create(family, "tiny")
    state = model.init_state(3)
    _, new_state = model(torch.zeros(3, 2, dtype=torch.long), state)
    assert {k: v.shape for k, v in new_state.items()} == {k: v.shape for k, v in state.items()}
    # carried state is float; a positional family's absolute position is an integer (an input on every target)
    assert all(v.is_floating_point() for k, v in state.items() if k != "position")
    assert "position" not in state or (state["position"].dtype == torch.long and new_state["position"].tolist() == [2, 2, 2])


@pytest.mark.parametrize("family", FAMILIES)
def test_a_few_training_steps_lower_the_loss(family):
    model = models.create(family, "tiny")
    tokens = torch.randint(0, model.config.vocab_size, (4, 16))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(12):
        logits, _ = model(tokens[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.5, losses


@pytest.mark.parametrize("family", FAMILIES)
def test_save_load_round_trip(family, tmp_path):
    from edgespike.data import train_tokenizer

    model = models.create(family, "tiny").eval()
    tokenizer = train_tokenizer("hello spiking world " * 50, "char", model.config.vocab_size)
    models.save(model, tmp_path / "m", tokenizer=tokenizer)
    loaded = models.load(tmp_path / "m").eval()
    tokens = torch.randint(0, model.config.vocab_size, (1, 6))
    with torch.no_grad():
        torch.testing.assert_close(loaded(tokens)[0], model(tokens)[0], atol=0, rtol=0)
    assert loaded.config == model.config
    assert loaded.tokenizer.encode("hello").ids == tokenizer.encode("hello").ids


@pytest.mark.parametrize("family", FAMILIES)
def test_every_preset_builds_on_meta(family):
    for name, config in models.presets(family).items():
        model = models.build(config, device="meta")
        assert model.num_parameters() > 0
        assert all(t.device.type == "meta" for t in model.state_dict().values()), name


def test_family_spec_resolves():
    assert models.load("pulse:tiny").family == "pulse"


@pytest.fixture
def saved(tmp_path):
    model = models.create("pulse", "tiny")
    return models.save(model, tmp_path / "model")


@pytest.mark.parametrize(
    "spec,message",
    [
        ("nosuchfamily:tiny", "unknown model family 'nosuchfamily'"),
        ("pulse:huge", "unknown preset 'huge' for family 'pulse'"),
        ("/definitely/not/here", "neither a model dir"),
    ],
)
def test_bad_specs(spec, message):
    with pytest.raises(EdgespikeError, match=message):
        models.load(spec)


def test_missing_files(saved):
    (saved / "model.safetensors").unlink()
    with pytest.raises(EdgespikeError, match="has no model.safetensors"):
        models.load(saved)
    (saved / "config.json").unlink()
    with pytest.raises(EdgespikeError, match="has no config.json"):
        models.load(saved)


def test_unknown_family_and_unknown_key_in_config(saved):
    config = json.loads((saved / "config.json").read_text())
    (saved / "config.json").write_text(json.dumps({**config, "family": "gpt"}))
    with pytest.raises(EdgespikeError, match="unknown model family 'gpt'"):
        models.load(saved)
    (saved / "config.json").write_text(json.dumps({**config, "n_experts": 8}))
    with pytest.raises(EdgespikeError, match=r"unknown key\(s\) \['n_experts'\]"):
        models.load(saved)


@pytest.mark.parametrize(
    "edit,message",
    [
        (lambda t: t.pop("norm.weight"), "lacks 1 tensor"),
        (lambda t: t.update(extra=torch.zeros(2)), "does not use"),
        (lambda t: t.update({"norm.weight": torch.zeros(3)}), "has shape \\(3,\\)"),
        (lambda t: t["embed.weight"].__setitem__((0, 0), float("nan")), "NaN"),
    ],
    ids=["missing", "unexpected", "misshaped", "nan"],
)
def test_bad_tensors(saved, edit, message):
    tensors = load_file(str(saved / "model.safetensors"))
    edit(tensors)
    save_file(tensors, str(saved / "model.safetensors"))
    with pytest.raises(EdgespikeError, match=message):
        models.load(saved)
