"""edgespike profile: exact counts on a hand-computable network, the seeds' figures on the meta
device, the report schema, sweeps, the plot, and bad input."""

import copy
import io
import json
from dataclasses import dataclass

import pytest
import torch
from torch import nn
from rich.console import Console
from typer.testing import CliRunner

from edgespike import models
from edgespike.cli import app, profile_tables
from edgespike.config import ModelConfig, SpikeConfig
from edgespike.errors import EdgespikeError
from edgespike.models.base import SpikingLM
from edgespike.nn import LIF, TernaryLinear
from edgespike.profile import ProfileOptions, profile, sweep
from edgespike.profile.counting import count
from edgespike.profile.estimate import energy
from edgespike.profile.targets import load_target
from edgespike.quant.weights import quantize_weights


@dataclass
class ToyConfig(ModelConfig):
    family = "toy"


class Toy(SpikingLM):
    """embed (4 x 4) -> LIF over T = 2 (beta 1, threshold 1, subtract) -> ternary linear 4 -> 3.

    Token 1's row [1.0, 0.6, 0.0, 2.0] held for two timesteps fires neuron 0 at t0 and t1,
    neuron 1 at t1 (0.6 + 0.6), neuron 3 at t0 and t1: 5 spikes in 8 slots; active inputs
    {0, 3} then {0, 1, 3}. Codes sign(W): every column has 2 non-zero weights."""

    def __init__(self):
        super().__init__(ToyConfig(vocab_size=4, d_model=4, n_layers=1, spike=SpikeConfig(timesteps=2, beta=1.0, threshold=1.0)))
        self.embed = nn.Embedding(4, 4)
        self.layers = nn.ModuleList([nn.Module()])
        self.layers[0].lif = LIF(self.config.spike)
        self.layers[0].fc = self.linear(4, 3)
        with torch.no_grad():
            self.embed.weight.copy_(torch.tensor([[0.0] * 4, [1.0, 0.6, 0.0, 2.0], [0.0] * 4, [0.0] * 4]))
            self.layers[0].fc.weight.copy_(torch.tensor([[1.0, 0, -1, 1], [0, 1, 1, 0], [1, 1, 0, -1]]))

    def init_state(self, batch):
        return {"layers.0.v": torch.zeros(batch, 4)}

    def forward(self, tokens, state=None):
        state = state or self.init_state(tokens.shape[0])
        x = self.embed(tokens)[:, -1]  # [B, 4]
        spikes, v = self.layers[0].lif(x.expand(2, *x.shape), state["layers.0.v"])  # [T, B, 4]
        return self.layers[0].fc(spikes).mean(0)[:, None], {"layers.0.v": v}


def test_counts_of_a_hand_computable_network():
    counts = count(Toy(), [1])
    blocks = {b.name: b for b in counts.blocks}
    layer = blocks["layers.0"]
    assert (layer.spikes, layer.spike_slots, layer.neuron_updates) == (5, 8, 8)
    assert layer.synops == 5 * 3  # active inputs x fan-out
    assert layer.acs == 4 + 6  # non-zero weights of the active columns: t0 {0, 3}, t1 {0, 1, 3}, 2 each
    assert layer.dense_macs == 2 * 4 * 3 and layer.macs == 2 * 3  # T*B rows; one scale multiply per output
    assert layer.spike_io == 8 and layer.state_bytes == 2 * 4 * 4 and layer.activation_bytes == 8 / 8
    assert layer.weight_bytes == layer.spike_weight_bytes == 12 * 2 / 8 + 4  # 2-bit codes + an fp32 scale, spike-fed
    assert blocks["embed"].weight_bytes == 4 * 4  # one fp32 row per token
    assert counts.zero_weights == 4 and counts.weights == 12 and counts.footprint_bits == 16 * 32 + 24 + 32
    nb = counts.neurobench()
    assert nb["activation_sparsity"] == 1 - 5 / 8 and nb["connection_sparsity"] == 4 / 12
    # cmos45, compute: 10 adds x 0.9 pJ + 6 MACs x 4.6 pJ + 8 updates x 5.5 pJ
    compute = energy(counts, load_target("cmos45"), None)["compute"]
    assert compute == pytest.approx(10 * 0.9e-12 + 6 * 4.6e-12 + 8 * 5.5e-12, rel=1e-12)


