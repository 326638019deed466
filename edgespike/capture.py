"""From a SpikingLM to one decode step as a static graph (DESIGN.md, "DecodeStep").

    decode_step(model, timesteps)   -> DecodeStep: tokens[B, S] (+ position[B]) -> logits[B, V] of the
                                       last token; the carried state lives in buffers that forward
                                       mutates in place; weights frozen in the chosen format (ternary
                                       or integer codes + scale, or floats: edgespike.quant.weights)
    frozen_model(model, ...)        -> the model frozen in a weight format: a copy, or a streamed
                                       (already frozen) model itself (``edgespike.models.streaming``)
    export_step(step)               -> torch.export ExportedProgram, the IR every exporter reads: the
                                       decode step at S = 1, or with ``tokens=C`` the prefill step
                                       that takes C prompt tokens in one call (a sequence equals its
                                       tokens fed one at a time: edgespike.models.base)

State names: the model's dotted names ("layers.0.kv.k") are the public ones (manifests,
ONNX ``state.<name>`` inputs); a buffer cannot hold a dot, so its buffer is ``state_`` + the
name with dots as "__". Core ML names its states after the buffers.

Every state starts at zero: Core ML's ``makeState()``, the ONNX sessions and the iOS app
zero-fill it, so a model whose ``init_state`` is not all zeros is refused here.

Positions: a model whose state holds ``position`` (the absolute position of the next token,
RoPE families) gets it as a second input, ``position`` int [B], on every target; the caller
counts tokens (0, 1, 2, ... from a reset) and the runtimes stop at the manifest's
``max_seq_len``. An input, not a state, because Core ML keeps states in fp16, where a
counter stops being exact past 2048. ALiBi families have no such input.
"""

from __future__ import annotations

import copy
import dataclasses
import gc
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from edgespike.errors import EdgespikeError
from edgespike.models.base import POSITION, SpikingLM
from edgespike.nn import LIF
from edgespike.quant.state import LO_SUFFIX
from edgespike.quant.weights import default_format, quantize_weights

MAX_TIMESTEPS = 64
PREFILL_TOKENS = 64  # a prefill entry's default length (onnx, executorch, eager): a prompt runs in chunks of it


@dataclass(frozen=True)
class StateSpec:
    name: str  # public dotted name
    buffer: str  # buffer name in the DecodeStep
    shape: tuple[int, ...]
    lo_buffer: str | None = None  # an fp16x2 state's low half (``split_states``), else None

    def to_dict(self) -> dict:
        return {"name": self.name, "buffer": self.buffer, "shape": list(self.shape),
                **({"lo_buffer": self.lo_buffer} if self.lo_buffer else {})}


def buffer_name(state_name: str) -> str:
    return "state_" + state_name.replace(".", "__")


