"""spikingbrain_hf against SpikingBrain-7B's published equations: synthetic Hugging Face dirs in both
published layouts (base / SFT: bf16, low-rank gk_proj; W8ASpike: fp32, full-rank gk_proj, per-128-group
``weight_quantizer.scales``), two shards + model.safetensors.index.json, imported with
`edgespike import spikingbrain`, then compared with an independent reference written here from
hf_7B_model/ and W8ASpike/ (modeling_gla_swa, gla_attention, window_attention, quant_linear,
Int2Spike/neuron.py): GLA as its token-by-token recurrence, SWA as a masked softmax, fp32."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from edgespike.models import load

HF = {  # a tiny GLAswaConfig: the published field names
    "architectures": ["GLAswaForCausalLM"], "model_type": "gla_swa", "vocab_size": 300, "hidden_size": 64,
    "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 128,
    "hidden_act": "swish", "max_position_embeddings": 64, "sliding_window": 3, "norm_eps": 1e-6,
    "rope_theta": 1e4, "attn_layers": [1, 3], "attn_mode": "chunk", "use_short_conv": False, "conv_size": 4,
    "elementwise_affine": True, "tie_word_embeddings": False, "bos_token_id": 258, "eos_token_id": 258,
    "torch_dtype": "bfloat16",
}
GROUP = 32  # W8ASpike weight group of the tiny dims (published: 128)
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]  # ids 258, 259, 260


def published_state_dict(hf: dict, w8aspike: bool, dtype, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    d, heads, kv, inter = hf["hidden_size"], hf["num_attention_heads"], hf["num_key_value_heads"], hf["intermediate_size"]
    hd = d // heads

    def rand(*shape, std=1.0):
        return torch.randn(*shape, generator=g) * std

    def linear(prefix, out, inp, bias=False, std=None):
        w = rand(out, inp, std=std or inp**-0.5)
        t = {f"{prefix}.weight": w}
        if bias:
            t[f"{prefix}.bias"] = rand(out, std=0.2)
        if w8aspike:  # coarse groups (absmax / 7) so that the weight rounding matters
            t[f"{prefix}.weight_quantizer.scales"] = w.reshape(out, -1, GROUP).abs().amax(-1, keepdim=True) / 7
        return t

    state = {"model.embeddings.weight": rand(hf["vocab_size"], d)}
    for i in range(hf["num_hidden_layers"]):
        p = f"model.layers.{i}"
        state[f"{p}.attn_norm.weight"] = 1 + rand(d, std=0.2)
        state[f"{p}.mlp_norm.weight"] = 1 + rand(d, std=0.2)
        state.update(linear(f"{p}.attn.q_proj", d, d, bias=True))
        state.update(linear(f"{p}.attn.k_proj", kv * hd, d, bias=True))
        state.update(linear(f"{p}.attn.v_proj", kv * hd, d, bias=True))
        state.update(linear(f"{p}.attn.o_proj", d, d))
        if i not in hf["attn_layers"]:
            state[f"{p}.attn.g_norm.weight"] = 1 + rand(hd, std=0.2)
            if w8aspike:
                state.update(linear(f"{p}.attn.gk_proj", kv * hd, d, bias=True, std=0.5))
            else:
                state[f"{p}.attn.gk_proj.0.weight"] = rand(16, d, std=0.5)
                state[f"{p}.attn.gk_proj.1.weight"] = rand(kv * hd, 16, std=0.5)
                state[f"{p}.attn.gk_proj.1.bias"] = rand(kv * hd, std=0.5)
        state.update(linear(f"{p}.mlp.gate_proj", inter, d))
        state.update(linear(f"{p}.mlp.up_proj", inter, d))
        state.update(linear(f"{p}.mlp.down_proj", d, inter))
    state["model.norm.weight"] = 1 + rand(d, std=0.2)
    state["lm_head.weight"] = rand(hf["vocab_size"], d, std=d**-0.5)
    return {k: v.to(dtype).contiguous() for k, v in state.items()}


def write_hf_dir(root, state, hf, shards=2, tokenizer=True):
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text(json.dumps(hf))
    names = list(state)
    weight_map = {}
    for s in range(shards):
        part = names[s * len(names) // shards : (s + 1) * len(names) // shards]
        file = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        save_file({n: state[n] for n in part}, str(root / file), metadata={"format": "pt"})
        weight_map.update({n: file for n in part})
    (root / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    if tokenizer:  # a Qwen2-style byte-level BPE: the 256 byte symbols, two merges, three added tokens
        from tokenizers.pre_tokenizers import ByteLevel

        alphabet = sorted(ByteLevel.alphabet())
        vocab = {c: i for i, c in enumerate(alphabet)}
        vocab["he"], vocab["hel"] = 256, 257
        (root / "vocab.json").write_text(json.dumps(vocab))
        (root / "merges.txt").write_text("#version: 0.2\nh e\nhe l\n")
        decoder = {str(258 + i): {"content": t, "special": True, "lstrip": False, "rstrip": False, "normalized": False,
                                  "single_word": False} for i, t in enumerate(SPECIAL)}
        (root / "tokenizer_config.json").write_text(json.dumps({"added_tokens_decoder": decoder, "eos_token": SPECIAL[0]}))
    return root


# --- the reference: the published equations, written independently ------------------------------

def _rms(x, w, eps=1e-6):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def _bitwise_roundtrip(x_int):
    """Int2Spike SpikeCountBitwiseNode(is_bidirectional=True) then spike_dequant: T from the tensor's max."""
    x = x_int.to(torch.int64)
    T = max(1, math.ceil(math.log2(int(x.abs().max()) + 1)))
    rem, negative = x.abs(), x < 0
    spikes = [((rem & (1 << (T - 1 - t))) != 0).float() for t in range(T)]
    spikes = [torch.where(negative, -s, s) for s in spikes]
    return sum(s * 2 ** (T - 1 - t) for t, s in enumerate(spikes))


