"""Users' own spiking LMs: a plain PyTorch / snntorch ``nn.Module`` as a SpikingLM (family ``module``).

Two contracts (README, "Bring your own model"):

- **state** — SpikingLM's own: ``forward(tokens[B, S], state) -> (logits[B, S, V], state)`` and
  ``init_state(batch) -> dict[str, Tensor]`` of zeros. The module runs its own time loop; an int
  attribute ``num_steps`` makes it retimeable (``--timesteps`` sets it).
- **hidden** — snntorch-tutorial style: ``forward(token[B]) -> logits[B, V]`` with one token id per
  sequence, its snntorch neurons built with ``init_hidden=True`` keeping their own state. Each token
  runs the module ``timesteps`` times (the token held, direct encoding) and the logits are the mean
  over those steps. Every neuron's hidden state (``mem``; ``syn``, ``spk`` for Synaptic / RLeaky /
  RSynaptic) becomes decode state ``<neuron path>.<name>``, starting at zero as snntorch's reset does.

Lowering (a copy; the user's module is left alone): snntorch ``Leaky``, ``RLeaky``, ``Synaptic``,
``RSynaptic`` become ``edgespike.nn.neurons`` (their laws on ``edgespike::lif``), every ``nn.Linear``
a float ``TernaryLinear`` (so ``--weights`` picks its format), other layers stay and are traced.

``load_factory("model.py:build", checkpoint)`` imports the user's file and calls the factory: it runs
the user's code, which is their explicit choice. A checkpoint is safetensors or a state_dict read with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import importlib.util
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from edgespike.config import ConfigError, ModelConfig, SpikeConfig
from edgespike.errors import EdgespikeError
from edgespike.models.base import SpikingLM, State
from edgespike.models.registry import register_family
from edgespike.nn.neurons import Neuron, from_snntorch, is_snntorch
from edgespike.nn.ternary_linear import TernaryLinear

CONTRACTS = ("state", "hidden")
FACTORY_SPEC = re.compile(r"^(?P<file>.+\.py):(?P<factory>[A-Za-z_]\w*)(?:@(?P<checkpoint>.+))?$")


@dataclass
class ModuleConfig(ModelConfig):
    family = "module"
    factory: str = ""  # FILE.py:FACTORY, absolute ("" for a module given in Python)
    checkpoint: str = ""  # its weights, absolute ("" for the factory's own)
    contract: str = "hidden"  # one of CONTRACTS

    def __post_init__(self):
        super().__post_init__()
        if self.contract not in CONTRACTS:
            raise ConfigError(f"contract must be one of {CONTRACTS}, got {self.contract!r}")


class ModuleLM(SpikingLM):
    """A user's module under one of the two contracts, lowered onto edgespike's modules."""

    config_class = ModuleConfig

    def __init__(self, config: ModuleConfig, module: nn.Module | None = None):
        super().__init__(config)
        if module is None:
            if not config.factory:
                raise EdgespikeError("a 'module' model needs its factory (FILE.py:FACTORY) or the module itself")
            module = call_factory(config.factory, config.checkpoint or None)
        self.module = lower(module)
        self.contract = config.contract
        if self.contract == "state" and isinstance(getattr(self.module, "num_steps", None), int):
            self.module.num_steps = config.spike.timesteps
        self.hidden_shapes: dict[str, dict[str, tuple[int, ...]]] = {}  # neuron path -> state name -> shape without batch
        if self.contract == "hidden":
            self.hidden_shapes = self._probe_hidden()

    def neurons(self) -> dict[str, Neuron]:
        return {path: m for path, m in self.module.named_modules() if isinstance(m, Neuron)}

    def state_like(self) -> Tensor:
        return next(iter(self.parameters()), torch.zeros(()))

    @torch.no_grad()
    def _probe_hidden(self) -> dict[str, dict[str, tuple[int, ...]]]:
        """Run one token to learn which neurons keep hidden state, and its shapes."""
        neurons = self.neurons()
        for neuron in neurons.values():
            neuron.hidden = {}
        self.module(torch.zeros(1, dtype=torch.long, device=self.state_like().device))
        shapes = {path: {name: tuple(t.shape[1:]) for name, t in n.hidden.items()} for path, n in neurons.items() if n.hidden}
        for neuron in neurons.values():
            neuron.hidden = {}
        return shapes

    def init_state(self, batch: int) -> State:
        if self.contract == "state":
            state = self.module.init_state(batch)
            if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
                raise EdgespikeError("the module's init_state(batch) must return a dict of name -> Tensor")
            return state
        like = self.state_like()
        return {f"{path}.{name}": torch.zeros(batch, *shape, dtype=like.dtype, device=like.device)
                for path, shapes in self.hidden_shapes.items() for name, shape in shapes.items()}

    def forward(self, tokens: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        self.check_tokens(tokens)
        state = self.init_state(tokens.shape[0]) if state is None else state
        if self.contract == "state":
            logits, new_state = self.module(tokens, state)
            return check_logits(logits, tokens.shape[0], tokens.shape[1]), new_state
        neurons, steps = self.neurons(), []
        for s in range(tokens.shape[1]):
            outputs = []
            for _ in range(self.config.spike.timesteps):
                for path, shapes in self.hidden_shapes.items():
                    neurons[path].hidden = {name: state[f"{path}.{name}"] for name in shapes}
                outputs.append(check_logits(self.module(tokens[:, s]), tokens.shape[0]))
                state = {f"{path}.{name}": neurons[path].hidden[name] for path, shapes in self.hidden_shapes.items()
                         for name in shapes}
            steps.append(outputs[0] if len(outputs) == 1 else torch.stack(outputs).mean(dim=0))
        for neuron in neurons.values():
            neuron.hidden = {}
        return torch.stack(steps, dim=1), state

    def retimed(self, timesteps: int) -> "ModuleLM":
        if self.contract == "state" and not isinstance(getattr(self.module, "num_steps", None), int):
            raise EdgespikeError("this module runs its own time loop; give it an int attribute num_steps that the "
                                 "loop reads, so that --timesteps can set it")
        copied = copy.deepcopy(self)
        if self.contract == "state":
            copied.module.num_steps = timesteps
        copied.config = self.config.replace(spike=dataclasses.replace(self.config.spike, timesteps=timesteps))
        return copied


register_family(ModuleLM, {}, "your own nn.Module (snntorch or plain PyTorch): `edgespike export model.py:FACTORY`", origin="your own nn.Module")


def check_logits(logits, batch: int, seq: int | None = None) -> Tensor:
    expected = (batch, "V") if seq is None else (batch, seq, "V")
    if not isinstance(logits, Tensor) or logits.dim() != len(expected) or tuple(logits.shape[:-1]) != expected[:-1]:
        got = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise EdgespikeError(f"the module's forward must return logits of shape {expected}, got {got}")
    return logits


def lower(module: nn.Module) -> nn.Module:
    """A copy of ``module`` with its snntorch neurons as edgespike neurons and its nn.Linear layers
    as float TernaryLinear (same weights)."""
    if not isinstance(module, nn.Module):
        raise EdgespikeError(f"the factory must return a torch.nn.Module, got {type(module).__name__}")
    lowered, replaced = copy.deepcopy(module), []
    for path, child in list(lowered.named_modules()):
        if any(path.startswith(done + ".") for done in replaced):
            continue  # inside a neuron already lowered (RLeaky's recurrent connection)
        replacement = None
        if is_snntorch(child):
            replacement = from_snntorch(child, path)
        elif type(child) is nn.Linear:
            replacement = TernaryLinear(child.in_features, child.out_features, bias=child.bias is not None, mode="float")
            replacement.load_state_dict(child.state_dict())
        if replacement is not None:
            replaced.append(path)
            if not path:
                return replacement
            parent, _, name = path.rpartition(".")
            setattr(lowered.get_submodule(parent), name, replacement)
    return lowered


def from_module(module: nn.Module, tokenizer=None, timesteps: int | None = None) -> ModuleLM:
    """A SpikingLM of the user's ``module`` (contract "state" when it has ``init_state``, else
    "hidden"); every edgespike command and API takes it. ``timesteps``: steps per token."""
    return _build(module, tokenizer, timesteps, factory="", checkpoint="")


def _build(module: nn.Module, tokenizer, timesteps, factory: str, checkpoint: str) -> ModuleLM:
    contract = "state" if callable(getattr(module, "init_state", None)) else "hidden"
    if contract == "state" and timesteps is not None and not isinstance(getattr(module, "num_steps", None), int):
        raise EdgespikeError("timesteps applies to one-token (hidden-state) modules or modules with an int num_steps")
    steps = timesteps or (getattr(module, "num_steps", 1) if contract == "state" else 1)
    provisional = ModuleConfig(factory=factory, checkpoint=checkpoint, contract=contract, spike=SpikeConfig(timesteps=steps))
    model = ModuleLM(provisional, module)
    with torch.no_grad():
        logits, _ = model(torch.zeros(1, 1, dtype=torch.long))
    neurons = model.neurons()
    widths = [n.beta.numel() for n in neurons.values()] + [m.embedding_dim for m in model.modules() if isinstance(m, nn.Embedding)]
    trained_ternary = any(isinstance(m, TernaryLinear) and m.mode == "qat" for m in model.modules())
    model.config = provisional.replace(
        vocab_size=logits.shape[-1], d_model=max(widths + [1]), n_layers=max(len(neurons), 1),
        weights="ternary" if trained_ternary else "float",
    )
    model.tokenizer = tokenizer if tokenizer is not None else getattr(module, "tokenizer", None)
    return model.eval()


def is_factory_spec(spec: str) -> bool:
    return FACTORY_SPEC.match(spec) is not None


def factory_spec(spec: str, checkpoint: str | Path | None = None) -> str:
    """The canonical spec ``/abs/FILE.py:FACTORY[@/abs/CHECKPOINT]`` of a user's factory."""
    match = FACTORY_SPEC.match(spec)
    if match is None:
        raise EdgespikeError(f"{spec!r} is not FILE.py:FACTORY")
    checkpoint = checkpoint or match["checkpoint"]
    canonical = f"{Path(match['file']).resolve()}:{match['factory']}"
    return canonical + (f"@{Path(checkpoint).resolve()}" if checkpoint else "")


