"""``spikingbrain_hf``: SpikingBrain-7B as BICLab's published code computes it (BICLab/SpikingBrain-7B,
HEAD ef99987: hf_7B_model/{configuration_gla_swa, modeling_gla_swa, gla_attention, window_attention}.py
and W8ASpike/{config.json, modeling_gla_swa, gla_attention, window_attention, quant_linear}.py,
Int2Spike/neuron.py), so the base / SFT and the W8ASpike checkpoints load (``edgespike import spikingbrain``).
Module names are the published state_dict names (``model.embeddings``, ``model.layers.i.attn.gk_proj.0``,
``lm_head`` ...), so the import maps 1:1. The ``spikingbrain`` family is a different, edgespike-native design.

Per block i (GLAswaForCausalLM / HybridBlock; ``attn_layers`` = the odd layers by default):
    x = x + attn(RMSNorm(x))        RMSNorm eps norm_eps (fla RMSNorm; the fused prenorm-residual is x + dx then norm)
    x = x + down(silu(gate(h)) * up(h)),  h = RMSNorm(x)     GLU, no biases
then logits = lm_head(RMSNorm(x)), lm_head untied, no bias.
GLA (even layers; GatedLinearAttention, fla ``chunk_gla``):
    q = ReLU(q_proj x) [H, d],  k = ReLU(k_proj x), v = v_proj x [Hkv, d]     q, k, v with biases
    gk = logsigmoid(gk_proj(x)) / 16 [Hkv, d]      gk_proj = gk_proj.0 (d -> 16) then gk_proj.1 (16 -> Hkv*d, +bias)
    k, v, gk repeated from Hkv to H heads (repeat_kv: KV head j serves query heads j*G .. j*G+G-1)
    S_t = diag(exp gk_t) S_{t-1} + k_t^T v_t,   o_t = (q_t d^-1/2) S_t            (fla's default scale)
    out = o_proj(g_norm(o))                        g_norm: RMSNorm over each head's d; no output gate
SWA (odd layers; FlashAttention): q, k, v (biases), HF RoPE (rotate_half, cat(freqs, freqs), inv_freq =
    1 / theta^(arange(0, d, 2) / d), computed in fp32), softmax(q k^T / sqrt(d)) over the key itself and the
    ``sliding_window`` keys before it (flash-attn causal, window_size=(W, 0)), GQA, o_proj without bias.
W8ASpike (``w8aspike``; QuantLinear replaces q/k/v/o, gk_proj and gate/up/down):
    weights  W <- round(W / s) * s per group of ``w_group_size`` (128) input channels, s = the stored
             ``weight_quantizer.scales`` [out, in/128, 1]
    inputs   vth = mean|x| / 3 over the last dim, clamped to [1e-5, 1e4]; x_int = round(x / vth), not clamped;
             x <- x_int * vth, x_int carried by the bidirectional bitwise spike coding (SpikeCountBitwiseNode
             is_bidirectional=True: sign * the bits of |x_int|, most significant first), which is lossless
    gk_proj  one full-rank QuantLinear d -> Hkv*d (+bias), not the low-rank pair
    down_proj  bypassed: W8ASpike's GLU calls swiglu_linear(gate, up, down_proj.weight), so its input is not
             spiked and its weight not re-quantized (its ``scales`` are still in the checkpoint)
    SWA      after RoPE, Q through the same dynamic spikes (k = 3, per head over d); K and V 8-bit symmetric
             per row (per token and head over d, scale = max|row| / 127 clamped to [1e-5, 1e4])
    lm_head  a plain Linear.
``spike_coded`` runs the activations through the spike coding (edgespike::spike_encode, then the decode);
off, the same integers are used directly (the fake-quantized float path): both give identical results.

Deviations from the published code:
- SWA window while decoding. Its HF cache (cache.py) keeps the last W keys including the new one, so once
  W tokens are cached a decoded query sees W - 1 earlier keys, while its training / prefill path (flash-attn
  window (W, 0)) sees W. Here every token sees W earlier keys, as prefill does, so a sequence equals its
  tokens decoded one by one (a shift buffer of the last W keys, ``edgespike.nn.windowed_attention``).
- GLA state. The recurrent state is kept per KV head, [B, Hkv, d, d]: the published [B, H, d, d] state
  holds G identical copies per group (k, v and gk are repeated, only q differs), so this is exact.
- Spike coding length. Int2Spike sizes T = ceil(log2(max|x_int| + 1)) over the whole tensor at run time; here
  T is fixed per input width n, ceil(log2(3 n + 1)), enough for every x_int (|x_int| <= max|x| / vth <= 3 n)
  while vth is not clamped at 1e4 (mean|x| <= 3e4). The coding is lossless either way.
- Positions. Each sequence's absolute position is the ``position`` state (an input of the exported step),
  limited to ``max_seq_len`` (max_position_embeddings); no attention mask / left padding. RoPE cos / sin are
  tabulated for positions 0..max_seq_len-1 in fp32 (the values upstream computes per call), then cast to
  the model's dtype (7B: 2 x 131072 x 64 fp32, 67 MB, non-persistent).
- Training. Upstream QuantLinear asserts eval; here the roundings pass gradients straight through.
- ``spike.timesteps`` is unused (the coding length is per linear, above). ``weights="ternary"`` trains the
  linears with edgespike's ternary QAT instead (not a published mode).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from edgespike.config import ConfigError, ModelConfig
from edgespike.models.base import SpikingLM, State, prefixed, sub_state
from edgespike.models.registry import AS_PUBLISHED, register_family
from edgespike.nn import RMSNorm, SpikeEncoder, empty_cache, windowed_attention
from edgespike.nn.ternary_linear import TernaryLinear
from edgespike.quant.activations import round_ste

EOS_TOKEN_ID = 151643  # <|endoftext|>: bos = eos in configuration_gla_swa.py


@dataclass
class SpikingBrainHFConfig(ModelConfig):
    family = "spikingbrain_hf"
    weights: str = "float"  # published weights are dense (bf16 base / fp32 W8ASpike)
    n_heads: int = 4  # num_attention_heads
    n_kv_heads: int = 2  # num_key_value_heads
    ffn_dim: int = 128  # intermediate_size
    attn_layers: list[int] | None = None  # SWA layers; None: the odd ones (configuration_gla_swa.py)
    sliding_window: int = 8  # a SWA query sees itself and this many keys before it
    rope_theta: float = 1e6
    norm_eps: float = 1e-6
    max_seq_len: int = 128  # max_position_embeddings
    gate_low_rank_dim: int = 16  # GLA gk_proj rank (base / SFT layout)
    gate_logit_normalizer: float = 16.0
    gla_chunk: int = 16  # tokens per chunk of the chunked GLA recurrence (a speed knob, not a semantic one)
    w8aspike: bool = False  # the W8ASpike variant (QuantLinear, full-rank gk_proj, spiked Q, int8 K/V)
    w_group_size: int = 128  # W8ASpike weight quantization group
    spike_k: float = 3.0  # W8ASpike dynamic_sfr: vth = mean|x| / k
    spike_coded: bool = True  # W8ASpike: carry the integers through the bitwise spike coding
    eos_token_id: int = EOS_TOKEN_ID  # <|endoftext|> (config.json eos_token_id)

    def __post_init__(self):
        super().__post_init__()
        if self.attn_layers is None:
            self.attn_layers = list(range(1, self.n_layers, 2))
        if self.d_model % self.n_heads or self.n_heads % self.n_kv_heads or (self.d_model // self.n_heads) % 2:
            raise ConfigError(
                f"spikingbrain_hf: d_model ({self.d_model}) must divide by n_heads ({self.n_heads}) into an even "
                f"head_dim, and n_heads by n_kv_heads ({self.n_kv_heads})"
            )
        for name in ("ffn_dim", "sliding_window", "max_seq_len", "gate_low_rank_dim", "gla_chunk", "w_group_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"spikingbrain_hf: {name} must be a positive integer, got {value!r}")
        if not isinstance(self.attn_layers, list) or not all(
            isinstance(i, int) and 0 <= i < self.n_layers for i in self.attn_layers
        ):
            raise ConfigError(
                f"spikingbrain_hf: attn_layers must be a list of layer indices in [0, {self.n_layers}), got {self.attn_layers!r}"
            )
        for name in ("w8aspike", "spike_coded"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"spikingbrain_hf: {name} must be true or false, got {getattr(self, name)!r}")
        if self.spike_k <= 0 or self.gate_logit_normalizer <= 0 or self.rope_theta <= 0 or self.norm_eps <= 0:
            raise ConfigError("spikingbrain_hf: spike_k, gate_logit_normalizer, rope_theta and norm_eps must be > 0")
        if self.w8aspike:
            widths = {"d_model": self.d_model, "ffn_dim": self.ffn_dim}
            for name, width in widths.items():
                if width % self.w_group_size:
                    raise ConfigError(
                        f"spikingbrain_hf: W8ASpike groups {self.w_group_size} input channels, but {name} is {width}; "
                        "choose a w_group_size that divides d_model and ffn_dim"
                    )

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads


def wide(dtype: torch.dtype) -> torch.dtype:
    """fp32, or the model's dtype where that is wider (fp64 tests)."""
    return torch.promote_types(dtype, torch.float32)


