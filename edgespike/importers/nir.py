"""NIR graphs (``nir.write`` HDF5, e.g. ``snntorch.export_to_nir``) into a ``nir_graph`` model dir.

    edgespike import nir GRAPH.nir --out DIR [--vocab-size V] [--embedding one-hot|random|FILE.safetensors]
                         [--readout membrane|spikes|rate] [--head none|random|FILE.safetensors]
                         [--timesteps T] [--dt SECONDS] [--reset-law snntorch|nir]

The file is read with ``nir.read`` only (HDF5 data; nothing executed), its node types checked first.
The graph must be a chain Input -> (Affine | Linear | LIF | CubaLIF)... -> Output; the continuous
parameters become discrete ones as ``edgespike.nir_io`` states (beta = 1 - dt/tau, gains folded into
the preceding linear), the reset law from each node's metadata or ``--reset-law``. The embedding and
the readout are the user's: a table from a safetensors file (one tensor [V, d]), a seeded random table,
or one-hot (V = d); the head likewise, or none when the graph's output is the vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from edgespike.config import ConfigError, SpikeConfig
from edgespike.errors import EdgespikeError
from edgespike.importers import ImportOptions, register_importer
from edgespike.models.format import load_tokenizer, write_dir
from edgespike.models.nir_graph import READOUTS, NirGraphConfig
from edgespike.models.registry import build
from edgespike.nir_io import DT, LAWS, discrete, node_law, read_graph

NODE_TYPES = {"Affine": "affine", "Linear": "linear", "LIF": "lif", "CubaLIF": "cuba_lif"}
SEED = 0
HOST_KEYS = {"embedding": "embed.weight", "head": "head.weight"}


@dataclass
class NirOptions:
    vocab_size: int | None = None  # None: from the embedding file, or d for one-hot
    embedding: str = "random"  # "one-hot", "random" (seeded normal, std d^-1/2) or a .safetensors file [V, d]
    readout: str | None = None  # edgespike.models.nir_graph.READOUTS; None: the graph's metadata, else membrane
    head: str | None = None  # "none", "random" or a .safetensors file [V, out]; None: none if out == V, else random
    timesteps: int | None = None  # per token; None: the graph's metadata, else 1
    dt: float | None = None  # seconds per step; None: the graph's metadata, else snntorch's 1e-4
    reset_law: str = "snntorch"  # for neuron nodes whose metadata states none: edgespike.nir_io.LAWS


def _width(name: str, shape) -> int:
    shape = [int(s) for s in np.atleast_1d(np.asarray(shape))]
    if len(shape) != 1:
        raise EdgespikeError(f"NIR node {name!r} has shape {shape}; edgespike imports one-dimensional populations")
    return shape[0]


def chain(graph) -> list[str]:
    """The node names from the Input to the Output, or a one-line error on any other topology."""
    inputs, outputs = list(graph.inputs), list(graph.outputs)
    if len(inputs) != 1 or len(outputs) != 1:
        raise EdgespikeError(f"the NIR graph has {len(inputs)} Input and {len(outputs)} Output nodes; edgespike imports one of each")
    after: dict[str, list[str]] = {name: [] for name in graph.nodes}
    before: dict[str, list[str]] = {name: [] for name in graph.nodes}
    for a, b in graph.edges:
        if a not in graph.nodes or b not in graph.nodes:
            raise EdgespikeError(f"NIR edge ({a!r}, {b!r}) names a node the graph does not have")
        after[a].append(b)
        before[b].append(a)
    order, name = [], inputs[0]
    while name != outputs[0]:
        if len(after[name]) != 1:
            raise EdgespikeError(f"NIR node {name!r} feeds {len(after[name])} nodes {after[name]}; edgespike imports a chain")
        name = after[name][0]
        if name in order or name == inputs[0]:
            raise EdgespikeError(f"NIR edge into {name!r} closes a cycle (a recurrent loop); edgespike imports a chain without cycles")
        if len(before[name]) != 1:
            raise EdgespikeError(
                f"NIR node {name!r} has {len(before[name])} inputs {before[name]}: merges and recurrent loops "
                "(RLeaky / RSynaptic) are not supported; edgespike imports a chain"
            )
        order.append(name)
    unused = sorted(set(graph.nodes) - set(order) - {inputs[0]})
    if unused:
        raise EdgespikeError(f"NIR node(s) {unused} are not on the path from {inputs[0]!r} to {outputs[0]!r}; edgespike imports a chain")
    return order[:-1]


def _table(source: str, rows: int | None, cols: int, what: str) -> torch.Tensor:
    """A [rows, cols] float32 table from ``source``: a safetensors file holding one tensor, or "random"."""
    if source == "random":
        if rows is None:
            raise EdgespikeError(f"--{what} random needs --vocab-size")
        generator = torch.Generator().manual_seed(SEED + (what == "head"))
        return torch.randn(rows, cols, generator=generator) * cols**-0.5
    path = Path(source)
    if not path.is_file():
        raise EdgespikeError(f"--{what} {source!r} is neither one-hot, random, none nor a .safetensors file")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise EdgespikeError(f"--{what} {path} is not a readable safetensors file: {err}") from None
    key = HOST_KEYS[what]  # the tensor's name in an edgespike NIR export's host.safetensors
    if key not in tensors and len(tensors) != 1:
        raise EdgespikeError(f"--{what} {path} must hold exactly one tensor [V, {cols}] (or {key!r}), it holds {sorted(tensors)}")
    table = (tensors[key] if key in tensors else next(iter(tensors.values()))).float()
    if table.dim() != 2 or table.shape[1] != cols or (rows is not None and table.shape[0] != rows):
        want = f"[{rows if rows is not None else 'V'}, {cols}]"
        raise EdgespikeError(f"--{what} {path} holds a tensor of shape {list(table.shape)}; the graph needs {want}")
    return table.contiguous()


def _metadata(graph, key: str):
    value = (getattr(graph, "metadata", None) or {}).get(key)
    return None if value is None else np.asarray(value).item()


def graph_to_model(graph, opts: NirOptions) -> tuple[NirGraphConfig, dict[str, torch.Tensor]]:
    """The nir_graph config and tensors of a NIR chain, with the embedding and head ``opts`` names."""
    if opts.reset_law not in LAWS:
        raise EdgespikeError(f"--reset-law must be one of {', '.join(LAWS)}, got {opts.reset_law!r}")
    readout = opts.readout or _metadata(graph, "readout") or "membrane"
    if readout not in READOUTS:
        raise EdgespikeError(f"--readout must be one of {', '.join(READOUTS)}, got {readout!r}")
    dt = float(opts.dt or _metadata(graph, "dt") or DT)
    timesteps = int(opts.timesteps or _metadata(graph, "timesteps") or 1)
    names = chain(graph)
    if not names:
        raise EdgespikeError("the NIR graph has no nodes between its Input and its Output")
    source = next(iter(graph.inputs))
    width = d_model = _width(source, graph.nodes[source].input_type["input"])
    nodes, tensors, previous = [], {}, source
    for i, name in enumerate(names):
        node, kind = graph.nodes[name], type(graph.nodes[name]).__name__
        if kind not in NODE_TYPES:
            raise EdgespikeError(f"NIR node {name!r} of type {kind} cannot sit inside the chain; use {', '.join(NODE_TYPES)}")
        prefix = f"nodes.{i}."
        if kind in ("Affine", "Linear"):
            weight = np.asarray(node.weight, np.float32)
            if weight.ndim != 2 or weight.shape[1] != width:
                raise EdgespikeError(f"NIR edge {previous!r} -> {name!r}: {previous!r} gives {width} values, {name!r} takes "
                                     f"weight of shape {list(weight.shape)} (expects [out, {width}])")
            tensors[prefix + "weight"] = torch.from_numpy(weight.copy())
            if kind == "Affine":
                tensors[prefix + "bias"] = torch.from_numpy(np.asarray(node.bias, np.float32).reshape(-1).copy())
            nodes.append({"type": NODE_TYPES[kind], "name": name, "in_features": width, "out_features": weight.shape[0]})
            width = weight.shape[0]
        else:
            params = discrete(name, node, dt)
            sizes = {int(np.asarray(v).size) for v in params.values()} - {1}
            if sizes - {width}:
                raise EdgespikeError(f"NIR edge {previous!r} -> {name!r}: {previous!r} gives {width} values, {name!r} has {sorted(sizes)[0]} neurons")
            gain = np.broadcast_to(params.pop("gain"), (width,))
            if np.any(gain != 1.0):
                if i == 0 or nodes[-1]["type"] not in ("affine", "linear"):
                    raise EdgespikeError(f"NIR node {name!r} scales its input by r*dt/tau = {gain.max():.6g} and no Affine / Linear "
                                         "precedes it to fold that into; rescale the graph or add a Linear before it")
                gain_t = torch.from_numpy(gain.astype(np.float32).copy())
                before = f"nodes.{i - 1}."
                tensors[before + "weight"] = tensors[before + "weight"] * gain_t[:, None]
                if before + "bias" in tensors:
                    tensors[before + "bias"] = tensors[before + "bias"] * gain_t
            law = node_law(name, node, LAWS[opts.reset_law])
            lif = prefix if kind == "LIF" else prefix + "lif."
            tensors[lif + "beta"] = torch.from_numpy(np.broadcast_to(params["beta"], (width,)).astype(np.float32).copy())
            tensors[lif + "threshold"] = torch.from_numpy(np.broadcast_to(params["threshold"], (width,)).astype(np.float32).copy())
            tensors[lif + "graded_spikes_factor"] = torch.tensor(1.0)
            if kind == "CubaLIF":
                tensors[prefix + "alpha"] = torch.from_numpy(np.broadcast_to(params["alpha"], (width,)).astype(np.float32).copy())
            nodes.append({"type": NODE_TYPES[kind], "name": name, "size": width, **law})
        previous = name
    output = next(iter(graph.outputs))
    out_width = _width(output, graph.nodes[output].output_type["output"])
    if out_width != width:
        raise EdgespikeError(f"NIR edge {previous!r} -> {output!r}: {previous!r} gives {width} values, the Output takes {out_width}")

    vocab = opts.vocab_size
    if opts.embedding == "one-hot":
        if vocab is not None and vocab != d_model:
            raise EdgespikeError(f"--embedding one-hot needs --vocab-size = the graph's input width {d_model}, got {vocab}")
        vocab = d_model
    else:
        tensors["embed.weight"] = _table(opts.embedding, vocab, d_model, "embedding")
        vocab = tensors["embed.weight"].shape[0]
    head = opts.head or ("none" if width == vocab else "random")
    if head != "none":
        tensors["head.weight"] = _table(head, vocab, width, "head")
    try:
        config = NirGraphConfig(
            vocab_size=vocab, d_model=d_model, n_layers=len(nodes), weights="float",
            spike=SpikeConfig(timesteps=timesteps), embedding="one-hot" if opts.embedding == "one-hot" else "table",
            nodes=nodes, readout=readout, head=head != "none", dt=dt,
        )
    except ConfigError as err:
        raise EdgespikeError(f"the NIR graph cannot become a nir_graph model: {err}") from None
    model = build(config)
    model.load_state_dict(tensors)  # every name and shape as the family builds them
    return config, tensors


def import_nir(path: Path, options: ImportOptions) -> Path:
    opts = options.nir or NirOptions()
    graph = read_graph(path)
    config, tensors = graph_to_model(graph, opts)
    tokenizer = load_tokenizer(options.tokenizer, config.vocab_size) if options.tokenizer else None
    options.notes.append(
        f"{len(config.nodes)} nodes ({', '.join(n['type'] for n in config.nodes)}), dt {config.dt:g} s, "
        f"{config.spike.timesteps} timesteps per token, readout {config.readout}, "
        f"embedding {opts.embedding}, head {'yes' if config.head else 'none'}"
    )
    return write_dir(options.out, config.to_dict(), tensors, tokenizer)


register_importer("nir", import_nir)
