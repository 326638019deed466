"""slms_pulse against SLMS Pulse's published equations: a synthetic checkpoint in the published
format (g-hano/slms SpikingLLM's state_dict names, torch.save), imported with `edgespike import`,
then compared with an independent reference written here from layers.py / transformer.py with
the real snntorch Leaky, full sequence and token by token."""

import json
import subprocess
import sys

import pytest
import snntorch as snn
import torch
import torch.nn.functional as F

from edgespike.models import load

ARCH = {  # the published constructor arguments, small; layer 5 is global (5 % 6 == 5)
    "vocab_size": 96, "d_model": 32, "n_heads": 4, "n_kv_heads": 2, "num_layers": 6,
    "max_seq_len": 64, "window_size": 5, "num_steps": 3, "beta": 0.95,
}


def published_state_dict(arch: dict, dtype=torch.float32, seed: int = 0) -> dict:
    """SpikingLLM's state_dict keys and shapes (PUBLISHED.md section 1), random values scaled so
    the LIFs fire some of the time; lm_head is the same tensor as token_emb (tied)."""
    g = torch.Generator().manual_seed(seed)
    d, heads, kv, hidden = arch["d_model"], arch["n_heads"], arch["n_kv_heads"], 4 * arch["d_model"]
    head_dim = d // heads

    def rand(*shape, std=1.0):
        return (torch.randn(*shape, generator=g) * std).to(dtype)

    def uniform(low, high, shape=()):
        return (low + (high - low) * torch.rand(shape, generator=g)).to(dtype)

    def inv_freq(theta):  # layers.py RoPE.__init__
        return 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=dtype).to(dtype) / head_dim))

    def leaky(prefix):
        return {
            f"{prefix}.beta": uniform(0.6, 1.2),  # learned; > 1 exercises snntorch's clamp
            f"{prefix}.threshold": uniform(0.3, 0.8),
            f"{prefix}.graded_spikes_factor": uniform(0.8, 1.2),
            f"{prefix}.reset_mechanism_val": torch.tensor(0),
        }

    state = {"token_emb.weight": rand(arch["vocab_size"], d)}
    for i in range(arch["num_layers"]):
        p = f"layers.{i}"
        state.update({
            f"{p}.norm1.weight": uniform(0.5, 1.5, (d,)), f"{p}.norm2.weight": uniform(0.5, 1.5, (d,)),
            f"{p}.attn_gate": uniform(0.2, 1.0, (1,)), f"{p}.ffn_gate": uniform(0.2, 1.0, (1,)),
            f"{p}.attn.spike_scale": uniform(0.5, 2.0, (1,)),
            f"{p}.attn.local_rope.inv_freq": inv_freq(1e4), f"{p}.attn.global_rope.inv_freq": inv_freq(1e6),
            f"{p}.attn.attn.q_proj.weight": rand(d, d, std=d**-0.5), f"{p}.attn.attn.k_proj.weight": rand(kv * head_dim, d, std=d**-0.5),
            f"{p}.attn.attn.v_proj.weight": rand(kv * head_dim, d, std=d**-0.5), f"{p}.attn.attn.o_proj.weight": rand(d, d, std=2 * d**-0.5),
            **leaky(f"{p}.attn.spike"),
            f"{p}.ffn.spike_scale": uniform(0.5, 2.0), f"{p}.ffn.running_mean": uniform(0.2, 1.0),
            f"{p}.ffn.swiglu.fc.weight": rand(2 * hidden, d, std=2 * d**-0.5), f"{p}.ffn.swiglu.fc.bias": rand(2 * hidden, std=0.3),
            f"{p}.ffn.swiglu.out.weight": rand(d, hidden, std=2 * hidden**-0.5), f"{p}.ffn.swiglu.out.bias": rand(d, std=0.3),
            **leaky(f"{p}.ffn.lif"),
        })
    state["final_norm.weight"] = uniform(0.5, 1.5, (d,))
    state["lm_head.weight"] = state["token_emb.weight"]
    return state


# --- the reference: the published equations, written independently ------------------------------

