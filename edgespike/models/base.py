"""The SpikingLM contract every family implements (DESIGN.md, "Contracts").

    forward(tokens[B, S], state=None) -> (logits[B, S, V], state)
    init_state(batch) -> dict[str, Tensor] with fixed shapes

Training runs whole sequences from ``init_state``; decode runs S = 1 and carries the state.
Both go through the same code, so a sequence equals its tokens fed one at a time.
State names are dotted paths ("layers.0.attn.k"), built with ``prefixed``/``sub_state``.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch
from torch import Tensor, nn

from edgespike.config import ModelConfig
from edgespike.errors import EdgespikeError
from edgespike.nn.ternary_linear import TernaryLinear

State = dict[str, Tensor]
POSITION = "position"  # the state entry of a positional model: each sequence's next absolute position


def prefixed(prefix: str, state: State) -> State:
    return {f"{prefix}{name}": value for name, value in state.items()}


def sub_state(state: State, prefix: str) -> State:
    return {name[len(prefix) :]: value for name, value in state.items() if name.startswith(prefix)}


class SpikingLM(nn.Module):
    """Base class: holds the config and the tokenizer, and switches TernaryLinear modes."""

    config_class: ClassVar[type[ModelConfig]]
    positional: ClassVar[bool] = False  # its state holds each sequence's next absolute position (RoPE)

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.tokenizer = None  # a tokenizers.Tokenizer once trained or loaded

    @property
    def family(self) -> str:
        return self.config.family

    def linear(self, in_features: int, out_features: int, bias: bool = False) -> TernaryLinear:
        """A TernaryLinear in this model's weight mode ("float" or "qat")."""
        mode = "qat" if self.config.weights == "ternary" else "float"
        return TernaryLinear(in_features, out_features, bias=bias, mode=mode)

    def set_weights(self, weights: str) -> None:
        """Switch every TernaryLinear between float and ternary (QAT) weights."""
        for module in self.modules():
            if isinstance(module, TernaryLinear):
                module.set_mode("qat" if weights == "ternary" else "float")
        self.config = self.config.replace(weights=weights)

    def retimed(self, timesteps: int) -> "SpikingLM":
        """A copy unrolled over ``timesteps``: rebuilt from the config, the same weights."""
        from edgespike.models.registry import build

        config = self.config.replace(spike=dataclasses.replace(self.config.spike, timesteps=timesteps))
        rebuilt = build(config)
        rebuilt.load_state_dict(self.state_dict())
        rebuilt.tokenizer = self.tokenizer
        return rebuilt

    def num_parameters(self) -> int:
        """Parameters, a frozen linear's integer codes counted as its weight."""
        codes = sum(buffer.numel() for name, buffer in self.named_buffers() if name.rsplit(".", 1)[-1] == "codes")
        return sum(p.numel() for p in self.parameters()) + codes

    def state_like(self) -> Tensor:
        """A tensor whose dtype and device the state takes (meta included)."""
        return next(self.parameters())

    def layer_states(self, batch: int) -> State:
        """The initial state of every block in ``self.layers``, named "layers.{i}.<name>"."""
        like = self.state_like()
        return {
            name: value
            for i, layer in enumerate(self.layers)
            for name, value in prefixed(f"layers.{i}.", layer.init_state(batch, like)).items()
        }

    def run_layers(self, x: Tensor, state: State, *inputs: Tensor) -> tuple[Tensor, State]:
        """x through every block of ``self.layers``, each with ``inputs`` (e.g. the positions) and
        its slice of the state; a positional model's position advances by the tokens in x."""
        new_state: State = {POSITION: state[POSITION] + x.shape[1]} if self.positional else {}
        for i, layer in enumerate(self.layers):
            x, layer_state = layer(x, *inputs, sub_state(state, f"layers.{i}."))
            new_state.update(prefixed(f"layers.{i}.", layer_state))
        return x, new_state

    def init_state(self, batch: int) -> State:
        """The state of a fresh sequence; by default, that of the blocks in ``self.layers``
        (and position 0, for a positional model)."""
        if not self.positional:
            return self.layer_states(batch)
        return {POSITION: torch.zeros(batch, dtype=torch.long, device=self.state_like().device), **self.layer_states(batch)}

    def forward(self, tokens: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        raise NotImplementedError

    def positions(self, tokens: Tensor, state: State) -> Tensor:
        """[B, S]: the absolute positions of ``tokens`` in a positional model (state ``position``),
        checked against ``config.max_seq_len`` where the values are known (not while exporting)."""
        positions = state[POSITION][:, None] + torch.arange(tokens.shape[1], device=tokens.device)[None]
        limit = self.config.max_seq_len
        if not (torch.compiler.is_exporting() or positions.is_meta) and int(positions.max()) >= limit:
            raise EdgespikeError(
                f"position {int(positions.max())} is past the model's max_seq_len {limit}; "
                "start a new sequence (reset the state) or use a shorter prompt"
            )
        return positions

    def check_tokens(self, tokens: Tensor) -> None:
        if tokens.dim() != 2:
            raise ValueError(f"tokens must be [batch, seq], got shape {tuple(tokens.shape)}")


@torch.no_grad()
def spike_rates(model: nn.Module, tokens: Tensor) -> dict[str, float]:
    """Mean firing rate of every spiking module (LIF, SpikeEncoder) over one forward."""
    from edgespike.nn.spiking import LIF, SpikeEncoder

    rates: dict[str, list[float]] = {}

    def hook(name):
        def record(module, inputs, output):
            rates.setdefault(name, []).append(output[0].abs().float().mean().item())

        return record

    handles = [
        module.register_forward_hook(hook(name))
        for name, module in model.named_modules()
        if isinstance(module, (LIF, SpikeEncoder))
    ]
    try:
        model(tokens)
    finally:
        for handle in handles:
            handle.remove()
    return {name: sum(values) / len(values) for name, values in rates.items()}
