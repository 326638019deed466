"""``slms_pulse``: SLMS Pulse as its published code computes it (g-hano/slms, HEAD 633fe02:
models/transformer/layers.py and transformer.py; ``SpikingLLM``), so Pulse-1B loads.

Per block (layer i; "global" when i % 6 == 5, else "local"):
    h = PreRMSNorm(x)                                   eps 1e-5, in fp32
    q, k, v = q_proj(h), k_proj(h), v_proj(h)           dense, no bias, GQA (head_dim = d / heads)
    q, k = RoPE(q, k) at the tokens' absolute positions  theta_local 1e4 / theta_global 1e6
    out = o_proj(softmax attention)                     local: keys with 0 <= i - j <= window;
                                                        global: every earlier key (causal)
    a = rate(LIF(out held for T steps)) * mean|out| * spike_scale
    x = x + attn_gate * a
    f = out(swish(fc(h2)[:half]) * fc(h2)[half:])        SwiGLU, fc and out with biases
    x = x + ffn_gate * rate(LIF(f held for T steps)) * running_mean * spike_scale
then final PreRMSNorm and the head tied to token_emb. The LIF is snntorch's ``Leaky``
(delayed reset by subtraction, strict ``>``, the checkpoint's learned beta clamped to [0, 1],
threshold and graded_spikes_factor), its membrane zero for every token (no carry).

The published RoPE is not the usual rotation: cos/sin [S, hd/2] are repeat-interleaved to hd
but ``rotate_half`` pairs dim j with j + hd/2 (so j uses frequency j // 2 and j + hd/2 uses
(j + hd/2) // 2). The published model computes inv_freq, positions and cos/sin in bf16 (a bf16
arange is exact only to 256: positions 0..1023 take 513 distinct values); the tables here are
computed the same way in ``rope_dtype`` (the checkpoint's dtype on import) and kept, the rest
computes in the model's float dtype.

Deviations from the published code, each where it is broken (PUBLISHED.md section 1):
- Causal masks. Its boolean masks become -inf where they are True, which attends to the future
  only; here local and global layers are causal as its mask construction intends.
- Decoding. Its cached decode crashes (kv_len reads the head count) and gives every decoded
  token position 0; here a decode step takes its absolute position (``position`` state, an
  input of the exported step), global layers keep a ``max_seq_len``-slot KV cache and local
  layers a shift buffer of the last ``window`` keys; positions past max_seq_len are an error.
- mean|out|. It takes one scalar over the whole batch x sequence x d tensor, so a token's output
  depends on later tokens and on other sequences; here it is per token, over d (what the
  published code computes when it decodes one token of one sequence).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from edgespike.config import ConfigError, ModelConfig, SpikeConfig
from edgespike.models.base import SpikingLM, State, prefixed, sub_state
from edgespike.models.registry import AS_PUBLISHED, register_family
from edgespike.nn import LIF, RMSNorm, causal_cache_attention, empty_cache, windowed_attention

GLOBAL_EVERY = 6  # layer i is global when i % 6 == 5 (layers.py, forward)
ROPE_DTYPES = ("float32", "bfloat16", "float16")


def published_spike() -> SpikeConfig:
    """snntorch Leaky(beta=0.95, learn_beta=True) as layers.py builds it, 3 steps."""
    return SpikeConfig(timesteps=3, beta=0.95, threshold=1.0, reset="subtract", delayed_reset=True, strict=True)


@dataclass
class SlmsPulseConfig(ModelConfig):
    family = "slms_pulse"
    weights: str = "float"  # published weights are dense
    n_heads: int = 4
    n_kv_heads: int = 2
    ffn_dim: int = 256  # SwiGLU hidden width (intermediate_size; published default 4 * d)
    max_seq_len: int = 128
    window: int = 16  # window_size: a local query sees itself and this many keys before it
    rope_theta_local: float = 1e4
    rope_theta_global: float = 1e6
    rope_dtype: str = "float32"  # dtype the RoPE tables are computed in
    norm_eps: float = 1e-5
    spike: SpikeConfig = field(default_factory=published_spike)

    def __post_init__(self):
        super().__post_init__()
        if self.d_model % self.n_heads or self.n_heads % self.n_kv_heads or (self.d_model // self.n_heads) % 2:
            raise ConfigError(
                f"slms_pulse: d_model ({self.d_model}) must divide by n_heads ({self.n_heads}) into an even head_dim, "
                f"and n_heads by n_kv_heads ({self.n_kv_heads})"
            )
        for name in ("ffn_dim", "max_seq_len", "window"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ConfigError(f"slms_pulse: {name} must be a positive integer, got {getattr(self, name)!r}")
        if self.rope_dtype not in ROPE_DTYPES:
            raise ConfigError(f"slms_pulse: rope_dtype must be one of {ROPE_DTYPES}, got {self.rope_dtype!r}")


def is_global(layer: int) -> bool:
    return layer % GLOBAL_EVERY == GLOBAL_EVERY - 1


class PublishedRoPE(nn.Module):
    """layers.py's RoPE: inv_freq (a checkpoint buffer) and the cos/sin tables of positions
    0..max_seq_len-1, computed in ``dtype`` as the published code computes them."""

    def __init__(self, head_dim: int, max_seq_len: int, theta: float, dtype: torch.dtype):
        super().__init__()
        self.max_seq_len, self.table_dtype = max_seq_len, dtype
        steps = torch.arange(0, head_dim, 2, dtype=dtype).to(dtype)
        self.register_buffer("inv_freq", (1.0 / (theta ** (steps / head_dim))).float())
        self.register_buffer("cos", torch.empty(max_seq_len, head_dim // 2), persistent=False)
        self.register_buffer("sin", torch.empty(max_seq_len, head_dim // 2), persistent=False)
        self.refresh_tables()
        self.register_load_state_dict_post_hook(lambda module, _keys: module.refresh_tables())

    @torch.no_grad()
    def refresh_tables(self) -> None:
        if self.inv_freq.is_meta:
            return
        positions = torch.arange(self.max_seq_len, dtype=self.table_dtype, device=self.inv_freq.device)
        freqs = torch.einsum("i,j->ij", positions, self.inv_freq.to(self.table_dtype))
        self.cos.copy_(torch.cos(freqs))
        self.sin.copy_(torch.sin(freqs))

    def forward(self, q: Tensor, k: Tensor, positions: Tensor) -> tuple[Tensor, Tensor]:
        """q[B, S, H, hd], k[B, S, Hkv, hd], positions[B, S] -> rotated (apply_rope)."""
        cos = nn.functional.embedding(positions, self.cos).to(q.dtype).repeat_interleave(2, dim=-1)[:, :, None]
        sin = nn.functional.embedding(positions, self.sin).to(q.dtype).repeat_interleave(2, dim=-1)[:, :, None]
        return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin


def rotate_half(x: Tensor) -> Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def spike_rate(lif: LIF, current: Tensor, timesteps: int) -> Tensor:
    """current[B, S, d] held for T steps from a zero membrane -> the mean of the spikes over T."""
    held = current.unsqueeze(0).expand(timesteps, *current.shape)  # [T, B, S, d]
    spikes, _ = lif(held, current.new_zeros(current.shape))
    return spikes.sum(dim=0) / timesteps


class GroupedQueryAttention(nn.Module):
    def __init__(self, model: "SlmsPulse"):
        super().__init__()
        cfg = model.config
        self.n_heads, self.n_kv_heads = cfg.n_heads, cfg.n_kv_heads
        self.head_dim = cfg.d_model // cfg.n_heads
        self.q_proj = model.linear(cfg.d_model, cfg.n_heads * self.head_dim)
        self.k_proj = model.linear(cfg.d_model, cfg.n_kv_heads * self.head_dim)
        self.v_proj = model.linear(cfg.d_model, cfg.n_kv_heads * self.head_dim)
        self.o_proj = model.linear(cfg.n_heads * self.head_dim, cfg.d_model)


class SpikingAttention(nn.Module):
    """SpikingGroupedSlidingAttention: GQA with RoPE, then the output through a LIF."""

    def __init__(self, model: "SlmsPulse", layer: int):
        super().__init__()
        cfg = model.config
        head_dim, dtype = cfg.d_model // cfg.n_heads, getattr(torch, cfg.rope_dtype)
        self.is_global, self.window, self.timesteps = is_global(layer), cfg.window, cfg.spike.timesteps
        self.local_rope = PublishedRoPE(head_dim, cfg.max_seq_len, cfg.rope_theta_local, dtype)
        self.global_rope = PublishedRoPE(head_dim, cfg.max_seq_len, cfg.rope_theta_global, dtype)
        self.attn = GroupedQueryAttention(model)
        self.spike = LIF(cfg.spike, persistent=True, learn_beta=True)
        self.spike_scale = nn.Parameter(torch.ones(1))

    def init_state(self, batch: int, like: Tensor, max_seq_len: int) -> State:
        attn = self.attn
        if self.is_global:
            zeros = like.new_zeros(batch, attn.n_kv_heads, max_seq_len, attn.head_dim)
            return {"k": zeros, "v": zeros.clone()}
        return empty_cache(batch, attn.n_kv_heads, self.window, attn.head_dim, like)

    def forward(self, x: Tensor, positions: Tensor, cache: State) -> tuple[Tensor, State]:
        attn, (batch, seq, _) = self.attn, x.shape
        q = attn.q_proj(x).view(batch, seq, attn.n_heads, attn.head_dim)
        k = attn.k_proj(x).view(batch, seq, attn.n_kv_heads, attn.head_dim)
        v = attn.v_proj(x).view(batch, seq, attn.n_kv_heads, attn.head_dim)
        q, k = (self.global_rope if self.is_global else self.local_rope)(q, k, positions)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [B, heads, S, hd]
        if self.is_global:
            out, cache = causal_cache_attention(q, k, v, cache, positions)
        else:
            out, cache = windowed_attention(q, k, v, cache, None)
        out = attn.o_proj(out.transpose(1, 2).reshape(batch, seq, -1))
        scale = out.abs().mean(dim=-1, keepdim=True)  # per token (published: over the whole tensor)
        return spike_rate(self.spike, out, self.timesteps) * scale * self.spike_scale, cache


class SwiGLU(nn.Module):
    def __init__(self, model: "SlmsPulse"):
        super().__init__()
        cfg = model.config
        self.fc = model.linear(cfg.d_model, 2 * cfg.ffn_dim, bias=True)
        self.out = model.linear(cfg.ffn_dim, cfg.d_model, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        x1, x2 = self.fc(x).chunk(2, dim=-1)
        return self.out(x1 * torch.sigmoid(x1) * x2)


class SpikingSwiGLU(nn.Module):
    """SwiGLU, then a LIF; scaled by the running mean of |SwiGLU(x)|, which training updates with
    momentum 0.9 before using it, as layers.py does."""

    def __init__(self, model: "SlmsPulse"):
        super().__init__()
        self.swiglu = SwiGLU(model)
        self.lif = LIF(model.config.spike, persistent=True, learn_beta=True)
        self.timesteps = model.config.spike.timesteps
        self.spike_scale = nn.Parameter(torch.tensor(1.0))
        self.register_buffer("running_mean", torch.tensor(1.0))
        self.momentum = 0.9

    def forward(self, x: Tensor) -> Tensor:
        current = self.swiglu(x)
        if self.training:
            with torch.no_grad():
                self.running_mean.mul_(self.momentum).add_(current.abs().mean(), alpha=1 - self.momentum)
        return spike_rate(self.lif, current, self.timesteps) * self.running_mean * self.spike_scale


class SpikingTransformerBlock(nn.Module):
    def __init__(self, model: "SlmsPulse", layer: int):
        super().__init__()
        cfg = model.config
        self.max_seq_len = cfg.max_seq_len
        self.norm1 = RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.norm2 = RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.attn = SpikingAttention(model, layer)
        self.ffn = SpikingSwiGLU(model)
        self.attn_gate = nn.Parameter(torch.ones(1))
        self.ffn_gate = nn.Parameter(torch.ones(1))

    def init_state(self, batch: int, like: Tensor) -> State:
        return prefixed("kv.", self.attn.init_state(batch, like, self.max_seq_len))

    def forward(self, x: Tensor, positions: Tensor, state: State) -> tuple[Tensor, State]:
        attn_out, cache = self.attn(self.norm1(x), positions, sub_state(state, "kv."))
        x = x + self.attn_gate * attn_out
        x = x + self.ffn_gate * self.ffn(self.norm2(x))
        return x, prefixed("kv.", cache)


class SlmsPulse(SpikingLM):
    config_class = SlmsPulseConfig
    positional = True

    def __init__(self, config: SlmsPulseConfig):
        super().__init__(config)
        self.token_emb = nn.Embedding(config.vocab_size, config.d_model)
        nn.init.normal_(self.token_emb.weight, std=0.02)  # as the published _init_weights
        self.layers = nn.ModuleList(SpikingTransformerBlock(self, i) for i in range(config.n_layers))
        self.final_norm = RMSNorm(config.d_model, eps=config.norm_eps)

    def forward(self, tokens: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        self.check_tokens(tokens)
        state = self.init_state(tokens.shape[0]) if state is None else state
        x, new_state = self.run_layers(self.token_emb(tokens), state, self.positions(tokens, state))
        return nn.functional.linear(self.final_norm(x), self.token_emb.weight), new_state  # tied head


PRESETS = {
    "tiny": SlmsPulseConfig(
        vocab_size=256, d_model=64, n_layers=6, n_heads=4, n_kv_heads=2, ffn_dim=256, max_seq_len=128, window=8
    ),
    "pulse-1b": SlmsPulseConfig(  # inference.py MODEL_ARCH + the constructor defaults it leaves in place
        vocab_size=32768, d_model=2048, n_layers=18, n_heads=16, n_kv_heads=8, ffn_dim=8192, max_seq_len=1024,
        window=128, rope_dtype="bfloat16",
    ),
}

register_family(SlmsPulse, PRESETS, summary="SLMS Pulse as published (Pulse-1B): RoPE GQA local/global, LIF on branch outputs", origin=AS_PUBLISHED)