class DecodeStep(nn.Module):
    """One token in, next-token logits out; every carried state a buffer mutated in place."""

    def __init__(self, model: SpikingLM, batch: int = 1, weights: str = "ternary"):
        super().__init__()
        self.model = model
        self.batch = batch
        self.weights = weights  # the format its linears are in (edgespike.quant.weights)
        initial = model.init_state(batch)
        nonzero = [name for name, value in initial.items() if value.any()]
        if nonzero:
            raise EdgespikeError(
                f"state {nonzero[0]!r} of {model.config.family} does not start at zero; runtimes zero-fill the carried "
                "state (Core ML makeState()), so init_state must return zeros (encode 'empty' differently)"
            )
        self.positional = POSITION in initial
        self.position = 0  # the next token's position, for ``advance``
        self.specs = [
            StateSpec(name, buffer_name(name), tuple(value.shape)) for name, value in initial.items() if name != POSITION
        ]
        # spike_rates: also return [B, P], per LIF call the fraction of neurons x timesteps that
        # fired for this token, graded spikes counted once (spike_populations() names the P calls)
        self.spike_rates = False
        # spike_outputs: also return each LIF call's spikes, in call order (validation follows them)
        self.spike_outputs = False
        for spec in self.specs:
            self.register_buffer(spec.buffer, initial[spec.name].clone())

    @torch.no_grad()
    def spike_populations(self) -> list[str]:
        """The module paths of the LIF calls ``spike_rates`` reports, in order (a dry run, the state
        restored after it: no copy of the weights)."""
        names, saved = [], {name: buffer.clone() for name, buffer in self.named_buffers() if name.startswith("state_")}
        hooks = [module.register_forward_hook(lambda _m, _i, _o, name=name: names.append(name))
                 for name, module in self.model.named_modules() if isinstance(module, LIF)]
        try:
            self(*self.example_inputs())
        finally:
            for hook in hooks:
                hook.remove()
            for name, value in saved.items():
                self.get_buffer(name).copy_(value)
        return names

    def example_inputs(self, token: int | list[int] = 0, position: int = 0) -> tuple[Tensor, ...]:
        """The forward inputs of one token or a list of them, the first at ``position``:
        (tokens[B, S],) or (tokens, position[B])."""
        ids = [token] if isinstance(token, int) else list(token)
        tokens = torch.tensor([ids] * self.batch, dtype=torch.long)
        return (tokens, torch.full((self.batch,), position, dtype=torch.long)) if self.positional else (tokens,)

    @torch.no_grad()
    def advance(self, token: int | list[int]) -> Tensor:
        """Run ``token`` (or a list of them, in one call) at this step's own position counter (eager
        sessions): the logits after the last, [B, V]."""
        logits = self(*self.example_inputs(token, self.position))
        self.position += 1 if isinstance(token, int) else len(token)
        return logits

    def split_states(self) -> None:
        """Carry every float state as an fp16x2 pair (``edgespike.quant.state``): the buffer holds
        hi = fp16(x), a second buffer lo = fp16(x - hi); the step reads hi + lo. For targets whose
        states are fp16 (Core ML), so the state keeps the trained dynamics."""
        for i, spec in enumerate(self.specs):
            buffer = getattr(self, spec.buffer)
            if buffer.is_floating_point() and spec.lo_buffer is None:
                self.specs[i] = dataclasses.replace(spec, lo_buffer=spec.buffer + LO_SUFFIX)
                self.register_buffer(spec.buffer + LO_SUFFIX, torch.zeros_like(buffer))

    def state(self) -> dict[str, Tensor]:
        return {
            spec.name: getattr(self, spec.buffer) + getattr(self, spec.lo_buffer) if spec.lo_buffer else getattr(self, spec.buffer)
            for spec in self.specs
        }

    @torch.no_grad()
    def reset(self) -> None:
        for spec in self.specs:
            getattr(self, spec.buffer).zero_()
            if spec.lo_buffer:
                getattr(self, spec.lo_buffer).zero_()
        self.position = 0

    def forward(self, tokens: Tensor, position: Tensor | None = None) -> Tensor | tuple[Tensor, ...]:
        rates: list[Tensor] = []  # [B] per LIF call
        spikes: list[Tensor] = []  # per LIF call, its spikes

        def record(_module, _inputs, out):
            if self.spike_rates:
                rates.append((out[0] != 0).to(out[0].dtype).transpose(0, 1).flatten(1).mean(dim=1))
            spikes.append(out[0])

        hooks = [module.register_forward_hook(record) for module in self.model.modules()
                 if (self.spike_rates or self.spike_outputs) and isinstance(module, LIF)]
        state = self.state()
        if self.positional:
            if position is None:
                raise EdgespikeError(f"{self.model.config.family}'s decode step takes the token's position as a second input")
            state[POSITION] = position
        try:
            logits, new_state = self.model(tokens, state)
        finally:
            for hook in hooks:
                hook.remove()
        for spec in self.specs:
            value = new_state[spec.name]
            if spec.lo_buffer:
                hi = value.to(torch.float16).to(value.dtype)
                getattr(self, spec.lo_buffer).copy_(value - hi)
                value = hi
            getattr(self, spec.buffer).copy_(value)
        outputs = (logits[:, -1],)  # [B, V]
        if self.spike_rates:
            outputs += (torch.stack(rates, dim=1),)  # [B, P]
        if self.spike_outputs:
            outputs += tuple(spikes)
        return outputs if len(outputs) > 1 else outputs[0]


