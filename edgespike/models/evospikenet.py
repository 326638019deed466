"""``evospikenet``: edgespike's design after the EvoSpikeNetLM write-up (seed 000), ChronoSpikeAttention +
SpikingFFN blocks. No EvoSpikeNet code or weights are public, so no family computes "the published model".

The seed fixes the parameter budget, params ~ 2Vd + 12Ld²: an untied input embedding and output
head (2Vd) and L blocks of ChronoSpikeAttention (q, k, v, o: 4d²) and SpikingFFN (d -> 4d -> d:
8d²), none with a bias; the only other parameters are the RMSNorm weights, (2L + 1) d.

Per block, with T timesteps per token, layer-major (DESIGN.md):
    s  = LIF(RMSNorm(x) held for T steps)                     spikes [S*T, B, d]
    q, k, v = mean_T(W_q s), mean_T(W_k s), mean_T(W_v s)      one matmul each over S*T*B rows
    x += W_o ChronoAttention(q, k, v)
    s2 = LIF(RMSNorm(x) held for T steps);  h = LIF(W_up s2);  x += mean_T(W_down h)    h [S*T, B, 4d]

ChronoSpikeAttention (the seed names it and gives its size, 4d²; the public EvoSpikeNet docs describe it
twice, inconsistently: a sigmoid attention over the T timesteps of a spike tensor with a causal decay
mask exp(-(t - t')/tau), and a softmax with a Gaussian time bias 0.7 exp(-(t_i - t_j)²/512),
``../shared/seeds/PUBLISHED.md`` section 5; ours follows neither):
causal multi-head attention over the last ``window`` tokens whose weights decay with the age of
the key, a fixed time constant per head and no learned parameter:
    a_ij = softmax_j(q_i k_j / sqrt(h) - m_H (i - j)),   i.e.  exp(q_i k_j / sqrt(h)) * exp(-m_H (i - j))
with the geometric ALiBi slopes m_H = 2^(-8H/n_heads): recent tokens dominate, and each head
looks back over its own horizon of ~1/m_H tokens. It runs on spike-driven q, k, v; k and v
have all d channels (no grouping), as 4d² requires.

Choices where the seed is silent:
- Neurons as in ``pulse`` (snntorch-style Leaky, reset by subtraction); membranes carry across
  tokens, so every LIF population's membrane is decode state, and so is the shift-buffer KV cache.
- Heads of width 128 in the full-size presets; a 512-token window, the context of the seed's
  bert-base-uncased tokenizer (V = 30,522). Left out: the seed's training-time control modules
  (MetaSTDP, AEG), which add no inference parameters to its formula.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from edgespike.config import ConfigError, ModelConfig
from edgespike.models.base import SpikingLM, State, prefixed, sub_state
from edgespike.models.registry import after_seed, register_family
from edgespike.nn import LIF, RMSNorm, alibi_slopes, empty_cache, mean_over_time, repeat_over_time, windowed_attention

FFN_MULT = 4  # SpikingFFN width, d -> 4d -> d (8d² parameters)


@dataclass
class EvoSpikeNetConfig(ModelConfig):
    family = "evospikenet"
    vocab_size: int = 30522  # bert-base-uncased WordPiece
    n_heads: int = 4
    window: int = 32  # tokens each query sees before itself

    def __post_init__(self):
        super().__post_init__()
        if self.d_model % self.n_heads:
            raise ConfigError(f"evospikenet: d_model ({self.d_model}) must divide by n_heads ({self.n_heads})")
        if self.window < 1:
            raise ConfigError(f"evospikenet: window must be >= 1, got {self.window}")


def formula_parameters(config: EvoSpikeNetConfig) -> int:
    """The seed's estimate 2Vd + 12Ld² (the model adds only its norm weights, (2L + 1) d)."""
    return 2 * config.vocab_size * config.d_model + 12 * config.n_layers * config.d_model**2