def test_spikingbrain_7b_spike_io_as_in_the_seed():
    """hidden 3584 x batch 1 x T 8 = 28,672 spikes per layer, ~800K per forward over 28 layers."""
    model = models.build(models.preset_config("spikingbrain", "spikingbrain-7b"), device="meta")
    counts = count(model, [0], firing_rate=0.1)
    layers = [b for b in counts.blocks if b.name.startswith("layers.")]
    assert len(layers) == 28 and {b.spike_io for b in layers} == {3584 * 1 * 8}
    assert counts.total("spike_io") == 28 * 28_672 == 802_816
    assert counts.spike_rate == pytest.approx(0.1) and not counts.measured


@pytest.mark.parametrize("preset,billions", [("3b-balanced", 2.7), ("7b-llama", 6.7)])
def test_full_size_evospikenet_on_the_meta_device(preset, billions):
    report = profile(f"evospikenet:{preset}", ProfileOptions(targets=["cmos45"], firing_rate=0.05))
    assert report["model"]["parameters"] == pytest.approx(billions * 1e9, rel=0.05)  # the seed's table
    assert report["spikes"]["measured"] is False and report["targets"]["cmos45"]["energy_per_token_j"] > 0


def test_report_schema_on_held_out_text(tmp_path):
    report = profile("demo", ProfileOptions(targets=["cmos45", "neuronchip", "ane-a17pro", "host"], tokens=16))
    assert report["estimated"] is True and report["spikes"]["measured"] is True
    assert report["model"]["family"] == "pulse" and report["model"]["parameters"] == models.load("demo").num_parameters()
    assert 0 < report["spikes"]["firing_rate"] < 1
    for name in ("cmos45", "neuronchip", "ane-a17pro"):
        t = report["targets"][name]
        assert t["energy_per_token_j"] == pytest.approx(sum(t["energy_breakdown_j"].values()))
        assert t["sources"] and (t["latency_per_token_s"] is None) == (name == "cmos45")  # cmos45: energy only
    assert report["targets"]["host"]["energy_per_token_j"] is None  # no power model for this CPU: said, not guessed
    assert report["targets"]["host"]["latency"]["roofline_tokens_per_s"] > 0
    cmos = report["targets"]["cmos45"]
    assert cmos["ann_energy_per_token_j"]["with_memory"] > cmos["qann_energy_per_token_j"]["with_memory"]
    # per-layer energies add up to the model's (same memory tiers)
    layers = sum(row["energy_per_token_j"]["cmos45"] for row in report["layers"])
    assert layers == pytest.approx(cmos["energy_per_token_j"])
    screen = Console(width=80, record=True, file=io.StringIO())
    for table in profile_tables(report):
        screen.print(table)
    text = screen.export_text()
    assert "…" not in text and all(name in text for name in report["targets"])  # 80 columns, no cell cut


