"""NIR: the spiking part of a decode step as a NIR graph (``model.nir``, ``nir.write``'s HDF5), the rest
listed in the manifest as host work (module paths and why), as the NeuronChip exporter does.

- A ``nir_graph`` model (embedding + a chain of NIR nodes + readout, what ``edgespike import nir``
  builds) is written whole: Input -> its nodes -> Output, the embedding and head in
  ``host.safetensors``. It is *runnable*: the NIR runtime runs the decode step from these two files.
- Any other family is walked (``exporters.graph_walk``, NeuronChip's analysis of the captured graph):
  every LIF population (``edgespike::lif``, one-dimensional, binary spikes) becomes a LIF node; every
  linear whose input is a LIF's spikes, or whose output is a LIF's current, an Affine / Linear node;
  edges follow those spikes and currents. A population or linear fed by the host gets an Input node,
  one whose output the host reads an Output node. Embeddings, norms, attention, residuals and the
  readout stay on the host (``host_work``; their tensors in ``host.safetensors``). Such a graph is not
  runnable alone: validation runs the host parts in eager PyTorch (the source model) with every LIF and
  linear of the graph computed by the NIR runtime from ``model.nir``.

Weights are the values the decode step computes with: codes x scale for integer / ternary formats,
the floats otherwise (float32). Neurons follow ``edgespike.nir_io`` (tau = dt/(1-beta), r = tau/dt,
v_leak = v_reset = 0, dt = the model's or 1e-4 s), each with its reset law in its metadata and the
manifest (``neuron_laws``).
"""

from __future__ import annotations

import logging
import operator
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn

from edgespike import __version__
from edgespike.capture import DecodeStep, export_step
from edgespike.exporters.graph_walk import SHAPE_OPS, SPLIT_OPS, is_op, module_path, op_name, producer, spike_source
from edgespike.exporters.registry import ExportOptions, register_exporter, step_io
from edgespike.models.nir_graph import LINEAR_TYPES, NirGraphLM
from edgespike.nir_io import DT, LAW_KEYS, law_equation, linear_node, neuron_node, write_graph
from edgespike.nn import LIF, RMSNorm, SpikeEncoder, TernaryLinear

log = logging.getLogger(__name__)

MODEL_FILE = "model.nir"
HOST_WEIGHTS = "host.safetensors"
ATTENTION_OPS = {"softmax", "_softmax", "scaled_dot_product_attention", "bmm", "matmul", "einsum", "baddbmm"}
LINEAR_OPS = {"linear", "mm", "addmm"}


def _values(module: nn.Module) -> tuple[np.ndarray, np.ndarray | None]:
    """(weight [out, in], bias) as the decode step computes with them, float32."""
    if isinstance(module, TernaryLinear) and module.mode == "frozen":
        weight = module.codes.float() * module.scale.float().reshape(-1, 1)
    else:
        weight = module.weight.float()
    bias = None if module.bias is None else module.bias.detach().float().numpy()
    return weight.detach().numpy(), bias