def _leaky(state: dict, prefix: str) -> snn.Leaky:
    neuron = snn.Leaky(beta=0.95, learn_beta=True)
    neuron.load_state_dict({k.removeprefix(prefix + "."): v.float() if v.is_floating_point() else v
                            for k, v in state.items() if k.startswith(prefix + ".")})
    return neuron


def _spiking_rate(neuron: snn.Leaky, x: torch.Tensor, steps: int, rates: list) -> torch.Tensor:
    mem, acc = neuron.init_leaky(), torch.zeros_like(x)
    for _ in range(steps):
        spk, mem = neuron(x, mem)
        acc += spk
    rates.append((acc > 0).float().mean().item())
    return acc / steps


def _rms(x, weight):
    return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5))


def _rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def reference_logits(state: dict, arch: dict, tokens: torch.Tensor, rates: list | None = None) -> torch.Tensor:
    """layers.py / transformer.py SpikingLLM.forward on a full sequence, fp32, causal masks as
    intended, mean|out| per token (the documented deviations), real snntorch Leaky."""
    rates = [] if rates is None else rates
    st = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    batch, seq = tokens.shape
    d, heads, kv = arch["d_model"], arch["n_heads"], arch["n_kv_heads"]
    hd, steps, window = d // heads, arch["num_steps"], arch["window_size"]
    i, j = torch.arange(seq)[:, None], torch.arange(seq)[None, :]
    x = st["token_emb.weight"][tokens]
    for layer in range(arch["num_layers"]):
        p = f"layers.{layer}"
        is_global = layer % 6 == 5
        h = _rms(x, st[f"{p}.norm1.weight"])
        q = (h @ st[f"{p}.attn.attn.q_proj.weight"].T).view(batch, seq, heads, hd)
        k = (h @ st[f"{p}.attn.attn.k_proj.weight"].T).view(batch, seq, kv, hd)
        v = (h @ st[f"{p}.attn.attn.v_proj.weight"].T).view(batch, seq, kv, hd)
        inv_freq = state[f"{p}.attn.{'global' if is_global else 'local'}_rope.inv_freq"]
        freqs = torch.einsum("i,j->ij", torch.arange(seq, dtype=inv_freq.dtype), inv_freq)
        cos = torch.repeat_interleave(torch.cos(freqs).float(), 2, dim=-1)[None, :, None, :]
        sin = torch.repeat_interleave(torch.sin(freqs).float(), 2, dim=-1)[None, :, None, :]
        q, k = q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin
        k, v = k.repeat_interleave(heads // kv, dim=2), v.repeat_interleave(heads // kv, dim=2)
        mask = (i >= j) if is_global else (i >= j) & (i - j <= window)  # True: attend
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask)
        out = out.transpose(1, 2).reshape(batch, seq, d) @ st[f"{p}.attn.attn.o_proj.weight"].T
        rate = _spiking_rate(_leaky(state, f"{p}.attn.spike"), out, steps, rates)
        x = x + st[f"{p}.attn_gate"] * (rate * out.abs().mean(-1, keepdim=True) * st[f"{p}.attn.spike_scale"])
        h = _rms(x, st[f"{p}.norm2.weight"])
        x1, x2 = (h @ st[f"{p}.ffn.swiglu.fc.weight"].T + st[f"{p}.ffn.swiglu.fc.bias"]).chunk(2, dim=-1)
        f = (x1 * torch.sigmoid(x1) * x2) @ st[f"{p}.ffn.swiglu.out.weight"].T + st[f"{p}.ffn.swiglu.out.bias"]
        rate = _spiking_rate(_leaky(state, f"{p}.ffn.lif"), f, steps, rates)
        x = x + st[f"{p}.ffn_gate"] * (rate * st[f"{p}.ffn.running_mean"] * st[f"{p}.ffn.spike_scale"])
    return _rms(x, st["final_norm.weight"]) @ st["lm_head.weight"].T


# --- import and parity ---------------------------------------------------------------------------

def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "edgespike.cli", *map(str, args)], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    root = tmp_path_factory.mktemp("slms")
    state = published_state_dict(ARCH)
    torch.save(state, root / "pulse.bin")
    (root / "arch.json").write_text(json.dumps(ARCH))
    result = run_cli("import", "slms-pulse", root / "pulse.bin", "--config", root / "arch.json", "--out", root / "model")
    assert result.returncode == 0, result.stderr
    return state, root


