"""``neurogen``: edgespike's design after the NeuroGen 2.0 write-up (seed 001), modular LIF populations wired
by sparse synapses. The published NeuroGen 2.0 (C++/CUDA: mV-scale LIF with adaptation, one step per token,
fixed random synapses, a voltage readout) has no trained checkpoint to load (PUBLISHED.md section 4).

Six populations of LIF neurons, named after the brain areas they stand for, pass spikes
along one pathway per token (T timesteps each):

    thalamus      <- token embedding (one input current per neuron)
    wernicke      <- thalamus
    hippocampus   <- wernicke, hippocampus (its own spikes of the previous step)
    pfc           <- wernicke, hippocampus, pfc (its own spikes of the previous step)
    basal_ganglia <- pfc, hippocampus
    broca         <- (wernicke + pfc) * sigmoid(basal_ganglia)      the basal ganglia gate
    logits         = readout(spike rate of broca)

A projection is sparse, in CSR form with a fixed fan-in: post neuron j reads K_j pre
neurons idx[j, :] with weights w[j, :],

    current[..., j] = sum_k w[j, k] * spikes[..., idx[j, k]]           (a gather, then a sum)

Choices where the seed is silent:
- Fan-in, not fan-out: the seed gives each neuron 48-96 outgoing synapses. With random
  wiring the mean fan-in equals the mean fan-out, and a fixed fan-in is a gather
  (index_select), which lowers to every export target; a fan-out form needs a scatter-add,
  which does not. Every post neuron has ``fan_in`` synapses in all, split evenly over its
  input projections (48 in ``neurogen-2.0``: 1.84M synapses, within the seed's 1.5-2.0M).
  The wiring is drawn once from a generator seeded with ``wiring_seed``, K distinct pre
  neurons per post neuron, and saved with the weights; building on the meta device draws
  nothing (meta tensors hold no values).
- Recurrence: hippocampus and PFC read their own spikes of the previous timestep, and their
  last spikes and membranes carry across tokens: that state is NeuroGen's memory. Only
  those two self-loops run step-major; every other projection sees all S*T steps at once
  (layer-major, DESIGN.md), since nothing else feeds back within a token.
- The pathway above (which area feeds which, the sigmoid gate) is ours; the seed names the
  areas and their roles (sensory gating, comprehension, episodic memory, executive control,
  action selection, production) but not their wiring.
- ``d_model`` is the thalamus size and the embedding width (the seed's "512-dim embedding
  x 2" thalamus, as one learned 1024-wide embedding). ``n_layers`` is fixed at 6, the
  number of populations, which is also the longest path through them.
- The readout is a TernaryLinear from Broca's rates to the vocabulary; synapse weights stay
  float (sparse, 0.3% of the parameters). The seed's parameter figures (~130M: embedding
  103M, projection 25M or "128 MB") do not follow from its module table; ours do: with
  GPT-2's 50,257 tokens the readout from 10,240 Broca neurons alone is 515M.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from edgespike.config import ConfigError, ModelConfig, SpikeConfig
from edgespike.models.base import SpikingLM, State, prefixed, sub_state
from edgespike.models.registry import after_seed, register_family
from edgespike.nn import LIF, mean_over_time, repeat_over_time

# (population, inputs, gate): current = sum over inputs of W s, times sigmoid(W_gate s_gate).
# An input naming the population itself is its recurrent loop (spikes of the previous step).
PATHWAY = (
    ("wernicke", ("thalamus",), None),
    ("hippocampus", ("wernicke", "hippocampus"), None),
    ("pfc", ("wernicke", "hippocampus", "pfc"), None),
    ("basal_ganglia", ("pfc", "hippocampus"), None),
    ("broca", ("wernicke", "pfc"), "basal_ganglia"),
)
POPULATIONS = ("thalamus",) + tuple(name for name, _, _ in PATHWAY)
ASSUMED_RATE = 0.25  # presynaptic firing rate the synapse initialisation is scaled for
WIRING_CHUNK = 1024  # post neurons per draw when wiring (bounds the [chunk, N_pre] scratch)


@dataclass
class NeuroGenConfig(ModelConfig):
    family = "neurogen"
    n_layers: int = 6  # populations along the pathway; must be 6
    wernicke: int = 256  # neurons per population (thalamus: d_model)
    hippocampus: int = 128
    pfc: int = 256
    basal_ganglia: int = 64
    broca: int = 256
    fan_in: int = 16  # K, synapses per post neuron, split evenly over its input projections
    wiring_seed: int = 0  # seeds the fixed random wiring

    def __post_init__(self):
        super().__post_init__()
        if self.n_layers != len(POPULATIONS):
            raise ConfigError(f"neurogen: n_layers is the number of populations, {len(POPULATIONS)}; got {self.n_layers}")
        for name in POPULATIONS[1:] + ("fan_in",):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ConfigError(f"neurogen: {name} must be a positive integer, got {value!r}")
        for post, sources in self.projections().items():
            for pre, k in sources.items():
                if not 1 <= k <= self.size(pre):
                    most = len(sources) * min(self.size(p) for p in sources)
                    raise ConfigError(
                        f"neurogen: {post} would draw {k} of its fan_in={self.fan_in} synapses from {pre} "
                        f"({self.size(pre)} neurons); choose fan_in between {len(sources)} and {most}"
                    )

    def size(self, population: str) -> int:
        return self.d_model if population == "thalamus" else getattr(self, population)

    def projections(self) -> dict[str, dict[str, int]]:
        """{post: {pre: K_pre}}: each post population's fan-in, split evenly over its inputs."""
        split = {}
        for post, inputs, gate in PATHWAY:
            sources = inputs + ((gate,) if gate else ())
            share, extra = divmod(self.fan_in, len(sources))
            split[post] = {pre: share + (i < extra) for i, pre in enumerate(sources)}
        return split