def _neuron_values(lif: nn.Module, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-neuron beta (clamped to [0, 1], as the op computes) and threshold."""
    beta = np.broadcast_to(lif.beta.detach().float().clamp(0.0, 1.0).numpy(), (size,))
    return beta, np.broadcast_to(lif.threshold.detach().float().numpy(), (size,))


def _io(nir, kind: str, size: int):
    return nir.Input(input_type={"input": np.array([size])}) if kind == "input" else nir.Output(output_type={"output": np.array([size])})


def _law(node_or_spec) -> dict:
    return {key: node_or_spec[key] for key in LAW_KEYS}


def chain_graph(step: DecodeStep) -> tuple[dict, list, dict, list]:
    """A nir_graph model's nodes, edges, laws and host work (the embedding and the readout)."""
    import nir

    model, config = step.model, step.model.config
    nodes, edges, laws, previous = {"input": _io(nir, "input", config.d_model)}, [], {}, "input"
    for spec, module in zip(config.nodes, model.nodes):
        name = spec["name"]
        if spec["type"] in LINEAR_TYPES:
            nodes[name] = linear_node(*_values(module))
        else:
            lif = module if spec["type"] == "lif" else module.lif
            beta, threshold = _neuron_values(lif, spec["size"])
            alpha = None if spec["type"] == "lif" else np.broadcast_to(module.alpha.float().clamp(0, 1).numpy(), (spec["size"],))
            nodes[name] = neuron_node(spec["type"], beta, threshold, spec, config.dt, alpha)
            laws[name] = _law(spec)
        edges.append((previous, name))
        previous = name
    nodes["output"] = _io(nir, "output", config.out_features)
    edges.append((previous, "output"))
    embedding = "embed" if model.embed is not None else "(one-hot)"
    host = [{"module": embedding, "type": "Embedding" if model.embed is not None else "one-hot",
             "reason": "token -> input current: a table lookup, no NIR node"},
            {"module": "head" if model.head is not None else "(readout)", "type": config.readout,
             "reason": f"readout ({config.readout} of the last node over the token's timesteps"
                       + (", then a linear to the vocabulary)" if model.head is not None else ")")}]
    return nodes, edges, laws, host


def _path(node) -> str:
    """The module path of ``node`` in the model ("" for the model's own forward and the decode step's)."""
    path = module_path(node)
    return "" if path == "model" else path


def _linear_path(model: nn.Module, node) -> str | None:
    path = _path(node)
    return path if path and isinstance(model.get_submodule(path), (TernaryLinear, nn.Linear)) else None


def _spike_users(lif_node) -> list:
    """The ops that read a LIF's spikes, looking through shape and split ops."""
    stack = [u for u in lif_node.users if u.target is operator.getitem and u.args[1] == 0]
    users = []
    while stack:
        for user in stack.pop().users:
            passthrough = user.target is operator.getitem or (user.op == "call_function" and op_name(user) in SHAPE_OPS | SPLIT_OPS)
            (stack if passthrough else users).append(user)
    return users


def _lif_refusal(module: nn.Module, lif_node) -> str | None:
    """Why a LIF population stays on the host, else None."""
    v0 = lif_node.args[1].meta.get("val")
    if v0 is None or v0.dim() != 2:
        return "a multi-dimensional population: NIR's LIF here is one-dimensional"
    if bool((module.graded_spikes_factor != 1).any()):
        return "graded spikes (graded_spikes_factor != 1): NIR's LIF fires binary spikes"
    if bool((module.beta >= 1).any()):
        return "beta >= 1 (no leak): NIR's LIF needs a finite tau = dt / (1 - beta)"
    return None


def _lif_law(lif_node) -> dict:
    """The reset law of an ``edgespike::lif`` call, by the op's argument names."""
    names = [a.name for a in lif_node.target._schema.arguments]
    given = dict(zip(names, lif_node.args)) | dict(lif_node.kwargs)
    defaults = {a.name: a.default_value for a in lif_node.target._schema.arguments if a.has_default_value()}
    return {key: given.get(key, defaults.get(key)) for key in LAW_KEYS}


def walk_graph(step: DecodeStep) -> tuple[dict, list, dict, list]:
    """Nodes, edges, laws and host work of any family, from its captured graph."""
    import nir

    model, graph = step.model, export_step(step).graph
    lif_calls, linear_inputs, host_ops = {}, {}, {}
    for node in graph.nodes:
        if is_op(node, "lif"):
            lif_calls.setdefault(_path(node), node)
        elif node.op == "call_function" and (is_op(node, "spike_linear") or op_name(node) in LINEAR_OPS):
            path = _linear_path(model, node)
            if path:
                linear_inputs.setdefault(path, node.args[0])
            else:
                host_ops.setdefault(_path(node), "readout / projection by a functional weight (tied head): a host matmul")
        elif node.op == "call_function" and op_name(node) in ATTENTION_OPS:
            host_ops[_path(node)] = "attention (softmax and matmuls over the carried KV cache): no NIR node"
    refused = {path: _lif_refusal(model.get_submodule(path), node) for path, node in lif_calls.items()}
    lifs = {path: node for path, node in lif_calls.items() if refused[path] is None}
    fed_by = {}  # linear path -> the LIF whose spikes it reads, all of them (NIR has no node taking a part)
    for path, value in linear_inputs.items():
        source = spike_source(value)
        if (source is not None and is_op(source, "lif") and _path(source) in lifs
                and value.meta["val"].shape[-1] == source.args[1].meta["val"].shape[-1]):
            fed_by[path] = _path(source)
    drives = {}  # LIF path -> the linear whose output is its current
    for path, node in lifs.items():
        linear = _linear_path(model, producer(node.args[0]))
        if linear in linear_inputs:
            drives[path] = linear
    linears = sorted(set(fed_by) | set(drives.values()), key=list(linear_inputs).index)

    nodes, edges, laws = {}, [], {}
    for path, node in lifs.items():
        size = node.args[1].meta["val"].shape[-1]
        beta, threshold = _neuron_values(model.get_submodule(path), size)
        laws[path] = _lif_law(node)
        nodes[path] = neuron_node("lif", beta, threshold, laws[path], DT)
        if path not in drives:
            nodes[f"input.{path}"] = _io(nir, "input", size)
            edges.append((f"input.{path}", path))
        users = _spike_users(node)
        if not users or any(fed_by.get(_linear_path(model, u)) != path for u in users):  # the host reads them too
            nodes[f"output.{path}"] = _io(nir, "output", size)
            edges.append((path, f"output.{path}"))
    driven = {linear: lif for lif, linear in drives.items()}
    for path in linears:
        module = model.get_submodule(path)
        nodes[path] = linear_node(*_values(module))
        if path in fed_by:
            edges.append((fed_by[path], path))
        else:
            nodes[f"input.{path}"] = _io(nir, "input", module.in_features)
            edges.append((f"input.{path}", path))
        if path in driven:
            edges.append((path, driven[path]))
        else:
            nodes[f"output.{path}"] = _io(nir, "output", module.out_features)
            edges.append((path, f"output.{path}"))
    return nodes, edges, laws, _host_work(model, set(nodes), refused, host_ops)


def _host_work(model: nn.Module, mapped: set[str], refused: dict, host_ops: dict) -> list[dict]:
    host = []
    for path, module in model.named_modules():
        if path in mapped:
            continue
        own = any(True for _ in module.parameters(recurse=False)) or any(True for _ in module.buffers(recurse=False))
        if isinstance(module, LIF):
            reason = refused.get(path) or "not called in the decode step"
        elif isinstance(module, nn.Embedding):
            reason = "table lookup: no NIR node"
        elif isinstance(module, RMSNorm):
            reason = "normalization (float): no NIR node"
        elif isinstance(module, SpikeEncoder):
            reason = "encodes host activations into multi-level spike codes (W8ASpike): no NIR node"
        elif isinstance(module, (TernaryLinear, nn.Linear)):
            reason = "drives no LIF and reads no whole LIF population (dense input, or part of one: no NIR node slices): a host matmul"
        elif path in host_ops:
            reason = host_ops[path]
        elif own:
            reason = "float compute (no NIR node for it)"
        else:
            continue
        host.append({"module": path or "(top level)", "type": type(module).__name__, "reason": reason})
    listed = {entry["module"] for entry in host}
    host += [{"module": path or "(top level)", "type": "ops", "reason": why} for path, why in host_ops.items()
             if (path or "(top level)") not in listed]
    return host


class NirExporter:
    name = "nir"
    model_file = MODEL_FILE
    runtime = "nir"
    default_precision = "fp32"
    stored_weight_bits = 32
    prefill_tokens = 0  # a graph of neurons stepped in time: no prefill entry

    def lower(self, step: DecodeStep, options: ExportOptions, staging: Path) -> dict:
        import nir

        if options.precision != "fp32":
            raise ValueError(f"nir: the graph stores float32 values; precision {options.precision!r} is not supported")
        if step.batch != 1:
            raise ValueError(f"nir: the NIR runtime runs batch 1, got batch {step.batch}")
        runnable = isinstance(step.model, NirGraphLM)
        nodes, edges, laws, host = (chain_graph if runnable else walk_graph)(step)
        if not any(type(n).__name__ in ("LIF", "CubaLIF") for n in nodes.values()):
            raise ValueError("nir: the model has no LIF population NIR can express (every one is host work)")
        dt = step.model.config.dt if runnable else DT
        metadata = {"producer": f"edgespike {__version__}", "dt": dt, "timesteps": step.model.config.spike.timesteps,
                    "runnable": runnable, **({"readout": step.model.config.readout} if runnable else {})}
        graph = nir.NIRGraph(nodes=nodes, edges=edges, metadata=metadata)  # type-checks every edge's shapes
        write_graph(staging / MODEL_FILE, graph)
        mapped = {key for key in nodes}
        host_tensors = {}
        if runnable:
            if step.model.embed is not None:
                host_tensors["embed.weight"] = step.model.embed.weight.detach().float().contiguous()
            if step.model.head is not None:
                host_tensors["head.weight"] = torch.from_numpy(_values(step.model.head)[0].copy())
        else:
            host_tensors = {k: v.detach().contiguous().clone() for k, v in step.model.state_dict().items()
                            if k.rsplit(".", 1)[0] not in mapped}
        save_file(host_tensors, str(staging / HOST_WEIGHTS))
        node_list = [{"name": name, "type": type(node).__name__,
                      "shape": [int(s) for s in next(iter(node.output_type.values()))]} for name, node in nodes.items()]
        log.info("nir: %d nodes (%d neuron populations), %d host modules, runnable %s", len(nodes), len(laws), len(host), runnable)
        return {
            **step_io(step),
            "nir_version": nir.version,
            "dt": dt,
            "nir_nodes": node_list,
            "nir_edges": [list(edge) for edge in edges],
            "neuron_laws": {name: {**law, "equation": law_equation(law)} for name, law in laws.items()},
            "host_work": host,
            "host_weights": HOST_WEIGHTS,
            "runnable": runnable,
            "runnable_note": (
                "the decode step runs from model.nir + host.safetensors alone (embedding, graph, readout)" if runnable else
                "not runnable alone: the host work above sits between the graph's Input / Output nodes; validation "
                "runs it in eager PyTorch (the source model) with the graph's nodes computed from model.nir"
            ),
        }


register_exporter(NirExporter())
