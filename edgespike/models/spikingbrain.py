"""``spikingbrain``: edgespike's design after the SpikingBrain-7B write-up (seed 002), hybrid linear / windowed
attention on spike-coded activations.

edgespike's own design, not the published model: SpikingBrain-7B as BICLab's code computes it (RoPE, q/k/v
biases, ReLU feature map, no output gate; its checkpoints import) is the ``spikingbrain_hf`` family
(``../shared/seeds/PUBLISHED.md`` section 2).

A decoder whose layers alternate two token mixers, each followed by a SwiGLU MLP:
    even layers 0, 2, 4, ...: gated linear attention (GLA, Yang et al. 2023)
    odd layers 1, 3, 5, ...:  grouped-query attention over a sliding window (SWA)
    x += mixer(RMSNorm(x));  x += SwiGLU(RMSNorm(x));  logits = head(RMSNorm(x))   (untied head)

W8ASpike activation spiking, around the linears of a block (q, k, v, o, GLA gates, gate/up/down):
    x ~ scale * q          per-token absmax quantization onto the coding's integers
    s = spike_encode(q)    [T, B, S, in] with q = sum_t w_t s_t exactly (binary / ternary / bitwise)
    W x ~ scale * sum_t w_t (W s_t)
The linear runs once on all T*B*S rows (signed additions only, once its weights are ternary); the
weighted sum over the steps decodes. Linears that read the same activation share its spikes.
Unsigned codings (binary; bitwise without two's complement) carry only q >= 0. As W8ASpike's zero
point (``x_zero``) does, they encode x - z with z = min_i x_i of the token, and add z * (W 1), W 1
being the linear of one more step on which every input fires:
    W x ~ scale * sum_t w_t (W s_t) + z (W 1)        spikes [T + 1, B, S, in]

GLA, per head of width h = d / n_heads (k, v shared by groups of query heads, as in GQA):
    alpha_t = sigmoid(W_up W_down x_t + b)^(1/16)          [h], a low-rank forget gate
    S_t = diag(alpha_t) S_{t-1} + k_t^T v_t                 S [h, h]
    o_t = RMSNorm(q_t S_t / sqrt(h)) * silu(W_g x_t)
a loop over the tokens of a call; S is the decode state.

Choices where the seed is silent, or where we depart from it:
- Positions: ALiBi distances in the SWA layers instead of RoPE, as in ``pulse``: the KV cache is
  a shift buffer and the state holds no absolute position. GLA needs no positions.
- GLA decays per channel, as in the GLA paper and in SpikingBrain's released GLA; but here per query
  channel (W_up is 16 -> d), where SpikingBrain's decays per key channel of each KV head (16 -> Hkv * h,
  repeated to the query heads); its q, k, v have the SWA layers' GQA shapes, as SpikingBrain's GLA
  reuses them; its output norm is an RMSNorm per head, as SpikingBrain's; the output gate
  silu(W_g x) is ours (SpikingBrain's GLA has none); no short convolution (off in the seed's config).
- No biases on spiking linears (Qwen2.5, SpikingBrain's starting point, has q/k/v biases): a bias
  inside one would be counted once per step.
- Two linears read their input unspiked: the LM head (W8ASpike quantizes the blocks), and W_up of the
  forget gate. W_up's input, W_down's decoded output, lies on a lattice (integer combinations of
  W_down's ternary scale times the input scale), so re-quantizing it hits exact rounding ties that
  float noise breaks either way (tiny, ternary T = 4, float32 QAT vs frozen weights: logits differed
  on 32% of tokens with W_up spiked, 6% without).
- No LIF population: the spikes are the W8ASpike coding; of ``spike`` only ``timesteps`` (T) is used.
- ``spikingbrain-7b``: the seed's configuration, with T = 8 as in its NeuronChip bandwidth estimate
  (3584 x 8 spikes per layer) and the default ternary coding, which carries [-8, 8] in 8 steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from edgespike.config import CODINGS, ConfigError, ModelConfig, SpikeConfig
from edgespike.models.base import SpikingLM, State, prefixed, sub_state
from edgespike.models.registry import after_seed, register_family
from edgespike.nn import RMSNorm, SpikeEncoder, alibi_slopes, empty_cache, windowed_attention

LAYER_KINDS = ("gla", "swa")


@dataclass
class SpikingBrainConfig(ModelConfig):
    family = "spikingbrain"
    n_heads: int = 4
    n_kv_heads: int = 2
    ffn_dim: int = 256  # SwiGLU hidden width (intermediate_size)
    window: int = 32  # SWA: tokens each query sees before itself
    gate_rank: int = 16  # GLA: rank of the forget-gate projection
    gate_temperature: float = 16.0  # GLA: alpha = sigmoid(.)^(1 / gate_temperature)
    coding: str = "ternary"  # W8ASpike spike coding, one of CODINGS
    twos_complement: bool = False  # bitwise coding only: signed, the first step weighs -2^(T-1)

    def __post_init__(self):
        super().__post_init__()
        if self.d_model % self.n_heads or self.n_heads % self.n_kv_heads:
            raise ConfigError(
                f"spikingbrain: d_model ({self.d_model}) must divide by n_heads ({self.n_heads}), "
                f"and n_heads by n_kv_heads ({self.n_kv_heads})"
            )
        for name in ("ffn_dim", "window", "gate_rank"):
            if getattr(self, name) < 1:
                raise ConfigError(f"spikingbrain: {name} must be >= 1, got {getattr(self, name)}")
        if self.gate_temperature <= 0:
            raise ConfigError(f"spikingbrain: gate_temperature must be > 0, got {self.gate_temperature}")
        if self.coding not in CODINGS:
            raise ConfigError(f"spikingbrain: coding must be one of {CODINGS}, got {self.coding!r}")
        if self.twos_complement and self.coding != "bitwise":
            raise ConfigError(
                f"spikingbrain: twos_complement applies to coding='bitwise' only, got coding={self.coding!r}"
            )


def layer_kind(index: int) -> str:
    """GLA on even layers, SWA on odd ones."""
    return LAYER_KINDS[index % 2]


class W8ASpike(nn.Module):
    """The spike-coded input of one or more linears: forward(x[B, S, in], *linears) -> their
    outputs W x [B, S, out], each linear run once on the spikes of x (module docstring)."""

    def __init__(self, config: SpikingBrainConfig):
        super().__init__()
        self.encoder = SpikeEncoder(config.spike.timesteps, config.coding, config.twos_complement)
        self.zero_point = self.encoder.low == 0  # an unsigned coding

    def forward(self, x: Tensor, *linears: nn.Module) -> tuple[Tensor, ...]:
        if not self.zero_point:
            spikes, scale = self.encoder(x)  # [T, B, S, in], [B, S, 1]
            return tuple(self.encoder.decode(linear(spikes), scale) for linear in linears)
        zero = x.detach().amin(dim=-1, keepdim=True)  # [B, S, 1]
        spikes, scale = self.encoder(x - zero)
        spikes = torch.cat([spikes, torch.ones_like(spikes[:1])])  # [T+1, B, S, in]: the zero point's step
        outputs = (linear(spikes) for linear in linears)
        return tuple(self.encoder.decode(y[:-1], scale) + y[-1] * zero for y in outputs)


def gla_recurrence(q: Tensor, k: Tensor, v: Tensor, alpha: Tensor, memory: Tensor) -> tuple[Tensor, Tensor]:
    """q, k, alpha, v [B, H, S, h], memory S [B, H, h, h] -> (o [B, H, S, h], S after the last token)."""
    out = []
    for t in range(q.shape[2]):
        memory = alpha[:, :, t, :, None] * memory + k[:, :, t, :, None] * v[:, :, t, None, :]
        out.append((q[:, :, t, None, :] @ memory)[:, :, 0])  # [B, H, h]
    return torch.stack(out, dim=2), memory


class Heads(nn.Module):
    """The GQA projection shapes both mixers share: q [d -> d], k, v [d -> n_kv_heads * h]."""

    def __init__(self, model: "SpikingBrain"):
        super().__init__()
        cfg = model.config
        self.n_heads, self.n_kv_heads = cfg.n_heads, cfg.n_kv_heads
        self.head_dim = cfg.d_model // cfg.n_heads
        kv_dim = self.n_kv_heads * self.head_dim
        self.q_proj = model.linear(cfg.d_model, cfg.d_model)
        self.k_proj = model.linear(cfg.d_model, kv_dim)
        self.v_proj = model.linear(cfg.d_model, kv_dim)
        self.o_proj = model.linear(cfg.d_model, cfg.d_model)
        self.output_spikes = W8ASpike(cfg)

    def split(self, x: Tensor, n_heads: int) -> Tensor:
        batch, seq = x.shape[:2]
        return x.reshape(batch, seq, n_heads, self.head_dim).transpose(1, 2)  # [B, heads, S, h]

    def output(self, o: Tensor) -> Tensor:
        """o [B, H, S, h] -> o_proj of the merged heads [B, S, d]."""
        batch, _, seq, _ = o.shape
        (y,) = self.output_spikes(o.transpose(1, 2).reshape(batch, seq, -1), self.o_proj)
        return y


class GatedLinearAttention(Heads):
    def __init__(self, model: "SpikingBrain"):
        super().__init__(model)
        cfg = model.config
        self.temperature = cfg.gate_temperature
        self.g_proj = model.linear(cfg.d_model, cfg.d_model)  # output gate
        self.gate_down = model.linear(cfg.d_model, cfg.gate_rank)  # forget gate, low rank
        self.gate_up = model.linear(cfg.gate_rank, cfg.d_model, bias=True)  # reads gate_down's output unspiked
        self.input_spikes = W8ASpike(cfg)
        self.head_norm = RMSNorm(self.head_dim)

    def init_state(self, batch: int, like: Tensor) -> State:
        return {"S": like.new_zeros(batch, self.n_heads, self.head_dim, self.head_dim)}

    def forward(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        q, k, v, g, low = self.input_spikes(x, self.q_proj, self.k_proj, self.v_proj, self.g_proj, self.gate_down)
        # log sigmoid(z) = -softplus(-z): Core ML has no log_sigmoid
        alpha = torch.exp(-nn.functional.softplus(-self.gate_up(low)) / self.temperature)  # [B, S, d]
        group = self.n_heads // self.n_kv_heads
        o, memory = gla_recurrence(
            self.split(q, self.n_heads) / math.sqrt(self.head_dim),
            self.split(k, self.n_kv_heads).repeat_interleave(group, dim=1),
            self.split(v, self.n_kv_heads).repeat_interleave(group, dim=1),
            self.split(alpha, self.n_heads),
            state["S"],
        )
        o = self.head_norm(o) * nn.functional.silu(self.split(g, self.n_heads))  # [B, H, S, h]
        return self.output(o), {"S": memory}


class SlidingWindowAttention(Heads):
    def __init__(self, model: "SpikingBrain"):
        super().__init__(model)
        self.window = model.config.window
        self.input_spikes = W8ASpike(model.config)
        self.register_buffer("slopes", alibi_slopes(self.n_heads), persistent=False)

    def init_state(self, batch: int, like: Tensor) -> State:
        return prefixed("kv.", empty_cache(batch, self.n_kv_heads, self.window, self.head_dim, like))

    def forward(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        q, k, v = self.input_spikes(x, self.q_proj, self.k_proj, self.v_proj)
        o, kv = windowed_attention(
            self.split(q, self.n_heads), self.split(k, self.n_kv_heads), self.split(v, self.n_kv_heads),
            sub_state(state, "kv."), self.slopes,
        )  # fmt: skip
        return self.output(o), prefixed("kv.", kv)


class SwiGLU(nn.Module):
    """down(silu(gate(x)) * up(x)), every linear on spikes."""

    def __init__(self, model: "SpikingBrain"):
        super().__init__()
        cfg = model.config
        self.gate_proj = model.linear(cfg.d_model, cfg.ffn_dim)
        self.up_proj = model.linear(cfg.d_model, cfg.ffn_dim)
        self.down_proj = model.linear(cfg.ffn_dim, cfg.d_model)
        self.input_spikes = W8ASpike(cfg)
        self.hidden_spikes = W8ASpike(cfg)

    def forward(self, x: Tensor) -> Tensor:
        gate, up = self.input_spikes(x, self.gate_proj, self.up_proj)  # [B, S, ffn]
        (y,) = self.hidden_spikes(nn.functional.silu(gate) * up, self.down_proj)
        return y


class HybridBlock(nn.Module):
    def __init__(self, model: "SpikingBrain", kind: str):
        super().__init__()
        d = model.config.d_model
        self.kind = kind
        self.attn_norm = RMSNorm(d)
        self.attn = GatedLinearAttention(model) if kind == "gla" else SlidingWindowAttention(model)
        self.mlp_norm = RMSNorm(d)
        self.mlp = SwiGLU(model)

    def init_state(self, batch: int, like: Tensor) -> State:
        return prefixed("attn.", self.attn.init_state(batch, like))

    def forward(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        dx, attn_state = self.attn(self.attn_norm(x), sub_state(state, "attn."))
        x = x + dx
        return x + self.mlp(self.mlp_norm(x)), prefixed("attn.", attn_state)


class SpikingBrain(SpikingLM):
    config_class = SpikingBrainConfig

    def __init__(self, config: SpikingBrainConfig):
        super().__init__(config)
        self.embed = nn.Embedding(config.vocab_size, config.d_model)
        self.layers = nn.ModuleList(HybridBlock(self, layer_kind(i)) for i in range(config.n_layers))
        self.norm = RMSNorm(config.d_model)
        self.lm_head = self.linear(config.d_model, config.vocab_size)  # untied

    def forward(self, tokens: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        self.check_tokens(tokens)
        state = self.init_state(tokens.shape[0]) if state is None else state
        x = self.embed(tokens)  # [B, S, d]
        x, new_state = self.run_layers(x, state)
        return self.lm_head(self.norm(x)), new_state


PRESETS = {
    "tiny": SpikingBrainConfig(vocab_size=256, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=128, window=16),
    "spikingbrain-7b": SpikingBrainConfig(
        vocab_size=152064, d_model=3584, n_layers=28, n_heads=28, n_kv_heads=4, ffn_dim=18944, window=4096,
        spike=SpikeConfig(timesteps=8),
    ),
}

register_family(SpikingBrain, PRESETS, summary="SpikingBrain-7B: GLA / SWA hybrid, SwiGLU, W8ASpike activation spikes", origin=after_seed("002"))