class ChronoSpikeAttention(nn.Module):
    """Spike-driven q, k, v; causal windowed attention with a fixed exponential time decay (4d²)."""

    def __init__(self, model: "EvoSpikeNet"):
        super().__init__()
        cfg = model.config
        d, self.timesteps = cfg.d_model, cfg.spike.timesteps
        self.n_heads, self.head_dim, self.window = cfg.n_heads, d // cfg.n_heads, cfg.window
        self.norm = RMSNorm(d)
        self.lif = LIF(cfg.spike)
        self.q_proj = model.linear(d, d)
        self.k_proj = model.linear(d, d)
        self.v_proj = model.linear(d, d)
        self.o_proj = model.linear(d, d)
        self.register_buffer("slopes", alibi_slopes(cfg.n_heads), persistent=False)  # m_H, decay per token

    def init_state(self, batch: int, like: Tensor) -> State:
        return {
            "v": like.new_zeros(batch, self.n_heads * self.head_dim),
            **prefixed("kv.", empty_cache(batch, self.n_heads, self.window, self.head_dim, like)),
        }

    def _heads(self, x: Tensor) -> Tensor:
        batch, seq = x.shape[:2]
        return x.reshape(batch, seq, self.n_heads, self.head_dim).transpose(1, 2)  # [B, H, S, h]

    def forward(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        T = self.timesteps
        batch, seq, d = x.shape
        spikes, v = self.lif(repeat_over_time(self.norm(x), T), state["v"])  # [S*T, B, d]
        q, k, values = (self._heads(mean_over_time(p(spikes), T)) for p in (self.q_proj, self.k_proj, self.v_proj))
        attn, kv = windowed_attention(q, k, values, sub_state(state, "kv."), self.slopes)  # [B, H, S, h]
        return self.o_proj(attn.transpose(1, 2).reshape(batch, seq, d)), {"v": v, **prefixed("kv.", kv)}


class SpikingFFN(nn.Module):
    """mean_T(W_down LIF(W_up LIF(RMSNorm(x)))), d -> 4d -> d (8d²)."""

    def __init__(self, model: "EvoSpikeNet"):
        super().__init__()
        cfg = model.config
        d, self.timesteps = cfg.d_model, cfg.spike.timesteps
        self.norm = RMSNorm(d)
        self.lif = LIF(cfg.spike)
        self.up = model.linear(d, FFN_MULT * d)
        self.hidden_lif = LIF(cfg.spike)
        self.down = model.linear(FFN_MULT * d, d)

    def init_state(self, batch: int, like: Tensor) -> State:
        d = self.norm.weight.shape[0]
        return {"v": like.new_zeros(batch, d), "v_hidden": like.new_zeros(batch, FFN_MULT * d)}

    def forward(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        T = self.timesteps
        spikes, v = self.lif(repeat_over_time(self.norm(x), T), state["v"])  # [S*T, B, d]
        hidden, v_hidden = self.hidden_lif(self.up(spikes), state["v_hidden"])  # [S*T, B, 4d]
        return mean_over_time(self.down(hidden), T), {"v": v, "v_hidden": v_hidden}


class EvoSpikeBlock(nn.Module):
    def __init__(self, model: "EvoSpikeNet"):
        super().__init__()
        self.attn = ChronoSpikeAttention(model)
        self.ffn = SpikingFFN(model)

    def init_state(self, batch: int, like: Tensor) -> State:
        return {
            **prefixed("attn.", self.attn.init_state(batch, like)),
            **prefixed("ffn.", self.ffn.init_state(batch, like)),
        }

    def forward(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        dx, attn_state = self.attn(x, sub_state(state, "attn."))
        x = x + dx
        dx, ffn_state = self.ffn(x, sub_state(state, "ffn."))
        return x + dx, {**prefixed("attn.", attn_state), **prefixed("ffn.", ffn_state)}


class EvoSpikeNet(SpikingLM):
    config_class = EvoSpikeNetConfig

    def __init__(self, config: EvoSpikeNetConfig):
        super().__init__(config)
        self.embed = nn.Embedding(config.vocab_size, config.d_model)  # Vd
        self.layers = nn.ModuleList(EvoSpikeBlock(self) for _ in range(config.n_layers))  # 12Ld²
        self.norm = RMSNorm(config.d_model)
        self.head = self.linear(config.d_model, config.vocab_size)  # Vd, untied

    def forward(self, tokens: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        self.check_tokens(tokens)
        state = self.init_state(tokens.shape[0]) if state is None else state
        x = self.embed(tokens)  # [B, S, d]
        x, new_state = self.run_layers(x, state)
        return self.head(self.norm(x)), new_state


def _full_size(n_layers: int, d_model: int) -> EvoSpikeNetConfig:
    return EvoSpikeNetConfig(vocab_size=30522, d_model=d_model, n_layers=n_layers, n_heads=d_model // 128, window=512)


PRESETS = {
    "tiny": EvoSpikeNetConfig(vocab_size=256, d_model=64, n_layers=2, n_heads=4, window=16),
    "3b-balanced": _full_size(32, 2560),  # seed: ~2.7B
    "3b-wider": _full_size(32, 2816),  # ~3.2B
    "3b-deeper": _full_size(40, 2560),  # ~3.3B
    "7b-llama": _full_size(32, 4096),  # ~6.7B, Llama-2 7B's shape
    "7b-larger": _full_size(40, 4096),  # ~8.3B
}

register_family(EvoSpikeNet, PRESETS, summary="EvoSpikeNetLM: ChronoSpikeAttention + SpikingFFN, 2Vd + 12Ld² params", origin=after_seed("000"))