def training(x: Tensor) -> bool:
    return torch.is_grad_enabled() and x.requires_grad


def rounded(x: Tensor) -> Tensor:
    """round(x); straight-through while training (no detach in an exported graph: Core ML has no alias)."""
    return round_ste(x) if training(x) else torch.round(x)


def coding_steps(width: int, k: float) -> int:
    """Bits that carry every round(x / (mean|x| / k)) of a width-``width`` vector: |x_int| <= k * width."""
    return max(1, math.ceil(math.log2(k * width + 1)))


class DynamicSpikes(SpikeEncoder):
    """quant_linear.py ``dynamic_spikes`` with Int2Spike's SpikeCountBitwiseNode(is_bidirectional=True):
    x[..., n] -> (spikes[T, ..., n] in {-1, 0, 1}, vth[..., 1]); sum_t 2^(T-1-t) spikes[t] = round(x / vth)."""

    def __init__(self, width: int, k: float):
        super().__init__(coding_steps(width, k), "bitwise")
        self.k = k

    def integers(self, x: Tensor) -> tuple[Tensor, Tensor]:
        vth = (x.abs().mean(dim=-1, keepdim=True).to(wide(x.dtype)) / self.k).clamp(1e-5, 1e4)
        return rounded(x.to(vth.dtype) / vth), vth

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x_int, vth = self.integers(x)
        x_int = x_int.detach() if training(x_int) else x_int
        magnitude = torch.ops.edgespike.spike_encode(x_int.abs(), self.timesteps, "bitwise", False)
        return magnitude * torch.sign(x_int), vth  # sign-magnitude: the bits of |x|, negated where x < 0

    def fake_quant(self, x: Tensor, coded: bool) -> Tensor:
        """x_int * vth in x's dtype, through the spikes (coded) or directly: the same numbers. The
        gradient passes straight through the rounding (the coding's own STE, sum_t w_t^2, would blow up)."""
        if not coded:
            x_int, vth = self.integers(x)
            return (x_int * vth).to(x.dtype)
        spikes, vth = self(x)
        weights = self.step_weights.to(spikes.dtype).reshape((-1,) + (1,) * (spikes.dim() - 1))
        decoded = (weights * spikes).sum(dim=0)  # the integers back, exactly
        if training(x):
            x_int = self.integers(x)[0]
            decoded = decoded + (x_int - x_int.detach())
        return (decoded * vth).to(x.dtype)