def load_factory(spec: str, timesteps: int | None = None) -> ModuleLM:
    """``FILE.py:FACTORY[@CHECKPOINT]`` -> the factory's module (with those weights) as a SpikingLM."""
    match = FACTORY_SPEC.match(factory_spec(spec))
    factory, checkpoint = f"{match['file']}:{match['factory']}", match["checkpoint"] or ""
    module = call_factory(factory, checkpoint or None)
    return _build(module, None, timesteps, factory=factory, checkpoint=checkpoint)


def call_factory(factory: str, checkpoint: str | None) -> nn.Module:
    """Import FILE.py (running it) and call FACTORY(); load ``checkpoint`` into the result."""
    file, _, name = factory.rpartition(":")
    path = Path(file)
    if not path.is_file():
        raise EdgespikeError(f"model file {file} does not exist; pass FILE.py:FACTORY with the path of your model file")
    module_name = "edgespike_user_" + hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
    loaded = sys.modules.get(module_name)
    if loaded is None:
        spec = importlib.util.spec_from_file_location(module_name, path)
        loaded = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = loaded
        sys.path.insert(0, str(path.parent.resolve()))  # its sibling modules import as they do for the user
        try:
            spec.loader.exec_module(loaded)
        except Exception as err:
            del sys.modules[module_name]
            raise EdgespikeError(f"{file} failed to import: {type(err).__name__}: {err}") from None
        finally:
            sys.path.remove(str(path.parent.resolve()))
    build = getattr(loaded, name, None)
    if build is None:
        callables = sorted(k for k, v in vars(loaded).items() if callable(v) and not k.startswith("_") and getattr(v, "__module__", "") == module_name)
        raise EdgespikeError(f"{file} has no {name!r}; its functions and classes: {', '.join(callables) or 'none'}")
    if not callable(build):
        raise EdgespikeError(f"{file}:{name} is a {type(build).__name__}, not callable; name a function returning the module")
    try:
        module = build()
    except Exception as err:
        raise EdgespikeError(f"{file}:{name}() raised {type(err).__name__}: {err}") from None
    if not isinstance(module, nn.Module):
        raise EdgespikeError(f"{file}:{name}() returned a {type(module).__name__}, not a torch.nn.Module")
    if checkpoint:
        load_checkpoint(module, Path(checkpoint))
    return module


def load_checkpoint(module: nn.Module, path: Path) -> None:
    """Weights into ``module`` from safetensors or a torch state_dict (weights_only: nothing unpickled)."""
    if not path.is_file():
        raise EdgespikeError(f"checkpoint {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            tensors = load_file(str(path))
        else:
            tensors = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # safetensors and torch.load raise many types on a bad file
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise EdgespikeError(f"checkpoint {path} is not readable as safetensors or a torch state_dict: {first}") from None
    if not isinstance(tensors, dict) or not all(isinstance(v, Tensor) for v in tensors.values()):
        raise EdgespikeError(f"checkpoint {path} must hold a state_dict (names -> tensors), e.g. torch.save(model.state_dict())")
    expected = module.state_dict()
    missing, unexpected = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise EdgespikeError(f"checkpoint {path} does not fit the module: missing {missing[:3]}, unexpected {unexpected[:3]}")
    for name, value in tensors.items():
        if value.shape != expected[name].shape:
            raise EdgespikeError(f"checkpoint {path}: {name!r} has shape {tuple(value.shape)}, the module {tuple(expected[name].shape)}")
    module.load_state_dict(tensors)