def test_imported_checkpoint_equals_the_published_equations(imported):
    state, root = imported
    model = load(root / "model").eval()
    tokens = torch.randint(0, ARCH["vocab_size"], (2, 24), generator=torch.Generator().manual_seed(1))
    rates: list[float] = []
    expected = reference_logits(state, ARCH, tokens, rates)
    assert 0.05 < sum(rates) / len(rates) < 0.95, "the LIFs must fire some of the time for the test to mean anything"
    with torch.no_grad():
        full, _ = model(tokens)
        decoded, cache = [], model.init_state(2)
        for t in range(tokens.shape[1]):
            logits, cache = model(tokens[:, t : t + 1], cache)
            decoded.append(logits)
    assert (full - expected).abs().max().item() <= 1e-4
    assert (torch.cat(decoded, dim=1) - expected).abs().max().item() <= 1e-4  # decode at absolute positions
    assert cache["position"].tolist() == [24, 24]


def test_published_1b_config_counts_1_199_978_604_parameters():
    from edgespike.models import create

    assert create("slms_pulse", "pulse-1b", device="meta").num_parameters() == 1_199_978_604


def test_bf16_checkpoint_keeps_its_dtype_and_bf16_rope_tables(tmp_path):
    arch = {**ARCH, "max_seq_len": 300}
    state = published_state_dict(arch, torch.bfloat16)
    torch.save(state, tmp_path / "pulse.bin")
    (tmp_path / "arch.json").write_text(json.dumps(arch))
    result = run_cli("import", "slms-pulse", tmp_path / "pulse.bin", "--config", tmp_path / "arch.json", "--out", tmp_path / "m", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["config"]["rope_dtype"] == "bfloat16"
    from safetensors import safe_open

    with safe_open(str(tmp_path / "m" / "model.safetensors"), "pt") as f:
        assert f.get_tensor("layers.0.attn.attn.q_proj.weight").dtype == torch.bfloat16
    rope = load(tmp_path / "m").layers[0].attn.local_rope
    positions = torch.arange(300, dtype=torch.bfloat16)  # bf16 is exact to 256 only: 257 -> 256
    freqs = torch.einsum("i,j->ij", positions, state["layers.0.attn.local_rope.inv_freq"])
    assert torch.equal(rope.cos, torch.cos(freqs).float()) and torch.equal(rope.sin, torch.sin(freqs).float())
    assert torch.equal(rope.cos[257], rope.cos[256]) and not torch.equal(rope.cos[255], rope.cos[256])


def test_a_position_past_max_seq_len_is_an_error(imported):
    from edgespike.errors import EdgespikeError

    model = load(imported[1] / "model")
    with pytest.raises(EdgespikeError, match="position 64 is past the model's max_seq_len 64"):
        model(torch.zeros(1, 65, dtype=torch.long))


class _NotAStateDict(torch.nn.Module):
    pass


@pytest.mark.parametrize(
    "mutate,arch_change,message",
    [
        (lambda s: s.pop("layers.3.ffn.swiglu.fc.bias"), None, "lacks 1 tensor(s) the config"),
        (lambda s: s.update({"layers.0.attn.extra": torch.zeros(1)}), None, "the first 'layers.0.attn.extra'"),
        (lambda s: s.update({"layers.1.attn.attn.k_proj.weight": torch.zeros(8, 32)}), None, "'layers.1.attn.attn.k_proj.weight' has shape (8, 32)"),
        (lambda s: s.update({"lm_head.weight": torch.zeros(96, 32)}), None, "lm_head.weight differs from token_emb.weight"),
        (lambda s: s.update({"layers.2.ffn.lif.reset_mechanism_val": torch.tensor(1)}), None, "resets by subtraction"),
        (None, {"d_model": 64}, "has shape (96, 32), the config"),
        (None, {"n_layer": 6}, "unknown key(s) ['n_layer']"),
        (None, {"vocab_size": None}, "missing key(s) ['vocab_size']"),
    ],
)
def test_bad_checkpoints_are_one_line_errors_and_write_nothing(tmp_path, mutate, arch_change, message):
    state = published_state_dict(ARCH)
    if mutate:
        mutate(state)
    arch = {k: v for k, v in {**ARCH, **(arch_change or {})}.items() if v is not None}
    torch.save(state, tmp_path / "pulse.bin")
    (tmp_path / "arch.json").write_text(json.dumps(arch))
    result = run_cli("import", "slms-pulse", tmp_path / "pulse.bin", "--config", tmp_path / "arch.json", "--out", tmp_path / "m")
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["arch.json", "pulse.bin"]


def test_a_full_pickle_is_refused_by_weights_only(tmp_path):
    torch.save(_NotAStateDict(), tmp_path / "model.bin")
    result = run_cli("import", "slms-pulse", tmp_path / "model.bin", "--preset", "tiny", "--out", tmp_path / "m")
    assert result.returncode == 2 and "not a plain state_dict" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "m").exists()