def quantize_sym(x: Tensor, bits: int = 8) -> Tensor:
    """window_attention.py ``quantize_sym``: symmetric per row over the last dim."""
    q_max, q_min = (1 << (bits - 1)) - 1, -(1 << (bits - 1))
    scale = (x.abs().amax(dim=-1, keepdim=True).to(wide(x.dtype)) / q_max).clamp(1e-5, 1e4)
    return (torch.clamp(rounded(x.to(scale.dtype) / scale), q_min, q_max) * scale).to(x.dtype)


class GroupQuantizer(nn.Module):
    """quant_linear.py ``Quantizer``: W <- round(W / scales) * scales per group (rounding straight-through)."""

    def __init__(self, out_features: int, in_features: int, group: int):
        super().__init__()
        self.group = group
        self.register_buffer("scales", torch.ones(out_features, in_features // group, 1))

    def forward(self, weight: Tensor) -> Tensor:
        out_features, in_features = weight.shape
        grouped = weight.reshape(out_features, -1, self.group)
        scales = self.scales.to(grouped.dtype)
        quantized = torch.round(grouped / scales) * scales
        if training(grouped):
            quantized = grouped + (quantized - grouped).detach()
        return quantized.reshape(out_features, in_features)


class QuantLinear(TernaryLinear):
    """quant_linear.py ``QuantLinear``: dynamic spikes of the input, group-quantized weights, bias.
    ``spiked=False`` is down_proj as W8ASpike runs it: a plain linear of its raw weight."""

    def __init__(self, model: "SpikingBrainHF", in_features: int, out_features: int, bias: bool, spiked: bool = True):
        cfg = model.config
        super().__init__(in_features, out_features, bias=bias, mode="qat" if cfg.weights == "ternary" else "float")
        self.coded = cfg.spike_coded
        self.weight_quantizer = GroupQuantizer(out_features, in_features, cfg.w_group_size)
        if not self.weight.is_meta:  # streamed: edgespike.models.streaming calls it once the weight is filled
            self.init_from_weight()
        self.spikes = DynamicSpikes(in_features, cfg.spike_k) if spiked else None

    @torch.no_grad()
    def init_from_weight(self) -> None:
        """A fresh model's scales: int8 per group of the weight (a checkpoint brings its own)."""
        grouped = self.weight.reshape(self.out_features, -1, self.weight_quantizer.group)
        self.weight_quantizer.scales.copy_(grouped.abs().amax(dim=-1, keepdim=True).clamp_min(1e-8) / 127)

    def forward(self, x: Tensor) -> Tensor:
        if self.spikes is None:
            return super().forward(x)
        x = self.spikes.fake_quant(x, self.coded)
        if self.mode != "float":  # ternary QAT, or frozen to an exported weight format
            return super().forward(x)
        y = nn.functional.linear(x, self.weight_quantizer(self.weight.to(x.dtype)))
        return y if self.bias is None else y + self.bias


def make_linear(model: "SpikingBrainHF", in_features: int, out_features: int, bias: bool = False,
                spiked: bool = True) -> TernaryLinear:
    if model.config.w8aspike:
        return QuantLinear(model, in_features, out_features, bias, spiked)
    return model.linear(in_features, out_features, bias=bias)


def rotate_half(x: Tensor) -> Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class RotaryEmbedding(nn.Module):
    """window_attention.py ``RotaryEmbedding`` (inv_freq non-persistent, angles in fp32). The cos / sin of
    positions 0..max_seq_len-1 are tabulated once, in fp32 as upstream computes them per call (the same
    products, so the same values), and looked up: no cos / sin in an exported step."""

    def __init__(self, head_dim: int, theta: float, max_seq_len: int):
        super().__init__()
        inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        freqs = torch.arange(max_seq_len, dtype=torch.int64).float()[:, None] * inv_freq[None]  # [N, head_dim / 2]
        self.register_buffer("cos", freqs.cos(), persistent=False)
        self.register_buffer("sin", freqs.sin(), persistent=False)

    def forward(self, positions: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """positions[B, S] -> cos, sin [B, S, 1, head_dim] in ``dtype`` (emb = cat(freqs, freqs))."""
        cos = nn.functional.embedding(positions, self.cos).to(dtype)
        sin = nn.functional.embedding(positions, self.sin).to(dtype)
        return torch.cat((cos, cos), dim=-1)[:, :, None], torch.cat((sin, sin), dim=-1)[:, :, None]


class FlashAttention(nn.Module):
    """window_attention.py ``FlashAttention``: GQA softmax attention over a sliding window, RoPE."""

    def __init__(self, model: "SpikingBrainHF"):
        super().__init__()
        cfg = model.config
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.window, self.w8aspike, self.coded = cfg.sliding_window, cfg.w8aspike, cfg.spike_coded
        self.q_proj = make_linear(model, cfg.d_model, cfg.n_heads * self.head_dim, bias=True)
        self.k_proj = make_linear(model, cfg.d_model, cfg.n_kv_heads * self.head_dim, bias=True)
        self.v_proj = make_linear(model, cfg.d_model, cfg.n_kv_heads * self.head_dim, bias=True)
        self.o_proj = make_linear(model, cfg.n_heads * self.head_dim, cfg.d_model)
        self.rotary_emb = RotaryEmbedding(self.head_dim, cfg.rope_theta, cfg.max_seq_len)
        self.q_spikes = DynamicSpikes(self.head_dim, cfg.spike_k) if cfg.w8aspike else None

    def init_state(self, batch: int, like: Tensor) -> State:
        return empty_cache(batch, self.n_kv_heads, self.window, self.head_dim, like)

    def forward(self, x: Tensor, positions: Tensor, cache: State) -> tuple[Tensor, State]:
        batch, seq, _ = x.shape
        q = self.q_proj(x).view(batch, seq, self.n_heads, self.head_dim)
        k = self.k_proj(x).view(batch, seq, self.n_kv_heads, self.head_dim)
        v = self.v_proj(x).view(batch, seq, self.n_kv_heads, self.head_dim)
        cos, sin = self.rotary_emb(positions, v.dtype)
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        if self.w8aspike:  # W8ASpike: Q dynamic-spiked, K / V int8 per row (per token, not per cached window)
            q = self.q_spikes.fake_quant(q, self.coded)
            k, v = quantize_sym(k), quantize_sym(v)
        out, cache = windowed_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), cache, None)
        return self.o_proj(out.transpose(1, 2).reshape(batch, seq, -1)), cache


def chunked_gla(q: Tensor, k: Tensor, v: Tensor, gk: Tensor, state: Tensor, chunk: int) -> tuple[Tensor, Tensor]:
    """The GLA recurrence S_t = diag(exp gk_t) S_{t-1} + k_t^T v_t, o_t = q_t S_t, chunk by chunk.

    q [B, Hkv, G, S, dk] (scaled), k, gk [B, Hkv, S, dk], v [B, Hkv, S, dv], state [B, Hkv, dk, dv]
    -> (o [B, Hkv, G, S, dv], state). Within a chunk with b_t = sum_{s<=t} gk_s:
        o_t = (q_t * exp b_t) S_0 + sum_{s<=t} (q_t * exp(b_t - b_s)) . k_s  v_s
    every exponent <= 0 (no overflow however strong the decay)."""
    outputs = []
    seq = q.shape[3]

    def part(t: Tensor, dim: int, start: int) -> Tensor:  # whole when one chunk: no full slice (an alias)
        return t if seq <= chunk else t.narrow(dim, start, min(chunk, seq - start))

    for start in range(0, seq, chunk):
        qc, kc, vc = part(q, 3, start), part(k, 2, start), part(v, 2, start)
        b = part(gk, 2, start)
        b = b if b.shape[2] == 1 else torch.cumsum(b, dim=2)  # [B, Hkv, c, dk]; a decode step needs no cumsum
        size = b.shape[2]
        steps = torch.arange(size, device=q.device)
        causal = (steps[:, None] >= steps[None, :]).to(q.dtype)  # [c(t), c(s)]
        decay = torch.exp((b[:, :, :, None] - b[:, :, None]).clamp(max=0.0)) * causal[:, :, None]  # [B, Hkv, t, s, dk]
        keys = (kc[:, :, None] * decay).transpose(-1, -2)  # [B, Hkv, t, dk, s]
        scores = (qc.transpose(2, 3) @ keys).transpose(2, 3)  # [B, Hkv, G, t, s]; rank <= 5 throughout (Core ML)
        inter = (qc * torch.exp(b)[:, :, None]) @ state[:, :, None]  # [B, Hkv, G, c, dv]
        outputs.append(inter + scores @ vc[:, :, None])
        last = b[:, :, -1:]  # [B, Hkv, 1, dk]
        state = torch.exp(last).transpose(-1, -2) * state + (kc * torch.exp(last - b)).transpose(-1, -2) @ vc
    return (outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=3)), state  # one chunk: no cat (an alias Core ML lacks)


