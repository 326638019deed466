"""``nir_graph``: a language model around a spiking graph read from NIR (``edgespike import nir``).

    tokens -> embedding (a table [V, d], or one-hot with d = V) -> held for T timesteps as the
    input current -> the graph's nodes, a chain -> readout per token -> (optional linear head) -> logits

The chain's nodes (``NirGraphConfig.nodes``, in order):
    affine / linear   y = W x (+ b), a TernaryLinear (float for imported graphs)
    lif               snntorch's Leaky on ``edgespike::lif``: per-neuron beta and threshold
    cuba_lif          snntorch's Synaptic: syn[t] = clamp(alpha) * syn[t-1] + x[t], then the LIF law
                      on syn[t] as its current (per-neuron alpha, beta, threshold)
Each neuron node states its reset law (``reset``, ``delayed_reset``, ``strict``: ``edgespike.ops.lif``);
its membrane (and synaptic current) are carried across tokens, state ``nodes.{i}.mem`` / ``.syn``.

Readout of the last node's output y over a token's T steps: ``rate`` mean_t y[t], ``spikes`` y at
the token's last step, ``membrane`` the last neuron's membrane after the token (then the last node
must be a neuron). Tokens run one at a time (each layer-major over its T steps), so a sequence equals
its tokens fed one by one, membrane readout included.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from edgespike.config import RESETS, ConfigError, ModelConfig, SpikeConfig
from edgespike.models.base import SpikingLM, State
from edgespike.models.registry import register_family
from edgespike.nn import LIF, TernaryLinear

LINEAR_TYPES = ("affine", "linear")
NEURON_TYPES = ("lif", "cuba_lif")
EMBEDDINGS = ("table", "one-hot")
READOUTS = ("rate", "spikes", "membrane")
NODE_KEYS = {
    "affine": {"type", "name", "in_features", "out_features"},
    "linear": {"type", "name", "in_features", "out_features"},
    "lif": {"type", "name", "size", "reset", "delayed_reset", "strict"},
    "cuba_lif": {"type", "name", "size", "reset", "delayed_reset", "strict"},
}


def node_width(node: dict) -> tuple[int, int]:
    """(input width, output width) of a node spec."""
    if node["type"] in LINEAR_TYPES:
        return node["in_features"], node["out_features"]
    return node["size"], node["size"]


def _check_node(i: int, node) -> None:
    where = f"nodes[{i}]"
    if not isinstance(node, dict) or node.get("type") not in NODE_KEYS:
        raise ConfigError(f"{where} must be an object with type one of {sorted(NODE_KEYS)}, got {node!r}")
    keys = NODE_KEYS[node["type"]]
    if set(node) != keys:
        raise ConfigError(f"{where} ({node['type']}) must have exactly the keys {sorted(keys)}, got {sorted(node)}")
    for key in keys & {"in_features", "out_features", "size"}:
        if not isinstance(node[key], int) or node[key] <= 0:
            raise ConfigError(f"{where}.{key} must be a positive integer, got {node[key]!r}")
    if node["type"] in NEURON_TYPES:
        if node["reset"] not in RESETS:
            raise ConfigError(f"{where}.reset must be one of {RESETS}, got {node['reset']!r}")
        if node["type"] == "cuba_lif" and node["reset"] == "zero" and node["delayed_reset"]:
            raise ConfigError(f"{where}: cuba_lif with a delayed zero reset is not supported; use subtract, none, "
                              "or an immediate reset (delayed_reset false)")


@dataclass
class NirGraphConfig(ModelConfig):
    family = "nir_graph"
    embedding: str = "table"  # "table" (nn.Embedding [V, d_model]) or "one-hot" (d_model == vocab_size)
    nodes: list = field(default_factory=list)  # the chain, in order: node dicts (NODE_KEYS)
    readout: str = "rate"  # one of READOUTS
    head: bool = True  # a linear [V, out] from the readout to the logits; False: the readout is the logits
    dt: float = 1e-4  # seconds per timestep, NIR's continuous time (beta = 1 - dt / tau)

    def __post_init__(self):
        super().__post_init__()
        if self.embedding not in EMBEDDINGS:
            raise ConfigError(f"nir_graph: embedding must be one of {EMBEDDINGS}, got {self.embedding!r}")
        if self.readout not in READOUTS:
            raise ConfigError(f"nir_graph: readout must be one of {READOUTS}, got {self.readout!r}")
        if not isinstance(self.nodes, list) or not self.nodes:
            raise ConfigError("nir_graph: nodes must be a non-empty list of node objects")
        if not isinstance(self.dt, (int, float)) or isinstance(self.dt, bool) or self.dt <= 0:
            raise ConfigError(f"nir_graph: dt must be a positive number of seconds, got {self.dt!r}")
        if self.embedding == "one-hot" and self.d_model != self.vocab_size:
            raise ConfigError(f"nir_graph: a one-hot embedding needs d_model = vocab_size ({self.vocab_size}), got {self.d_model}")
        width = self.d_model
        for i, node in enumerate(self.nodes):
            _check_node(i, node)
            given, out = node_width(node)
            if given != width:
                raise ConfigError(f"nir_graph: nodes[{i}] ({node['name']}) takes {given} inputs but its input has {width}")
            width = out
        if self.n_layers != len(self.nodes):
            raise ConfigError(f"nir_graph: n_layers must equal the number of nodes ({len(self.nodes)}), got {self.n_layers}")
        if self.readout == "membrane" and self.nodes[-1]["type"] not in NEURON_TYPES:
            raise ConfigError("nir_graph: readout 'membrane' needs a neuron (lif / cuba_lif) as the last node")
        if not self.head and width != self.vocab_size:
            raise ConfigError(f"nir_graph: without a head the graph's output ({width}) must equal vocab_size ({self.vocab_size})")

    @property
    def out_features(self) -> int:
        return node_width(self.nodes[-1])[1]


def _spike(config: NirGraphConfig, node: dict) -> SpikeConfig:
    return SpikeConfig(timesteps=config.spike.timesteps, reset=node["reset"], delayed_reset=node["delayed_reset"], strict=node["strict"])


def _lif(config: NirGraphConfig, node: dict) -> LIF:
    """A LIF whose beta and threshold are per-neuron tensors in the state_dict (set by the importer)."""
    lif = LIF(_spike(config, node), persistent=True)
    lif.beta = torch.full((node["size"],), config.spike.beta)
    lif.threshold = torch.full((node["size"],), config.spike.threshold)
    return lif


class CubaLIF(nn.Module):
    """snntorch's Synaptic: syn[t] = clamp(alpha, 0, 1) * syn[t-1] + x[t] (elementwise, a loop over
    the T steps), then ``lif`` with syn as its current. forward(x[N, B, n], syn0, mem0) -> (spikes, syn_N, mem_N)."""

    def __init__(self, lif: LIF, size: int, alpha: float = 0.5):
        super().__init__()
        self.lif = lif
        self.register_buffer("alpha", torch.full((size,), alpha))

    def forward(self, x: Tensor, syn: Tensor, mem: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        alpha = self.alpha.to(x.dtype).clamp(0.0, 1.0)
        currents = []
        for t in range(x.shape[0]):
            syn = alpha * syn + x[t]
            currents.append(syn)
        spikes, mem = self.lif(torch.stack(currents), mem)
        return spikes, syn, mem


class NirGraphLM(SpikingLM):
    config_class = NirGraphConfig

    def __init__(self, config: NirGraphConfig):
        super().__init__(config)
        self.embed = nn.Embedding(config.vocab_size, config.d_model) if config.embedding == "table" else None
        if self.embed is not None:
            nn.init.normal_(self.embed.weight, std=config.d_model**-0.5)
        nodes = []
        for node in config.nodes:
            if node["type"] in LINEAR_TYPES:
                nodes.append(self.linear(node["in_features"], node["out_features"], bias=node["type"] == "affine"))
            elif node["type"] == "lif":
                nodes.append(_lif(config, node))
            else:
                nodes.append(CubaLIF(_lif(config, node), node["size"]))
        self.nodes = nn.ModuleList(nodes)
        self.head = self.linear(config.out_features, config.vocab_size) if config.head else None

    def init_state(self, batch: int) -> State:
        like, state = self.state_like(), {}
        for i, node in enumerate(self.config.nodes):
            if node["type"] == "cuba_lif":
                state[f"nodes.{i}.syn"] = like.new_zeros(batch, node["size"])
            if node["type"] in NEURON_TYPES:
                state[f"nodes.{i}.mem"] = like.new_zeros(batch, node["size"])
        return state

    def _token(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        """One token's input x[B, d] through the chain over T steps: (readout [B, out], new state)."""
        T = self.config.spike.timesteps
        y = x.unsqueeze(0).expand(T, *x.shape)  # [T, B, d], held for the T steps
        new_state: State = {}
        for i, module in enumerate(self.nodes):
            if isinstance(module, TernaryLinear):
                y = module(y)
            elif isinstance(module, CubaLIF):
                y, new_state[f"nodes.{i}.syn"], new_state[f"nodes.{i}.mem"] = module(y, state[f"nodes.{i}.syn"], state[f"nodes.{i}.mem"])
            else:
                y, new_state[f"nodes.{i}.mem"] = module(y, state[f"nodes.{i}.mem"])
        readout = self.config.readout
        if readout == "rate":
            return y.mean(dim=0), new_state
        if readout == "spikes":
            return y[-1], new_state
        return new_state[f"nodes.{len(self.nodes) - 1}.mem"], new_state

    def forward(self, tokens: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        self.check_tokens(tokens)
        state = self.init_state(tokens.shape[0]) if state is None else state
        if self.embed is not None:
            x = self.embed(tokens)  # [B, S, d]
        else:
            x = nn.functional.one_hot(tokens, self.config.vocab_size).to(self.state_like().dtype)
        outputs = []
        for s in range(tokens.shape[1]):
            out, state = self._token(x[:, s], state)
            outputs.append(out)
        y = torch.stack(outputs, dim=1)  # [B, S, out]
        return (self.head(y) if self.head is not None else y), state

    def state_like(self) -> Tensor:
        return next(t for t in self.state_dict().values() if t.is_floating_point())


def _law(**node) -> dict:
    return {"reset": "subtract", "delayed_reset": True, "strict": True, **node}


PRESETS = {
    "tiny": NirGraphConfig(
        vocab_size=64, d_model=32, n_layers=4, readout="membrane",
        spike=SpikeConfig(timesteps=4, beta=0.9, threshold=1.0, delayed_reset=True, strict=True),
        nodes=[
            {"type": "affine", "name": "fc1", "in_features": 32, "out_features": 48},
            _law(type="lif", name="lif1", size=48),
            {"type": "linear", "name": "fc2", "in_features": 48, "out_features": 32},
            _law(type="cuba_lif", name="syn2", size=32),
        ],
    ),
}

register_family(NirGraphLM, PRESETS, summary="a spiking graph imported from NIR (LIF / CubaLIF / Affine / Linear) between an embedding and a readout", origin="built from a NIR graph")