def test_tokenizer_and_its_chat_template_are_carried(tmp_path, imported):
    from tokenizers import Tokenizer, models

    tokenizer = Tokenizer(models.WordLevel({"<|endoftext|>": 0, "hi": 1}, unk_token="<|endoftext|>"))
    (tmp_path / "tok").mkdir()
    tokenizer.save(str(tmp_path / "tok" / "tokenizer.json"))
    (tmp_path / "tok" / "tokenizer_config.json").write_text(json.dumps({"chat_template": "{{ messages }}"}))
    state, root = imported
    result = run_cli("import", "slms-pulse", root / "pulse.bin", "--config", root / "arch.json", "--out", tmp_path / "m",
                     "--tokenizer", tmp_path / "tok" / "tokenizer.json")
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "m" / "tokenizer_config.json").read_text())["chat_template"] == "{{ messages }}"
    assert load(tmp_path / "m").tokenizer.get_vocab_size() == 2



@pytest.mark.parametrize("target", ["onnx", "executorch", "coreml", "neuronchip"])
def test_every_target_exports_the_imported_checkpoint_and_validates(imported, target, tmp_path):
    """Default weights (fp16: the checkpoint is dense), the position input, max_seq_len 64: the
    rollout is cut to fit (32 prompt + 32 greedy tokens) and a step past it is a clear error."""
    from edgespike.errors import EdgespikeError
    from edgespike.exporters import export
    from edgespike.runtimes import load as load_session
    from edgespike.validate import validate_artifact

    model = load(imported[1] / "model")
    result = export(model, target, tmp_path / target, validate=lambda d, m: validate_artifact(d, m, model))
    manifest = result.manifest
    assert manifest["weights"] == "fp16" and manifest["max_seq_len"] == 64
    if target == "executorch":  # test_export.py's chain for this family
        assert manifest["xnnpack_delegates"] > 0 and len(manifest["mutable_buffers"]) == len(manifest["states"])
    assert [i["name"] for i in manifest["inputs"]][:2] == ["tokens", "position"]
    v = manifest["validation"]
    assert v["passed"] and v["tokens"] == 32 and v["greedy_tokens"] == 32, v
    session = load_session(result.path)
    for token in range(64):
        session.step(token % ARCH["vocab_size"])
    with pytest.raises(EdgespikeError, match="position 64 is past the model's max_seq_len 64"):
        session.step(0)
    session.reset()
    session.step(0)  # a reset starts a new sequence at position 0


def test_training_updates_the_ffn_running_mean_with_momentum_0_9():
    from edgespike.models import create

    model = create("slms_pulse", "tiny").train()
    ffn = model.layers[0].ffn
    seen = []
    ffn.swiglu.register_forward_hook(lambda _m, _i, out: seen.append(out.detach().abs().mean()))
    model(torch.randint(0, 256, (2, 8)))
    assert torch.allclose(ffn.running_mean, 0.9 * torch.tensor(1.0) + 0.1 * seen[0])
    before = ffn.running_mean.clone()
    with torch.no_grad():
        model.eval()(torch.randint(0, 256, (2, 8)))
    assert torch.equal(ffn.running_mean, before)  # inference leaves it alone