def logsigmoid(x: Tensor) -> Tensor:
    """log(sigmoid(x)), stable, from ops every target lowers (Core ML has no log_sigmoid)."""
    return torch.clamp(x, max=0.0) - torch.log(1.0 + torch.exp(-x.abs()))


class GatedLinearAttention(nn.Module):
    """gla_attention.py ``GatedLinearAttention`` (mode chunk, no short convolution)."""

    def __init__(self, model: "SpikingBrainHF"):
        super().__init__()
        cfg = model.config
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.normalizer, self.chunk = cfg.gate_logit_normalizer, cfg.gla_chunk
        kv_dim = cfg.n_kv_heads * self.head_dim
        self.q_proj = make_linear(model, cfg.d_model, cfg.d_model, bias=True)
        self.k_proj = make_linear(model, cfg.d_model, kv_dim, bias=True)
        self.v_proj = make_linear(model, cfg.d_model, kv_dim, bias=True)
        if cfg.w8aspike:  # W8ASpike: one full-rank QuantLinear
            self.gk_proj = make_linear(model, cfg.d_model, kv_dim, bias=True)
        else:
            self.gk_proj = nn.Sequential(
                model.linear(cfg.d_model, cfg.gate_low_rank_dim), model.linear(cfg.gate_low_rank_dim, kv_dim, bias=True)
            )
        self.o_proj = make_linear(model, cfg.d_model, cfg.d_model)
        self.g_norm = RMSNorm(self.head_dim, eps=cfg.norm_eps)

    def init_state(self, batch: int, like: Tensor) -> State:
        return {"S": like.new_zeros(batch, self.n_kv_heads, self.head_dim, self.head_dim)}

    def forward(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        batch, seq, _ = x.shape
        group = self.n_heads // self.n_kv_heads
        q = torch.relu(self.q_proj(x)).view(batch, seq, self.n_kv_heads, group, self.head_dim)
        k = torch.relu(self.k_proj(x)).view(batch, seq, self.n_kv_heads, self.head_dim)
        v = self.v_proj(x).view(batch, seq, self.n_kv_heads, self.head_dim)
        gk = logsigmoid(self.gk_proj(x).view(batch, seq, self.n_kv_heads, self.head_dim)) / self.normalizer
        q = q.permute(0, 2, 3, 1, 4) * self.head_dim**-0.5  # [B, Hkv, G, S, d]
        o, new_state = chunked_gla(q, k.transpose(1, 2), v.transpose(1, 2), gk.transpose(1, 2), state["S"], self.chunk)
        o = self.g_norm(o.permute(0, 3, 1, 2, 4)).reshape(batch, seq, -1)  # heads in order j * G + g
        return self.o_proj(o), {"S": new_state}


class GLU(nn.Module):
    def __init__(self, model: "SpikingBrainHF"):
        super().__init__()
        cfg = model.config
        self.gate_proj = make_linear(model, cfg.d_model, cfg.ffn_dim)
        self.up_proj = make_linear(model, cfg.d_model, cfg.ffn_dim)
        self.down_proj = make_linear(model, cfg.ffn_dim, cfg.d_model, spiked=False)  # W8ASpike bypasses it

    def forward(self, x: Tensor) -> Tensor:
        return self.down_proj(nn.functional.silu(self.gate_proj(x)) * self.up_proj(x))


class HybridBlock(nn.Module):
    def __init__(self, model: "SpikingBrainHF", layer: int):
        super().__init__()
        cfg = model.config
        self.is_swa = layer in cfg.attn_layers
        self.attn_norm = RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.attn = FlashAttention(model) if self.is_swa else GatedLinearAttention(model)
        self.mlp_norm = RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.mlp = GLU(model)

    def init_state(self, batch: int, like: Tensor) -> State:
        return prefixed("attn.", self.attn.init_state(batch, like))

    def forward(self, x: Tensor, positions: Tensor, state: State) -> tuple[Tensor, State]:
        h, attn_state = (
            self.attn(self.attn_norm(x), positions, sub_state(state, "attn."))
            if self.is_swa
            else self.attn(self.attn_norm(x), sub_state(state, "attn."))
        )
        x = x + h
        x = x + self.mlp(self.mlp_norm(x))
        return x, prefixed("attn.", attn_state)


class HybridModel(nn.Module):
    def __init__(self, model: "SpikingBrainHF"):
        super().__init__()
        cfg = model.config
        self.embeddings = nn.Embedding(cfg.vocab_size, cfg.d_model)
        nn.init.normal_(self.embeddings.weight, std=0.02)  # initializer_range
        self.layers = nn.ModuleList(HybridBlock(model, i) for i in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.d_model, eps=cfg.norm_eps)


class SpikingBrainHF(SpikingLM):
    config_class = SpikingBrainHFConfig
    positional = True

    def __init__(self, config: SpikingBrainHFConfig):
        super().__init__(config)
        self.model = HybridModel(self)
        self.lm_head = self.linear(config.d_model, config.vocab_size)  # untied, plain in W8ASpike too

    @property
    def layers(self) -> nn.ModuleList:
        return self.model.layers

    def forward(self, tokens: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        self.check_tokens(tokens)
        state = self.init_state(tokens.shape[0]) if state is None else state
        x, new_state = self.run_layers(self.model.embeddings(tokens), state, self.positions(tokens, state))
        return self.lm_head(self.model.norm(x)), new_state


SEVEN_B = dict(  # configuration_gla_swa.py defaults = W8ASpike/config.json
    vocab_size=152064, d_model=3584, n_layers=28, n_heads=28, n_kv_heads=4, ffn_dim=18944, sliding_window=4096,
    rope_theta=1e6, norm_eps=1e-6, max_seq_len=131072,
)
TINY = dict(vocab_size=256, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=128, sliding_window=6,
            max_seq_len=128, gla_chunk=8)

PRESETS = {
    "tiny": SpikingBrainHFConfig(**TINY, w8aspike=True, w_group_size=32),  # spiking, as the family's generic tests need; a GLA then a SWA layer
    "tiny-base": SpikingBrainHFConfig(**TINY),
    "spikingbrain-7b": SpikingBrainHFConfig(**SEVEN_B),  # V1-7B-base / sft layout
    "spikingbrain-7b-w8aspike": SpikingBrainHFConfig(**SEVEN_B, w8aspike=True),
}

register_family(
    SpikingBrainHF, PRESETS,
    summary="SpikingBrain-7B as published (BICLab): GLA + RoPE sliding-window attention, base or W8ASpike",
    origin=AS_PUBLISHED,
)
