"""``pulse``: edgespike's spiking transformer after the SLMS Pulse write-up (seed 003).

edgespike's own design, not the published model: SLMS Pulse as its public code computes it
(RoPE, LIF on the branch outputs, SwiGLU with biases; its Pulse-1B checkpoint imports) is the
``slms_pulse`` family (``../shared/seeds/PUBLISHED.md`` section 1 compares the two).

A decoder-only transformer whose blocks speak in spikes: pre-RMSNorm, LIF neurons on the
linears' inputs (``edgespike::lif``: immediate reset by subtraction, a fixed beta), grouped-query
attention over a sliding window, a spiking MLP, tied input/output embeddings, a BPE-1024 tokenizer.

Per block, with T timesteps per token, layer-major (DESIGN.md):
    s  = LIF(RMSNorm(x) held for T steps)                 spikes [S*T, B, d]
    q, k, v = mean_T(spike_linear(s))                     one matmul over S*T*B rows
    x += o_proj(GQA sliding-window attention(q, k, v))
    s2 = LIF(RMSNorm(x) held for T steps);  h = LIF(up(s2));  x += mean_T(down(h))

Choices where the seed is silent:
- Membranes carry across tokens: a token's T steps continue where the previous token's
  ended, so every LIF population's membrane is decode state.
- Positions: ALiBi distances instead of RoPE (see ``edgespike.nn.attention``), so the KV
  cache is a shift buffer and the state holds no absolute position.
- ``pulse-1b`` is our 1.0B config, not the published one: with the seed write-up's 1024-token
  vocabulary it reaches 1.0B parameters by width and depth like Llama-style 1B models (d=2048,
  30 layers, 16 query / 4 KV heads, SwiGLU-free MLP of 5632). The published Pulse-1B (vocab
  32,768, 18 layers, 16 / 8 heads, SwiGLU of 8192 with biases) is ``slms_pulse``'s ``pulse-1b``.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from edgespike.config import ConfigError, ModelConfig, SpikeConfig
from edgespike.models.base import SpikingLM, State, prefixed, sub_state
from edgespike.models.registry import after_seed, register_family
from edgespike.nn import LIF, RMSNorm, alibi_slopes, empty_cache, mean_over_time, repeat_over_time, windowed_attention


@dataclass
class PulseConfig(ModelConfig):
    family = "pulse"
    n_heads: int = 4
    n_kv_heads: int = 2
    ffn_dim: int = 256  # MLP hidden width
    window: int = 32  # tokens each query sees before itself
    dropout: float = 0.0  # training only: of the embedding and of each residual branch's output

    def __post_init__(self):
        super().__post_init__()
        if self.d_model % self.n_heads or self.n_heads % self.n_kv_heads:
            raise ConfigError(
                f"pulse: d_model ({self.d_model}) must divide by n_heads ({self.n_heads}), "
                f"and n_heads by n_kv_heads ({self.n_kv_heads})"
            )
        if self.window < 1:
            raise ConfigError(f"pulse: window must be >= 1, got {self.window}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"pulse: dropout must be in [0, 1), got {self.dropout}")


class PulseBlock(nn.Module):
    def __init__(self, model: "Pulse"):
        super().__init__()
        cfg = model.config
        self.timesteps = cfg.spike.timesteps
        self.n_heads, self.n_kv_heads = cfg.n_heads, cfg.n_kv_heads
        self.head_dim = cfg.d_model // cfg.n_heads
        kv_dim = self.n_kv_heads * self.head_dim
        self.attn_norm = RMSNorm(cfg.d_model)
        self.attn_lif = LIF(cfg.spike)
        self.q_proj = model.linear(cfg.d_model, cfg.d_model)
        self.k_proj = model.linear(cfg.d_model, kv_dim)
        self.v_proj = model.linear(cfg.d_model, kv_dim)
        self.o_proj = model.linear(cfg.d_model, cfg.d_model)
        self.register_buffer("slopes", alibi_slopes(cfg.n_heads), persistent=False)
        self.mlp_norm = RMSNorm(cfg.d_model)
        self.mlp_lif = LIF(cfg.spike)
        self.up = model.linear(cfg.d_model, cfg.ffn_dim)
        self.hidden_lif = LIF(cfg.spike)
        self.down = model.linear(cfg.ffn_dim, cfg.d_model)
        self.window = cfg.window
        self.dropout = cfg.dropout

    def _drop(self, x: Tensor) -> Tensor:
        return nn.functional.dropout(x, self.dropout) if self.training and self.dropout else x

    def init_state(self, batch: int, like: Tensor) -> State:
        d, ffn = self.attn_norm.weight.shape[0], self.up.out_features
        return {
            "v_attn": like.new_zeros(batch, d),
            "v_mlp": like.new_zeros(batch, d),
            "v_hidden": like.new_zeros(batch, ffn),
            **prefixed("kv.", empty_cache(batch, self.n_kv_heads, self.window, self.head_dim, like)),
        }

    def _heads(self, x: Tensor, n_heads: int) -> Tensor:
        batch, seq = x.shape[:2]
        return x.reshape(batch, seq, n_heads, self.head_dim).transpose(1, 2)  # [B, heads, S, hd]

    def forward(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        T = self.timesteps
        batch, seq, d = x.shape
        spikes, v_attn = self.attn_lif(repeat_over_time(self.attn_norm(x), T), state["v_attn"])  # [S*T, B, d]
        q = self._heads(mean_over_time(self.q_proj(spikes), T), self.n_heads)
        k = self._heads(mean_over_time(self.k_proj(spikes), T), self.n_kv_heads)
        v = self._heads(mean_over_time(self.v_proj(spikes), T), self.n_kv_heads)
        attn, kv = windowed_attention(q, k, v, sub_state(state, "kv."), self.slopes)
        x = x + self._drop(self.o_proj(attn.transpose(1, 2).reshape(batch, seq, d)))

        spikes, v_mlp = self.mlp_lif(repeat_over_time(self.mlp_norm(x), T), state["v_mlp"])
        hidden, v_hidden = self.hidden_lif(self.up(spikes), state["v_hidden"])  # [S*T, B, ffn]
        x = x + self._drop(mean_over_time(self.down(hidden), T))
        return x, {"v_attn": v_attn, "v_mlp": v_mlp, "v_hidden": v_hidden, **prefixed("kv.", kv)}


class Pulse(SpikingLM):
    config_class = PulseConfig

    def __init__(self, config: PulseConfig):
        super().__init__(config)
        self.embed = nn.Embedding(config.vocab_size, config.d_model)
        nn.init.normal_(self.embed.weight, std=config.d_model**-0.5)
        self.layers = nn.ModuleList(PulseBlock(self) for _ in range(config.n_layers))
        self.norm = RMSNorm(config.d_model)

    def forward(self, tokens: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        self.check_tokens(tokens)
        state = self.init_state(tokens.shape[0]) if state is None else state
        x = self.embed(tokens)  # [B, S, d]
        if self.training and self.config.dropout:
            x = nn.functional.dropout(x, self.config.dropout)
        x, new_state = self.run_layers(x, state)
        return nn.functional.linear(self.norm(x), self.embed.weight), new_state  # tied head


PRESETS = {
    "tiny": PulseConfig(vocab_size=256, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=128, window=16),
    "small": PulseConfig(vocab_size=1024, d_model=192, n_layers=4, n_heads=6, n_kv_heads=2, ffn_dim=512, window=64),
    "pulse-1b": PulseConfig(
        vocab_size=1024, d_model=2048, n_layers=30, n_heads=16, n_kv_heads=4, ffn_dim=5632, window=1024,
        spike=SpikeConfig(timesteps=4),
    ),
}

register_family(Pulse, PRESETS, summary="SLMS Pulse: LIF transformer, GQA + sliding window, tied embeddings", origin=after_seed("003"))