def with_timesteps(model: SpikingLM, timesteps: int | None) -> SpikingLM:
    """A copy of ``model`` unrolled over ``timesteps`` (the same weights)."""
    if timesteps is None or timesteps == model.config.spike.timesteps:
        return copy.deepcopy(model)
    if not isinstance(timesteps, int) or not 1 <= timesteps <= MAX_TIMESTEPS:
        raise EdgespikeError(f"--timesteps must be an integer in [1, {MAX_TIMESTEPS}], got {timesteps}")
    return model.retimed(timesteps)


def decode_step(model: SpikingLM, timesteps: int | None = None, batch: int = 1, weights: str | None = None) -> DecodeStep:
    """The frozen decode step of ``model`` (``frozen_model``), its weights in format ``weights``
    (``edgespike.quant.weights``; None: ternary for ternary-trained models, else fp16)."""
    check_lowerable(model)
    frozen = frozen_model(model, timesteps, weights)
    return DecodeStep(frozen, batch, frozen.frozen_weights).eval()


def frozen_model(model: SpikingLM, timesteps: int | None = None, weights: str | None = None) -> SpikingLM:
    """``model`` unrolled over ``timesteps`` with its linears in format ``weights``: a frozen copy (``model``
    left untouched), or, for a model streamed frozen (``edgespike.models.streaming``), the model itself."""
    frozen_weights = getattr(model, "frozen_weights", None)
    weights = weights or frozen_weights or default_format(model.config)
    if frozen_weights is None:
        frozen = quantize_weights(with_timesteps(model, timesteps).float().eval(), weights)
        for parameter in frozen.parameters():
            parameter.requires_grad_(False)
        frozen.frozen_weights = weights
        return frozen
    if frozen_weights != weights or timesteps not in (None, model.config.spike.timesteps):
        raise EdgespikeError(
            f"this model was streamed frozen to {frozen_weights} weights at {model.config.spike.timesteps} timesteps; "
            f"load it again for {weights} weights at {timesteps or model.config.spike.timesteps} timesteps"
        )
    return model


def release_trace_caches() -> None:
    """Empty torch's fake-tensor dispatch cache: a class-level dict whose entries keep every program traced
    through it alive, constants and all, for the life of the process (with ExecuTorch's ``is_same_node``
    cache, 0.74 GB of the 1.04 GB an 8-layer d2048 pulse's lowering left behind)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    FakeTensorMode.cache_clear()
    gc.collect()  # fx graphs are reference cycles


def export_step(step: DecodeStep, tokens: int = 1) -> torch.export.ExportedProgram:
    """torch.export of the step at tokens[B, ``tokens``] (+ position[B]), under no_grad (ExecuTorch needs it)."""
    with torch.no_grad():
        return torch.export.export(step, step.example_inputs([0] * tokens), strict=False)


# Besides edgespike's own modules and users' own classes, the torch.nn layers every exporter lowers.
LOWERABLE = (
    nn.ModuleList, nn.ModuleDict, nn.Sequential, nn.Embedding, nn.Linear, nn.Identity, nn.LayerNorm, nn.RMSNorm,
    nn.Dropout, nn.ReLU, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.Softmax, nn.LeakyReLU, nn.Flatten,
)  # fmt: skip
LIBRARIES = ("torch", "snntorch")  # layers from these must be in LOWERABLE (or lowered to edgespike's)


def check_lowerable(model: nn.Module) -> None:
    """Fail early, naming the module, when ``model`` holds a library layer no exporter lowers.
    Classes of the user's own code pass: their forward is traced down to torch ops."""
    for path, module in model.named_modules():
        library = type(module).__module__.split(".")[0]
        if library not in LIBRARIES or isinstance(module, LOWERABLE):
            continue
        supported = ", ".join(t.__name__ for t in LOWERABLE)
        raise EdgespikeError(
            f"module {path!r} of type {type(module).__module__}.{type(module).__qualname__} cannot be lowered; "
            f"a decode step may hold edgespike modules (edgespike.nn, the model families, snntorch's Leaky, RLeaky, "
            f"Synaptic, RSynaptic), your own classes and torch.nn's {supported}"
        )