def test_timesteps_sweep_and_plots(tmp_path):
    result = CliRunner().invoke(app, ["profile", "pulse:tiny", "--target", "cmos45", "--tokens", "8", "--sweep", "timesteps=1,2",
                                      "--json", str(tmp_path / "s.json"), "--plot", str(tmp_path / "s.png")])
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "s.json").read_text())["rows"]
    assert [row["timesteps"] for row in rows] == [1, 2] and all(row["perplexity"] > 1 for row in rows)
    energies = [row["targets"]["cmos45"]["energy_per_token_j"] for row in rows]
    assert energies[1] > energies[0]  # twice the timesteps, more neuron updates and spikes
    assert (tmp_path / "s.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    result = CliRunner().invoke(app, ["profile", "pulse:tiny", "--tokens", "8", "--plot", str(tmp_path / "p.png")])
    assert result.exit_code == 0 and (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    "options,message",
    [
        (ProfileOptions(targets=["tpu-v9"]), "unknown target 'tpu-v9'; choose from"),
        (ProfileOptions(firing_rate=1.5), r"--firing-rate must be in \[0, 1\], got 1.5"),
        (ProfileOptions(firing_rate=-0.1), r"--firing-rate must be in \[0, 1\]"),
    ],
)
def test_bad_options(options, message):
    with pytest.raises(EdgespikeError, match=message):
        profile("pulse:tiny", options)


def test_bad_target_files(tmp_path):
    path = tmp_path / "t.toml"
    path.write_text('name = "x"\nsummary = "x"\nspike_compute = "event"\nprecision = "fp32"\nmac_j = "lots"\nadd_j = 1e-12\n'
                    '[sources]\nmac_j = "a"\nadd_j = "b"\n')
    with pytest.raises(EdgespikeError, match="mac_j must be a number, got 'lots'"):
        load_target(str(path))
    path.write_text('name = "x"\nsummary = "x"\nspike_compute = "event"\nprecision = "fp32"\nadd_j = 1e-12\n[sources]\nadd_j = "b"\n')
    with pytest.raises(EdgespikeError, match=r"missing \['mac_j'\]"):
        load_target(str(path))
    path.write_text('name = "x"\nsummary = "x"\nspike_compute = "event"\nprecision = "fp32"\nmac_j = 1e-12\nadd_j = 1e-12\n[sources]\nadd_j = "b"\n')
    with pytest.raises(EdgespikeError, match="no source for mac_j"):
        load_target(str(path))


def test_empty_text(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    with pytest.raises(EdgespikeError, match="is empty; pass a UTF-8 file"):
        profile("demo", ProfileOptions(text_file=empty))


def test_a_large_model_is_profiled_streamed_with_the_same_counts(tmp_path, monkeypatch):
    """Above STREAM_PARAMETERS (here lowered to 0) a model dir is streamed frozen: the counts are the
    in-memory ones; full-size models profile on fewer tokens (at least 16)."""
    from edgespike.models import streaming
    from edgespike.profile import token_count

    models.save(models.create("pulse", "tiny"), tmp_path / "model")
    options = ProfileOptions(targets=["cmos45"], tokens=8)
    in_memory = profile(str(tmp_path / "model"), options)
    monkeypatch.setattr(streaming, "STREAM_PARAMETERS", 0)
    assert streaming.should_stream(str(tmp_path / "model"))
    streamed = profile(str(tmp_path / "model"), options)
    for key in ("per_token", "spikes", "layers", "targets"):
        assert streamed[key] == in_memory[key], key
    assert token_count(models.create("pulse", "pulse-1b", device="meta"), ProfileOptions()) == 16
    assert token_count(models.create("pulse", "tiny"), ProfileOptions()) == 128


def test_firing_rate_sweep_needs_the_meta_device():
    with pytest.raises(EdgespikeError, match="firing_rate sweep needs a meta-device model"):
        sweep("pulse:tiny", ProfileOptions(), "firing_rate", [0.1])


def test_coding_sweep_on_spikingbrain():
    result = sweep("spikingbrain:tiny", ProfileOptions(targets=["cmos45"], tokens=8), "coding", ["binary", "ternary"])
    rows = {row["coding"]: row for row in result["rows"]}
    assert set(rows) == {"binary", "ternary"} and all(row["perplexity"] > 1 for row in rows.values())
    assert rows["binary"]["firing_rate"] != rows["ternary"]["firing_rate"]
    with pytest.raises(EdgespikeError, match="the pulse family has no spike coding to change"):
        sweep("pulse:tiny", ProfileOptions(), "coding", ["binary"])


def test_spikingbrain_hf_linears_that_spike_their_own_input():
    """W8ASpike's QuantLinears encode their input inside their forward: each is a linear of its encoder's
    spikes (synops = non-zero spikes x out_features), and every linear's MACs are counted once."""
    model = models.load("spikingbrain_hf:tiny")
    tokens = [3, 141, 59, 26]
    counts = count(model, tokens)
    frozen = quantize_weights(copy.deepcopy(model).float().eval(), "fp16")  # what count() runs
    events, linear_macs, hooks = [], 0, []
    for module in frozen.modules():
        if not isinstance(module, TernaryLinear):
            continue
        encoder = getattr(module, "spikes", None)
        steps = encoder.timesteps if encoder is not None else 1  # a linear of [T, ..., in] spikes, or of one row
        linear_macs += steps * module.in_features * module.out_features
        if encoder is not None:
            hooks.append(encoder.register_forward_hook(
                lambda _m, _i, out, n=module.out_features: events.append(int(torch.count_nonzero(out[0])) * n)))
    state = frozen.init_state(1)
    with torch.no_grad():
        for token in tokens:
            _, state = frozen(torch.tensor([[token]]), state)
    for hook in hooks:
        hook.remove()
    assert len(events) == 2 * 7 * len(tokens) - len(tokens)  # q k v (gk) o gate up per layer; gk in the GLA layer
    assert counts.total("synops") == counts.total("spiking_acs") == sum(events) / len(tokens) > 0
    # 475,136 (spike-fed linears, at T = 8 rows) + 16,384 (down_proj x 2, float input) + 16,384 (lm_head)
    # + 2,560 functional matmuls (GLA: 1,664; SWA: 2 x 4 heads x 7 keys x 16): nothing counted twice
    assert linear_macs == 475_136 + 2 * 128 * 64 + 64 * 256
    assert counts.total("dense_macs") == linear_macs + (64 + 1024 + 64 + 512) + 2 * 4 * 7 * 16 == 510_464
    assert {b.name: b.dense_macs for b in counts.blocks}["lm_head"] == 64 * 256
