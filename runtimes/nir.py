"""NIR: an executor of the NIR node equations, written from the NIR spec (not edgespike's ops), in
float64 torch, for the graphs edgespike writes and imports (``edgespike.nir_io`` states the laws):

    LIF      v <- v + dt/tau (v_leak - v + r I); spike s = H(v - v_threshold); reset per the node's law
    CubaLIF  I_syn <- I_syn + dt/tau_syn (-I_syn + w_in x), then the LIF equation on I_syn (tau_mem)
    Affine   W x + b;  Linear  W x;  several edges into one node add

A delayed reset (snntorch's) is read from the membrane before the step: v loses v_threshold
("subtract") or is zeroed ("zero") when it was above threshold; an immediate reset acts on the spike
of the step itself. The reset law of a node comes from its metadata (edgespike writes it).

Sessions: a *runnable* artifact (a ``nir_graph`` model) runs alone: host.safetensors' embedding,
T steps of the graph per token (the token's input held), the manifest's readout, the head. Any other
artifact runs its host work in eager PyTorch (the family built from the manifest's config, its tensors
from host.safetensors) with every LIF and linear of the graph computed by this executor from ``model.nir``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from edgespike.errors import EdgespikeError
from edgespike.nir_io import LAWS, node_law, read_graph
from edgespike.runtimes.registry import check_token, register_runtime

NEURONS = ("LIF", "CubaLIF")


def _t(value) -> torch.Tensor:
    return torch.as_tensor(np.asarray(value, np.float64))


class Neuron:
    """One LIF / CubaLIF node's parameters, law and equations; ``step`` advances one dt."""

    def __init__(self, name: str, node, dt: float):
        self.kind, self.dt = type(node).__name__, dt
        self.law = node_law(name, node, LAWS["nir"])
        self.tau = _t(node.tau if self.kind == "LIF" else node.tau_mem)
        self.r, self.v_leak, self.thr = _t(node.r), _t(node.v_leak), _t(node.v_threshold)
        self.v_reset = _t(node.v_reset) if node.v_reset is not None else torch.zeros_like(self.thr)
        if self.kind == "CubaLIF":
            self.tau_syn, self.w_in = _t(node.tau_syn), _t(node.w_in)

    def fired(self, v: torch.Tensor) -> torch.Tensor:
        return ((v > self.thr) if self.law["strict"] else (v >= self.thr)).to(v.dtype)

    def step(self, x: torch.Tensor, v: torch.Tensor, syn: torch.Tensor | None) -> tuple:
        """(spikes, v, syn) after one dt with input x."""
        current = x
        if self.kind == "CubaLIF":
            syn = syn + self.dt / self.tau_syn * (-syn + self.w_in * x)
            current = syn
        law, late = self.law, None
        if law["delayed_reset"] and law["reset"] != "none":
            late = self.fired(v)
            if law["reset"] == "zero":
                v = v * (1 - late)
        v = v + self.dt / self.tau * (self.v_leak - v + self.r * current)
        if late is not None and law["reset"] == "subtract":
            v = v - late * self.thr
        spikes = self.fired(v)
        if not law["delayed_reset"]:
            if law["reset"] == "subtract":
                v = v - spikes * self.thr
            elif law["reset"] == "zero":
                v = torch.where(spikes.bool(), self.v_reset, v)
        return spikes, v, syn

    def run(self, current: torch.Tensor, v: torch.Tensor, syn: torch.Tensor | None = None) -> tuple:
        """current[N, B, n] over N steps from v (and syn): (spikes[N, B, n], v, syn)."""
        spikes = []
        for t in range(current.shape[0]):
            s, v, syn = self.step(current[t], v, syn)
            spikes.append(s)
        return torch.stack(spikes), v, syn


def _linear(node):
    # the weight as stored (float32 from edgespike), widened per call: float64 copies of a 1B graph's
    # weights would be 8 GB beside the graph's own 4 GB
    weight = torch.from_numpy(np.asarray(node.weight))
    bias = _t(node.bias) if type(node).__name__ == "Affine" else None
    return lambda x: x.double() @ weight.T.double() + (0 if bias is None else bias)