def draw_fan_in(n_pre: int, n_post: int, k: int, generator: torch.Generator) -> Tensor:
    """[n_post, k] int64: k distinct pre neurons per post neuron, uniform, sorted (CPU)."""
    rows = [
        torch.rand(min(WIRING_CHUNK, n_post - start), n_pre, generator=generator, device="cpu").topk(k, dim=1).indices
        for start in range(0, n_post, WIRING_CHUNK)
    ]
    return torch.cat(rows).sort(dim=1).values


class Synapses(nn.Module):
    """A sparse projection with fixed fan-in: spikes[..., N_pre] -> current[..., N_post],
    current[..., j] = sum_k weight[j, k] * spikes[..., idx[j, k]]."""

    def __init__(self, n_pre: int, n_post: int, k: int, std: float, generator: torch.Generator):
        super().__init__()
        idx = torch.empty(n_post, k, dtype=torch.long)  # [N_post, K] on the default device
        if idx.device.type != "meta":  # a meta build draws no wiring: its tensors hold no values
            idx.copy_(draw_fan_in(n_pre, n_post, k, generator))
        self.register_buffer("idx", idx)
        self.weight = nn.Parameter(torch.randn(n_post, k) * std)  # [N_post, K]

    def extra_repr(self) -> str:
        return f"fan_in={self.idx.shape[1]}, n_post={self.idx.shape[0]}"

    def forward(self, spikes: Tensor) -> Tensor:
        n_post, k = self.idx.shape
        gathered = spikes.index_select(-1, self.idx.flatten())  # [..., N_post * K]
        return (gathered.unflatten(-1, (n_post, k)) * self.weight).sum(-1)  # [..., N_post]


