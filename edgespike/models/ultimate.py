"""``ultimate``: edgespike's design after the "Ultimate SNN" write-up (seed 004), a character-level LM.
The published code is a numpy reservoir (only its readout trained, nothing saved), so there is nothing
to load; this family is a trained RWKV-style network instead (PUBLISHED.md section 3).

BitNet ternary weights, RWKV time mixing and channel mixing, LIF neurons in between, and a
hybrid readout from both the spike counts and the membrane potentials of a last LIF
population. Per block, with T timesteps per token, layer-major (DESIGN.md):

    time mix:     x' = RMSNorm(x);  m_c = mu_c * x'_t + (1 - mu_c) * x'_{t-1}   (c = k, v, r)
                  s = LIF([m_k, m_v, m_r] held for T steps)                    [S*T, B, 3d]
                  k, v, r = mean_T(K s_k), mean_T(V s_v), mean_T(R s_r)
                  x += O(sigmoid(r) * wkv(k, v))
    channel mix:  x' = RMSNorm(x);  m_k, m_r as above;  s = LIF([m_k, m_r] held)    [S*T, B, 2d]
                  h = LIF(K s_k)                                               [S*T, B, ffn]
                  x += sigmoid(mean_T(R s_r)) * mean_T(V h)
    readout:      s, v = LIF(RMSNorm(x) held), v read at the end of every token
                  logits = mean_T(H_s s) + H_v v

WKV (RWKV-4) with per-channel decay w = exp(time_decay) > 0 and bonus u:

    wkv_t = (a_{t-1} + e^(u + k_t) v_t) / (b_{t-1} + e^(u + k_t))
    a_t = e^-w a_{t-1} + e^(k_t) v_t,   b_t = e^-w b_{t-1} + e^(k_t)

kept in the numerically stable form: a and b scaled by e^-p with p the running maximum
exponent, so no exp() overflows, not even in the fp16 states of Core ML:

    q = max(p, u + k);     wkv = (e^(p-q) a + e^(u+k-q) v) / (e^(p-q) b + e^(u+k-q))
    q' = max(p - w, k);    a' = e^(p-w-q') a + e^(k-q') v;   b' = e^(p-w-q') b + e^(k-q');   p' = q'

An empty state has a = b = 0, and its p is read as EMPTY (a finite "minus infinity")
whatever is stored, so the state starts at all zeros as every runtime's does (Core ML's
``makeState()`` zero-fills). One exponential in each denominator is e^0 = 1, so no division
is by less than 1. Elementwise max and select only: no data-dependent control flow.

Choices where the seed is silent (its write-up is a results summary, not a specification):
- The neurons sit where RWKV has its nonlinearities: the token-shifted mixes are spiked
  before K, V, R (so those ternary linears add spikes, never multiply), and a hidden LIF
  population replaces channel mixing's squared ReLU. Every membrane carries across tokens.
- The readout population runs token by token (a T-step LIF call per token) so that its
  membrane at the end of every token can be read; the seed credits the membrane part with
  ~40% of its gain (spike-only PPL 16.42, hybrid 9.90).
- RWKV init: token-shift mixes mu = 0.5, decays spread log-uniformly from w = e^-5 (a memory
  of ~150 tokens) to w = e (0.07 of the state left after one token), bonus u = 0.
- Left out: "Progressive Training" (a training schedule, not an architecture) and the
  seed's "Attention" over history (the WKV state is the history this family keeps).
- ``ultimate`` is the seed's "Super Ultimate (500n)": 500 neurons wide; depth (2 blocks),
  the channel-mix width (1,000) and the 256-character vocabulary are ours.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from edgespike.config import ConfigError, ModelConfig
from edgespike.models.base import SpikingLM, State, prefixed, sub_state
from edgespike.models.registry import after_seed, register_family
from edgespike.nn import LIF, RMSNorm, mean_over_time, repeat_over_time

EMPTY = -1.0e4  # p of an empty WKV state (b = 0): e^(EMPTY - q) is 0, and fp16 holds it


@dataclass
class UltimateConfig(ModelConfig):
    family = "ultimate"
    vocab_size: int = 256  # characters
    weights: str = "ternary"  # BitNet b1.58
    ffn_dim: int = 256  # channel-mix hidden neurons

    def __post_init__(self):
        super().__post_init__()
        if not isinstance(self.ffn_dim, int) or self.ffn_dim <= 0:
            raise ConfigError(f"ultimate: ffn_dim must be a positive integer, got {self.ffn_dim!r}")


def token_shift(x: Tensor, previous: Tensor) -> Tensor:
    """x[B, S, d], previous[B, d] (the token before x) -> x_{t-1}[B, S, d].

    Sliced after the concatenation: x[:, :-1] would be empty at S = 1, and coremltools 9.0
    gets the shape of that empty slice wrong (a [2, ...] tensor where [1, ...] was due)."""
    return torch.cat([previous.unsqueeze(1), x], dim=1)[:, :-1]


def wkv(k: Tensor, v: Tensor, w: Tensor, u: Tensor, state: State) -> tuple[Tensor, State]:
    """k, v[B, S, d], w, u[d], state {a, b, p: [B, d]} -> (wkv[B, S, d], new state); stable form."""
    a, b, p = state["a"], state["b"], state["p"]
    p = torch.where(b > 0, p, torch.full_like(p, EMPTY))  # an empty state's p is minus infinity, whatever is stored
    out = []
    for t in range(k.shape[1]):
        kt, vt = k[:, t], v[:, t]
        q = torch.maximum(p, u + kt)
        old, new = torch.exp(p - q), torch.exp(u + kt - q)
        out.append((old * a + new * vt) / (old * b + new))
        q = torch.maximum(p - w, kt)
        old, new = torch.exp(p - w - q), torch.exp(kt - q)
        a, b, p = old * a + new * vt, old * b + new, q
    return torch.stack(out, dim=1), {"a": a, "b": b, "p": p}


class TimeMix(nn.Module):
    def __init__(self, model: "Ultimate"):
        super().__init__()
        cfg = model.config
        d, self.timesteps = cfg.d_model, cfg.spike.timesteps
        self.norm = RMSNorm(d)
        self.mix = nn.Parameter(torch.full((3, d), 0.5))  # mu_k, mu_v, mu_r
        self.lif = LIF(cfg.spike)
        self.key = model.linear(d, d)
        self.value = model.linear(d, d)
        self.receptance = model.linear(d, d)
        self.output = model.linear(d, d)
        self.time_decay = nn.Parameter(torch.linspace(-5.0, 1.0, d))  # w = exp(time_decay)
        self.time_first = nn.Parameter(torch.zeros(d))  # u

    def init_state(self, batch: int, like: Tensor) -> State:
        d = self.time_first.shape[0]
        zeros = like.new_zeros
        return {"shift": zeros(batch, d), "v": zeros(batch, 3 * d), "a": zeros(batch, d), "b": zeros(batch, d),
                "p": zeros(batch, d)}  # fmt: skip

    def forward(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        T = self.timesteps
        x = self.norm(x)
        previous = token_shift(x, state["shift"])
        mixed = torch.cat([x * mu + previous * (1.0 - mu) for mu in self.mix], dim=-1)  # [B, S, 3d]
        spikes, v = self.lif(repeat_over_time(mixed, T), state["v"])  # [S*T, B, 3d]
        s_k, s_v, s_r = spikes.chunk(3, dim=-1)
        k, value, r = (mean_over_time(proj(s), T) for proj, s in ((self.key, s_k), (self.value, s_v), (self.receptance, s_r)))
        mixed_values, wkv_state = wkv(k, value, torch.exp(self.time_decay), self.time_first, state)  # [B, S, d]
        return self.output(torch.sigmoid(r) * mixed_values), {"shift": x[:, -1], "v": v, **wkv_state}


class ChannelMix(nn.Module):
    def __init__(self, model: "Ultimate"):
        super().__init__()
        cfg = model.config
        d, self.timesteps = cfg.d_model, cfg.spike.timesteps
        self.norm = RMSNorm(d)
        self.mix = nn.Parameter(torch.full((2, d), 0.5))  # mu_k, mu_r
        self.lif = LIF(cfg.spike)
        self.key = model.linear(d, cfg.ffn_dim)
        self.hidden_lif = LIF(cfg.spike)
        self.value = model.linear(cfg.ffn_dim, d)
        self.receptance = model.linear(d, d)

    def init_state(self, batch: int, like: Tensor) -> State:
        d, ffn = self.norm.weight.shape[0], self.key.out_features
        return {"shift": like.new_zeros(batch, d), "v": like.new_zeros(batch, 2 * d), "v_hidden": like.new_zeros(batch, ffn)}

    def forward(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        T = self.timesteps
        x = self.norm(x)
        previous = token_shift(x, state["shift"])
        mixed = torch.cat([x * mu + previous * (1.0 - mu) for mu in self.mix], dim=-1)  # [B, S, 2d]
        spikes, v = self.lif(repeat_over_time(mixed, T), state["v"])  # [S*T, B, 2d]
        s_k, s_r = spikes.chunk(2, dim=-1)
        hidden, v_hidden = self.hidden_lif(self.key(s_k), state["v_hidden"])  # [S*T, B, ffn]
        out = torch.sigmoid(mean_over_time(self.receptance(s_r), T)) * mean_over_time(self.value(hidden), T)
        return out, {"shift": x[:, -1], "v": v, "v_hidden": v_hidden}


class Block(nn.Module):
    def __init__(self, model: "Ultimate"):
        super().__init__()
        self.time = TimeMix(model)
        self.channel = ChannelMix(model)

    def init_state(self, batch: int, like: Tensor) -> State:
        return {**prefixed("time.", self.time.init_state(batch, like)), **prefixed("channel.", self.channel.init_state(batch, like))}

    def forward(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        dx, time_state = self.time(x, sub_state(state, "time."))
        x = x + dx
        dx, channel_state = self.channel(x, sub_state(state, "channel."))
        return x + dx, {**prefixed("time.", time_state), **prefixed("channel.", channel_state)}


class HybridReadout(nn.Module):
    """logits = mean_T(H_s spikes) + H_v v: spike counts and end-of-token membranes."""

    def __init__(self, model: "Ultimate"):
        super().__init__()
        cfg = model.config
        self.timesteps = cfg.spike.timesteps
        self.norm = RMSNorm(cfg.d_model)
        self.lif = LIF(cfg.spike)
        self.spike_head = model.linear(cfg.d_model, cfg.vocab_size)
        self.membrane_head = model.linear(cfg.d_model, cfg.vocab_size)
        with torch.no_grad():  # a membrane held at current I settles at I / (1 - beta): keep logits at unit scale
            self.membrane_head.weight.mul_(1.0 - cfg.spike.beta)

    def forward(self, x: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        T = self.timesteps
        current = repeat_over_time(self.norm(x), T)  # [S*T, B, d]
        spikes, membranes = [], []
        for i in range(x.shape[1]):  # token by token, to read each token's last membrane
            token_spikes, v = self.lif(current[i * T : (i + 1) * T], v)  # [T, B, d]
            spikes.append(token_spikes)
            membranes.append(v)
        logits = mean_over_time(self.spike_head(torch.cat(spikes)), T) + self.membrane_head(torch.stack(membranes, dim=1))
        return logits, v  # [B, S, V], [B, d]


class Ultimate(SpikingLM):
    config_class = UltimateConfig

    def __init__(self, config: UltimateConfig):
        super().__init__(config)
        self.embed = nn.Embedding(config.vocab_size, config.d_model)
        self.layers = nn.ModuleList(Block(self) for _ in range(config.n_layers))
        self.readout = HybridReadout(self)

    def init_state(self, batch: int) -> State:
        return {"readout.v": self.state_like().new_zeros(batch, self.config.d_model), **self.layer_states(batch)}

    def forward(self, tokens: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        self.check_tokens(tokens)
        state = self.init_state(tokens.shape[0]) if state is None else state
        x = self.embed(tokens)  # [B, S, d]
        x, new_state = self.run_layers(x, state)
        logits, new_state["readout.v"] = self.readout(x, state["readout.v"])
        return logits, new_state


PRESETS = {
    "tiny": UltimateConfig(vocab_size=128, d_model=64, n_layers=2, ffn_dim=128),
    "ultimate": UltimateConfig(vocab_size=256, d_model=500, n_layers=2, ffn_dim=1000),  # "Super Ultimate (500n)"
}

register_family(Ultimate, PRESETS, summary="Ultimate SNN: char-level, BitNet ternary, RWKV time/channel mix, spike + membrane readout", origin=after_seed("004"))