def _dynamic_spikes(x, k=3.0):
    vth = (x.abs().mean([-1], keepdim=True).float() / k).clamp(min=1e-5, max=1e4)
    return _bitwise_roundtrip((x / vth).round()) * vth


def _quantize_sym(x, bit=8):
    scale = (x.abs().amax([-1], keepdim=True).float() / (2 ** (bit - 1) - 1)).clamp(min=1e-5, max=1e4)
    return (x / scale).round().clamp(-(1 << (bit - 1)), (1 << (bit - 1)) - 1) * scale


def _linear(st, prefix, x, w8a, spiked=True):
    w, b = st[f"{prefix}.weight"], st.get(f"{prefix}.bias")
    if w8a and spiked:
        x = _dynamic_spikes(x)
        scales = st[f"{prefix}.weight_quantizer.scales"]
        w = ((w.reshape(w.shape[0], -1, GROUP) / scales).round() * scales).reshape(w.shape)
    return F.linear(x, w, b)


def _rotate_half(x):
    return torch.cat((-x[..., x.shape[-1] // 2 :], x[..., : x.shape[-1] // 2]), dim=-1)


def recurrent_gla(q, k, v, gk):
    """q, k, gk [B, S, H, dk], v [B, S, H, dv] (already repeated to H heads) -> o [B, S, H, dv]."""
    B, S, H, dk = q.shape
    state, out = torch.zeros(B, H, dk, v.shape[-1], dtype=q.dtype), []
    for t in range(S):
        state = torch.exp(gk[:, t])[..., None] * state + k[:, t, :, :, None] * v[:, t, :, None, :]
        out.append(((q[:, t] * dk**-0.5)[:, :, None, :] @ state)[:, :, 0])
    return torch.stack(out, dim=1)


def reference_logits(state, hf, tokens, w8a):
    st = {k: v.float() for k, v in state.items()}
    B, S = tokens.shape
    d, H, KV = hf["hidden_size"], hf["num_attention_heads"], hf["num_key_value_heads"]
    hd, G, W, eps = d // H, H // KV, hf["sliding_window"], hf["norm_eps"]
    x = st["model.embeddings.weight"][tokens]
    for i in range(hf["num_hidden_layers"]):
        p = f"model.layers.{i}"
        h = _rms(x, st[f"{p}.attn_norm.weight"], eps)
        q = _linear(st, f"{p}.attn.q_proj", h, w8a).view(B, S, H, hd)
        k = _linear(st, f"{p}.attn.k_proj", h, w8a).view(B, S, KV, hd)
        v = _linear(st, f"{p}.attn.v_proj", h, w8a).view(B, S, KV, hd)
        if i in hf["attn_layers"]:  # FlashAttention: HF RoPE, window (W, 0)
            inv_freq = 1.0 / (hf["rope_theta"] ** (torch.arange(0, hd, 2, dtype=torch.int64).float() / hd))
            freqs = torch.arange(S).float()[:, None] * inv_freq[None]
            emb = torch.cat((freqs, freqs), dim=-1)[None, :, None]
            q, k = q * emb.cos() + _rotate_half(q) * emb.sin(), k * emb.cos() + _rotate_half(k) * emb.sin()
            if w8a:
                q, k, v = _dynamic_spikes(q), _quantize_sym(k), _quantize_sym(v)
            k, v = k.repeat_interleave(G, dim=2), v.repeat_interleave(G, dim=2)
            scores = torch.einsum("bihd,bjhd->bhij", q, k) / math.sqrt(hd)
            dist = torch.arange(S)[:, None] - torch.arange(S)[None, :]
            scores = scores.masked_fill(~((dist >= 0) & (dist <= W)), float("-inf"))
            o = torch.einsum("bhij,bjhd->bihd", scores.softmax(-1), v).reshape(B, S, d)
        else:  # GatedLinearAttention
            if w8a:
                gk = _linear(st, f"{p}.attn.gk_proj", h, w8a)
            else:
                gk = F.linear(h @ st[f"{p}.attn.gk_proj.0.weight"].T, st[f"{p}.attn.gk_proj.1.weight"], st[f"{p}.attn.gk_proj.1.bias"])
            gk = F.logsigmoid(gk.view(B, S, KV, hd)) / 16
            q, k = F.relu(q), F.relu(k)
            k, v, gk = (t.repeat_interleave(G, dim=2) for t in (k, v, gk))
            o = _rms(recurrent_gla(q, k, v, gk), st[f"{p}.attn.g_norm.weight"], eps).reshape(B, S, d)
        x = x + _linear(st, f"{p}.attn.o_proj", o, w8a)
        h = _rms(x, st[f"{p}.mlp_norm.weight"], eps)
        z = F.silu(_linear(st, f"{p}.mlp.gate_proj", h, w8a)) * _linear(st, f"{p}.mlp.up_proj", h, w8a)
        x = x + _linear(st, f"{p}.mlp.down_proj", z, w8a, spiked=False)  # swiglu_linear: down_proj.weight as is
    return _rms(x, st["model.norm.weight"], eps) @ st["lm_head.weight"].T


# --- import and parity ---------------------------------------------------------------------------

def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "edgespike.cli", *map(str, args)], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    root = tmp_path_factory.mktemp("sb")
    state = published_state_dict(HF, False, torch.bfloat16)
    write_hf_dir(root / "hf", state, HF)
    result = run_cli("import", "spikingbrain", root / "hf", "--out", root / "model", "--json")
    assert result.returncode == 0, result.stderr
    return state, root, json.loads(result.stdout)


@pytest.fixture(scope="module")
def w8aspike(tmp_path_factory):
    root = tmp_path_factory.mktemp("sbq")
    state = published_state_dict(HF, True, torch.float32, seed=1)
    hf = {**HF, "torch_dtype": "float32", "auto_map": {"AutoModelForCausalLM": "modeling_gla_swa.GLAswaForCausalLM"}}
    write_hf_dir(root / "hf", state, hf)
    marker = root / "remote_code_ran"
    for script in ("modeling_gla_swa.py", "configuration_gla_swa.py"):
        (root / "hf" / script).write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    result = run_cli("import", "spikingbrain", root / "hf", "--out", root / "model", "--json")
    assert result.returncode == 0, result.stderr
    assert not marker.exists(), "the repo's remote code ran"
    return state, root, json.loads(result.stdout)


def _full_and_decoded(model, tokens):
    with torch.no_grad():
        full, _ = model(tokens)
        decoded, cache = [], model.init_state(tokens.shape[0])
        for t in range(tokens.shape[1]):
            logits, cache = model(tokens[:, t : t + 1], cache)
            decoded.append(logits)
    return full, torch.cat(decoded, dim=1), cache


TOKENS = torch.randint(0, HF["vocab_size"], (2, 12), generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("layout", ["base", "w8aspike"])
def test_imported_checkpoint_equals_the_published_equations(layout, base, w8aspike):
    state, root, result = base if layout == "base" else w8aspike
    model = load(root / "model").eval()
    assert model.config.w8aspike == (layout == "w8aspike")
    expected = reference_logits(state, HF, TOKENS, layout == "w8aspike")
    full, decoded, cache = _full_and_decoded(model, TOKENS)
    print(layout, "max |delta| full", (full - expected).abs().max().item(), "decoded", (decoded - expected).abs().max().item())
    assert (full - expected).abs().max().item() <= 1e-4
    assert (decoded - expected).abs().max().item() <= 1e-4
    assert cache["position"].tolist() == [12, 12]


def test_the_base_import_keeps_dtypes_config_and_tokenizer(base):
    state, root, result = base
    from safetensors import safe_open

    with safe_open(str(root / "model" / "model.safetensors"), "pt") as f:
        assert set(f.keys()) == set(state)
        assert f.get_tensor("model.layers.0.attn.gk_proj.1.bias").dtype == torch.bfloat16
        assert torch.equal(f.get_tensor("lm_head.weight"), state["lm_head.weight"])
    config = result["config"]
    assert config["family"] == "spikingbrain_hf" and config["attn_layers"] == [1, 3] and config["sliding_window"] == 3
    assert config["eos_token_id"] == 258 and not config["w8aspike"]
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(root / "model" / "tokenizer.json"))
    assert [tokenizer.token_to_id(t) for t in SPECIAL] == [258, 259, 260]
    assert tokenizer.encode("hello<|endoftext|>").ids[-1] == 258  # a special token, not split
    assert tokenizer.decode(tokenizer.encode("hello world").ids) == "hello world"
    assert tokenizer.encode("hel").ids == [257]
    assert any("EOS is 258" in note for note in result["notes"])


def test_w8aspike_ignores_remote_code_and_its_coded_path_equals_the_float_path(w8aspike):
    state, root, result = w8aspike
    assert any("auto_map" in note and "ignored" in note for note in result["notes"])
    assert result["config"]["w8aspike"] and result["config"]["w_group_size"] == GROUP
    coded = load(root / "model").eval()
    from edgespike.models import build

    fake = build(coded.config.replace(spike_coded=False)).eval()
    fake.load_state_dict(coded.state_dict())
    with torch.no_grad():
        assert torch.equal(coded(TOKENS)[0], fake(TOKENS)[0])
    from edgespike.models import spike_rates

    rates = spike_rates(coded, TOKENS)
    assert rates and all(0 < r < 1 for r in rates.values())


@pytest.mark.parametrize("chunk", [1, 3, 5, 16])
def test_chunked_gla_equals_the_recurrence_even_with_strong_decay(chunk):
    from edgespike.models.spikingbrain_hf import chunked_gla

    g = torch.Generator().manual_seed(chunk)
    B, S, KV, G, dk = 2, 11, 2, 3, 8
    q, k, v = (torch.randn(B, S, KV * G if i == 0 else KV, dk, generator=g, dtype=torch.float64) for i in range(3))
    gk = F.logsigmoid(4 * torch.randn(B, S, KV, dk, generator=g, dtype=torch.float64)) * 8  # decays to exp(-200)
    expected = recurrent_gla(q, k.repeat_interleave(G, 2), v.repeat_interleave(G, 2), gk.repeat_interleave(G, 2))
    qg = q.view(B, S, KV, G, dk).permute(0, 2, 3, 1, 4) * dk**-0.5
    out, state = chunked_gla(qg, k.transpose(1, 2), v.transpose(1, 2), gk.transpose(1, 2), torch.zeros(B, KV, dk, dk, dtype=torch.float64), chunk)
    torch.testing.assert_close(out.permute(0, 3, 1, 2, 4).reshape(B, S, KV * G, dk), expected, atol=1e-10, rtol=1e-10)


def test_the_published_7b_counts_on_the_meta_device():
    result = run_cli("models", "--json")
    rows = {r["preset"]: r for r in json.loads(result.stdout)["models"] if r["family"] == "spikingbrain_hf"}
    assert rows["spikingbrain-7b"]["parameters"] == 7_616_542_976
    from edgespike.models import create

    w8a = create("spikingbrain_hf", "spikingbrain-7b-w8aspike", device="meta")
    assert sum(t.numel() for t in w8a.state_dict().values()) == 7_692_495_104  # weights + scales, as published
    assert len([n for n in w8a.state_dict() if n.startswith("model.layers.0.")]) == 23


# --- bad input: one line, exit 2, nothing written --------------------------------------------------

def _break_missing_shard(hf_dir):
    (hf_dir / "model-00002-of-00002.safetensors").unlink()


def _break_shape(hf_dir):
    state = published_state_dict(HF, False, torch.bfloat16)
    state["model.layers.2.attn.k_proj.weight"] = torch.zeros(8, 64, dtype=torch.bfloat16)
    write_hf_dir(hf_dir, state, HF)


def _break_model_type(hf_dir):
    (hf_dir / "config.json").write_text(json.dumps({**HF, "model_type": "qwen2"}))


def _break_truncate(hf_dir):
    shard = hf_dir / "model-00001-of-00002.safetensors"
    shard.write_bytes(shard.read_bytes()[:-100])


def _break_duplicate(hf_dir):
    state = published_state_dict(HF, False, torch.bfloat16)
    save_file({"model.norm.weight": state["model.norm.weight"], "model.embeddings.weight": state["model.embeddings.weight"]},
              str(hf_dir / "model-00002-of-00002.safetensors"))


@pytest.mark.parametrize(
    "damage,message",
    [
        (_break_missing_shard, "names shard 'model-00002-of-00002.safetensors', which is not in"),
        (_break_shape, "tensor 'model.layers.2.attn.k_proj.weight' has shape (8, 64)"),
        (_break_model_type, "unknown model_type 'qwen2'"),
        (_break_truncate, "is not a readable safetensors file"),
        (_break_duplicate, "is in both"),
    ],
)
def test_bad_checkpoints_are_one_line_errors_and_write_nothing(tmp_path, damage, message):
    hf_dir = write_hf_dir(tmp_path / "hf", published_state_dict(HF, False, torch.bfloat16), HF, tokenizer=False)
    damage(hf_dir)
    result = run_cli("import", "spikingbrain", hf_dir, "--out", tmp_path / "out" / "model")
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_preset_is_refused_for_a_hugging_face_dir(tmp_path):
    hf_dir = write_hf_dir(tmp_path / "hf", published_state_dict(HF, False, torch.bfloat16), HF, shards=1, tokenizer=False)
    result = run_cli("import", "spikingbrain", hf_dir, "--out", tmp_path / "m", "--preset", "spikingbrain-7b")
    assert result.returncode == 2 and "takes no --preset" in result.stderr
    assert not (tmp_path / "m").exists()


def test_one_model_safetensors_without_an_index_imports(tmp_path):
    state = published_state_dict(HF, False, torch.bfloat16, seed=2)
    hf_dir = tmp_path / "hf"
    hf_dir.mkdir()
    (hf_dir / "config.json").write_text(json.dumps(HF))
    save_file(state, str(hf_dir / "model.safetensors"))
    result = run_cli("import", "spikingbrain", hf_dir, "--out", tmp_path / "m", "--json")
    assert result.returncode == 0, result.stderr
    assert any("no tokenizer" in note for note in json.loads(result.stdout)["notes"])
    model = load(tmp_path / "m").eval()
    with torch.no_grad():
        assert (model(TOKENS)[0] - reference_logits(state, HF, TOKENS, False)).abs().max().item() <= 1e-4


@pytest.mark.parametrize("preset", ["tiny-base", "tiny"])
def test_a_streamed_sharded_checkpoint_imports_tensor_for_tensor(preset, tmp_path):
    """tests/synthetic_checkpoints.py (the 7B measurement's writer) on the tiny presets: many
    small shards + index, imported, every tensor equal to what was written."""
    from safetensors import safe_open

    from synthetic_checkpoints import write_sharded

    index = write_sharded(preset, tmp_path / "hf", shard_bytes=64 << 10, seed=3)
    assert len(set(index["weight_map"].values())) > 2
    result = run_cli("import", "spikingbrain", tmp_path / "hf", "--out", tmp_path / "m")
    assert result.returncode == 0, result.stderr
    with safe_open(str(tmp_path / "m" / "model.safetensors"), "pt") as imported:
        for name, shard in index["weight_map"].items():
            with safe_open(str(tmp_path / "hf" / shard), "pt") as original:
                assert torch.equal(imported.get_tensor(name), original.get_tensor(name)), name
    assert load(tmp_path / "m").config.w8aspike == (preset == "tiny")


def test_w8aspike_spike_fed_linears_run_on_the_neuronchip_exactly(w8aspike, tmp_path):
    """The imported W8ASpike on the NeuronChip: every spike-fed QuantLinear on cores with its 8-bit group
    codes, the chip's per-group integer sums equal to codes_g . round(x / vth)_g from eager's own inputs,
    the logits of the simulated bundle within float rounding of eager, top-1 equal."""
    from edgespike.exporters import export
    from edgespike.models.spikingbrain_hf import QuantLinear
    from edgespike.runtimes import load as load_artifact
    from edgespike.runtimes.eager import EagerSession

    model = load(w8aspike[1] / "model").eval()
    session = load_artifact(export(model, "neuronchip", tmp_path / "chip").path)
    mapping = session.mapping
    eager = EagerSession(model)
    quant = {n: m for n, m in eager.step_module.model.named_modules() if isinstance(m, QuantLinear)}
    spiked = {n for n, m in quant.items() if m.spikes is not None}
    layers = {record["name"]: record for record in mapping["layers"]}
    assert set(layers) == spiked and len(spiked) == 26  # q k v (gk) o gate up per layer; down_proj is not spiked
    assert {(r["weight_bits"], r["group_size"], r["groups"], r["coded_input"]["time_weighting"]) for r in layers.values()} == {(8, GROUP, 2, "chip")}
    host = {h["module"]: h["reason"] for h in mapping["host"]}
    assert "float weights" in host["model.layers.0.mlp.down_proj"] and "lm_head" in host

    sums, inputs = {}, {}

    def recorded(name, accumulate):
        def run(*args):
            sums[name] = accumulate(*args)
            return sums[name]
        return run

    for name, sim in session.sims.items():
        sim.accumulate_coded = recorded(name, sim.accumulate_coded)
        quant[name].register_forward_pre_hook(lambda _m, args, name=name: inputs.__setitem__(name, args[0]))
    worst = 0.0
    for token in TOKENS[0].tolist():
        ours, reference = session.step(token), eager.step(token)
        worst = max(worst, float(abs(ours - reference).max()))
        assert ours.argmax() == reference.argmax()
        for name in spiked:  # the integer path, from eager's input to this linear
            module = quant[name]
            x_int = module.spikes.integers(inputs[name])[0].reshape(-1, module.in_features).to(torch.int64)
            grouped = module.weight.reshape(module.out_features, -1, GROUP)
            codes = torch.round(grouped / module.weight_quantizer.scales).to(torch.int64)  # [out, G, group]
            expected = torch.einsum("ogi,mgi->mog", codes, x_int.reshape(x_int.shape[0], -1, GROUP))
            assert np.array_equal(sums[name], expected.numpy()), name
    assert worst <= 1e-4
    stats = session.stats
    assert stats["synops"] > 0 and stats["host_link_bits_out"] > 0


def test_w8aspike_on_a_chip_with_2_bit_synapses_stays_on_the_host_and_says_why(w8aspike, tmp_path):
    from edgespike.capture import decode_step
    from edgespike.exporters import ExportOptions
    from edgespike.exporters.neuronchip import NeuronChipExporter

    step = decode_step(load(w8aspike[1] / "model").eval())
    NeuronChipExporter().lower(step, ExportOptions(precision="fp32", chip="truenorth"), tmp_path)
    mapping = json.loads((tmp_path / "chip.json").read_text())
    host = {h["module"]: h["reason"] for h in mapping["host"]}
    assert mapping["layers"] == []
    assert "8-bit weight codes" in host["model.layers.0.attn.q_proj"] and "weight_bits >= 8" in host["model.layers.0.attn.q_proj"]