class Population(nn.Module):
    """LIF neurons fed by sparse projections; ``forward(spikes, state)`` reads the spikes
    [S*T, B, n_pre] of the populations before it and returns its own [S*T, B, n].

        I[t] = sum_inputs W s_pre[t]  (* sigmoid(W_gate s_gate[t]))  (+ W_self s_self[t-1])

    Without a self-input one LIF call covers all S*T steps; with one, the loop runs a step
    at a time and the last spikes join the membrane in the state."""

    def __init__(self, name: str, inputs: tuple[str, ...], gate: str | None, config: NeuroGenConfig, generator):
        super().__init__()
        self.name, self.gate = name, gate
        self.inputs = tuple(pre for pre in inputs if pre != name)
        self.recurrent = name in inputs
        self.size = config.size(name)
        std = 1.0 / math.sqrt(ASSUMED_RATE * config.fan_in)  # the summed current starts at unit std
        self.synapses = nn.ModuleDict(
            {pre: Synapses(config.size(pre), self.size, k, std, generator) for pre, k in config.projections()[name].items()}
        )
        self.lif = LIF(config.spike)

    def init_state(self, batch: int, like: Tensor) -> State:
        state = {"v": like.new_zeros(batch, self.size)}
        return {**state, "s": like.new_zeros(batch, self.size)} if self.recurrent else state

    def forward(self, spikes: dict[str, Tensor], state: State) -> tuple[Tensor, State]:
        currents = [self.synapses[pre](spikes[pre]) for pre in self.inputs]
        current = sum(currents[1:], currents[0])  # [S*T, B, n]
        if self.gate:
            current = current * torch.sigmoid(self.synapses[self.gate](spikes[self.gate]))
        if not self.recurrent:
            out, v = self.lif(current, state["v"])
            return out, {"v": v}
        loop, v, last = self.synapses[self.name], state["v"], state["s"]
        steps = []
        for t in range(current.shape[0]):
            step, v = self.lif((current[t] + loop(last)).unsqueeze(0), v)  # [1, B, n]
            last = step[0]
            steps.append(step)
        return torch.cat(steps), {"v": v, "s": last}


class NeuroGen(SpikingLM):
    config_class = NeuroGenConfig

    def __init__(self, config: NeuroGenConfig):
        super().__init__(config)
        self.timesteps = config.spike.timesteps
        self.embed = nn.Embedding(config.vocab_size, config.d_model)  # the thalamus input current
        self.thalamus = LIF(config.spike)
        generator = torch.Generator().manual_seed(config.wiring_seed)
        self.populations = nn.ModuleDict(
            {name: Population(name, inputs, gate, config, generator) for name, inputs, gate in PATHWAY}
        )
        self.readout = self.linear(config.broca, config.vocab_size)

    def num_synapses(self) -> int:
        return sum(m.idx.numel() for m in self.modules() if isinstance(m, Synapses))

    def init_state(self, batch: int) -> State:
        like = self.state_like()
        state = {"thalamus.v": like.new_zeros(batch, self.config.d_model)}
        for name, population in self.populations.items():
            state.update(prefixed(f"{name}.", population.init_state(batch, like)))
        return state

    def forward(self, tokens: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        self.check_tokens(tokens)
        state = self.init_state(tokens.shape[0]) if state is None else state
        current = repeat_over_time(self.embed(tokens), self.timesteps)  # [S*T, B, d]
        spikes: dict[str, Tensor] = {}
        spikes["thalamus"], v = self.thalamus(current, state["thalamus.v"])
        new_state = {"thalamus.v": v}
        for name, population in self.populations.items():
            spikes[name], population_state = population(spikes, sub_state(state, f"{name}."))  # [S*T, B, n]
            new_state.update(prefixed(f"{name}.", population_state))
        rates = mean_over_time(spikes["broca"], self.timesteps)  # [B, S, n_broca]
        return self.readout(rates), new_state


PRESETS = {
    "tiny": NeuroGenConfig(
        vocab_size=256, d_model=64, wernicke=128, hippocampus=64, pfc=128, basal_ganglia=32, broca=128,
        fan_in=12,  # below the seed's 48-96: tiny populations of 32-128 neurons
    ),
    "neurogen-2.0": NeuroGenConfig(  # the seed's module table, GPT-2 vocabulary
        vocab_size=50257, d_model=1024, wernicke=10240, hippocampus=5120, pfc=10240, basal_ganglia=2560, broca=10240,
        fan_in=48, spike=SpikeConfig(timesteps=4),
    ),
}

register_family(NeuroGen, PRESETS, summary="NeuroGen 2.0: six LIF brain-area populations, sparse fan-in synapses, recurrent PFC/hippocampus", origin=after_seed("001"))