class GraphExecutor:
    """A NIR graph's nodes in topological order, the neurons' state carried between ``step`` calls."""

    def __init__(self, graph, dt: float):
        self.graph = graph
        self.inputs, self.outputs = list(graph.inputs), list(graph.outputs)
        self.before = {name: [a for a, b in graph.edges if b == name] for name in graph.nodes}
        self.order = _topological(graph)
        self.neurons = {n: Neuron(n, graph.nodes[n], dt) for n in self.order if type(graph.nodes[n]).__name__ in NEURONS}
        self.linears = {n: _linear(graph.nodes[n]) for n in self.order if type(graph.nodes[n]).__name__ in ("Affine", "Linear")}
        self.reset()

    def reset(self) -> None:
        self.v = {n: torch.zeros_like(neuron.thr) for n, neuron in self.neurons.items()}
        self.syn = {n: torch.zeros_like(neuron.thr) for n, neuron in self.neurons.items() if neuron.kind == "CubaLIF"}

    def step(self, inputs: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """One dt: ({output name: value}, {neuron name: spikes})."""
        values, spikes = dict(inputs), {}
        for name in self.order:
            x = sum(values[a] for a in self.before[name])
            if name in self.neurons:
                values[name], self.v[name], syn = self.neurons[name].step(x, self.v[name], self.syn.get(name))
                if syn is not None:
                    self.syn[name] = syn
                spikes[name] = values[name]
            elif name in self.linears:
                values[name] = self.linears[name](x)
            else:
                values[name] = x  # an Output
        return {name: values[name] for name in self.outputs}, spikes


def _topological(graph) -> list[str]:
    pending = {name: {a for a, b in graph.edges if b == name} for name in graph.nodes if name not in graph.inputs}
    done, order = set(graph.inputs), []
    while pending:
        ready = [name for name, needs in pending.items() if needs <= done]
        if not ready:
            raise EdgespikeError(f"the NIR graph has a cycle through {sorted(pending)}; the NIR runtime runs acyclic graphs")
        for name in ready:
            order.append(name)
            done.add(name)
            del pending[name]
    return order


class NirSession:
    """A runnable NIR artifact: embedding -> T graph steps per token -> readout -> head, batch 1."""

    def __init__(self, directory: Path, manifest: dict):
        self.manifest, config = manifest, manifest["config"]
        self.graph = read_graph(directory / manifest["model_file"])
        self.executor = GraphExecutor(self.graph, float(manifest["dt"]))
        host = load_file(str(directory / manifest["host_weights"]))
        self.embed = host["embed.weight"].double() if "embed.weight" in host else None
        self.head = host["head.weight"].double() if "head.weight" in host else None
        self.timesteps, self.readout, self.vocab = manifest["timesteps"], config["readout"], config["vocab_size"]
        self.input, self.output = self.executor.inputs[0], self.executor.outputs[0]
        self.last_neuron = [n for n in self.executor.order if n in self.executor.neurons][-1]
        self.runtime = f"NIR executor (torch {torch.__version__} float64)"
        self.last_spikes: list[np.ndarray] = []

    def reset(self) -> None:
        self.executor.reset()

    def set_state(self, values: dict[str, np.ndarray]) -> None:
        """Overwrite the neurons' state from a ``nir_graph`` model's (``nodes.{i}.mem`` / ``.syn``, batch 1)."""
        for i, node in enumerate(self.manifest["config"]["nodes"]):
            for key, held in (("mem", self.executor.v), ("syn", self.executor.syn)):
                if f"nodes.{i}.{key}" in values:
                    held[node["name"]] = _t(values[f"nodes.{i}.{key}"]).reshape(held[node["name"]].shape)

    @torch.no_grad()
    def step(self, token: int) -> np.ndarray:
        check_token(token, self.vocab)
        x = self.embed[token] if self.embed is not None else torch.nn.functional.one_hot(torch.tensor(token), self.vocab).double()
        outputs, spikes = [], {}
        for _ in range(self.timesteps):
            out, fired = self.executor.step({self.input: x})
            outputs.append(out[self.output])
            for name, s in fired.items():
                spikes.setdefault(name, []).append(s)
        self.last_spikes = [torch.stack(s)[:, None].float().numpy() for s in spikes.values()]  # [T, 1, n] per neuron, in order
        y = {"rate": lambda: torch.stack(outputs).mean(0), "spikes": lambda: outputs[-1],
             "membrane": lambda: self.executor.v[self.last_neuron]}[self.readout]()
        logits = self.head @ y if self.head is not None else y
        return logits.float().numpy()


class HostLoopSession:
    """A graph that is not runnable alone: the host work in eager PyTorch (the family built from the
    manifest's config, its tensors from host.safetensors) with every LIF and linear of the graph
    computed by the executor from ``model.nir``."""

    def __init__(self, directory: Path, manifest: dict):
        from edgespike.capture import decode_step
        from edgespike.models.registry import get_family
        from edgespike.models.streaming import frozen_skeleton

        self.manifest = manifest
        graph = read_graph(directory / manifest["model_file"])
        config = get_family(manifest["family"]).model_class.config_class.from_dict(manifest["config"])
        # the frozen model's large tensors stay on the meta device until host.safetensors gives them values;
        # the graph's linears keep none (the executor computes them), so the model never exists in fp32
        model, dt, host_path = frozen_skeleton(config, manifest["weights"]), float(manifest["dt"]), directory / manifest["host_weights"]
        _, unexpected = model.load_state_dict(load_file(str(host_path)), strict=False, assign=True)
        if unexpected:
            raise EdgespikeError(f"{host_path} holds tensors the {manifest['family']} config "
                                 f"does not use, e.g. {unexpected[:3]}; re-export the artifact")
        missing = [name for name, tensor in [*model.named_parameters(), *model.named_buffers()]
                   if tensor.is_meta and name.rsplit(".", 1)[0] not in graph.nodes]
        if missing:
            raise EdgespikeError(f"{host_path} lacks tensors the host work needs, e.g. {missing[:3]}; re-export the artifact")
        self.step_module = decode_step(model, manifest["timesteps"], weights=manifest["weights"])
        self.last_spikes: list[np.ndarray] = []
        populations, patched = len(self.step_module.spike_populations()), 0
        for name, node in graph.nodes.items():
            kind = type(node).__name__
            if kind in NEURONS:
                model.get_submodule(name).forward = self._neuron(Neuron(name, node, dt))
                patched += 1
            elif kind in ("Affine", "Linear"):
                linear = _linear(node)
                model.get_submodule(name).forward = lambda x, linear=linear: linear(x).to(x.dtype)
        # spikes are compared (validation's flip rate) only when every LIF call is a graph node
        self.expose_spikes = patched == populations
        self.runtime = f"NIR executor (torch {torch.__version__} float64) + host work in PyTorch eager"

    def _neuron(self, neuron: Neuron):
        def forward(current: torch.Tensor, v0: torch.Tensor, *_):
            spikes, v, _ = neuron.run(current.double(), v0.double())
            if self.expose_spikes:
                self.last_spikes.append(spikes.float().numpy())
            return spikes.to(current.dtype), v.to(v0.dtype)

        return forward

    def reset(self) -> None:
        self.step_module.reset()

    @torch.no_grad()
    def set_state(self, values: dict[str, np.ndarray]) -> None:
        """Overwrite the carried state (by the manifest's state names)."""
        for spec in self.step_module.specs:
            getattr(self.step_module, spec.buffer).copy_(torch.from_numpy(np.asarray(values[spec.name])))

    @torch.no_grad()
    def step(self, token: int) -> np.ndarray:
        check_token(token, self.manifest["vocab_size"])
        self.last_spikes = []
        return self.step_module.advance(token)[0].numpy()


def open_artifact(directory: Path, manifest: dict):
    try:
        import nir  # noqa: F401
    except ImportError:
        from edgespike.runtimes.registry import missing_runtime

        raise missing_runtime("nir", "nir==1.0.8") from None
    return (NirSession if manifest["runnable"] else HostLoopSession)(directory, manifest)


register_runtime("nir", open_artifact)
