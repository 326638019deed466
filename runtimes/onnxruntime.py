"""onnxruntime: runs model.onnx with the state fed back (``next_state.<n>`` -> ``state.<n>``).

The session specialises the file before loading it (``specialise``): every ``ai.edgespike``
SpikeLinear whose codes are UINT2 / UINT4 fields (``edgespike.exporters.onnx``) becomes
``com.microsoft::MatMulNBits`` over the same bytes (zero point = the field offset, unit block
scales, then the layer's scale), at accuracy level 4, the fast kernels, which quantize the input
to int8 per block of ``block_size`` (symmetric, amax / 127):
- exact when the input is spikes (0 / 1 times one graded value, or the encoder's -1 / 0 / 1),
  told by the node that made it (a LIF's spikes with a scalar graded factor, a SpikeEncode);
- otherwise the input is first cut into ``DENSE_PIECES`` int8-exact pieces (each the int8
  rounding of what the previous ones left), stacked as rows of one call, and the outputs summed.
  Measured on 2048 x 2048 ternary, relative to max |y|: 8e-3 in one piece, 3e-5 in two, 2.5e-7 in
  three (fp32's own error).
Measured on 16 ternary 2048 x 8192 layers, 4 spike rows, 2 threads (onnxruntime 1.32): 10 ms per
call at block 128 (6.7 GB/s of 2-bit codes), 17 ms at 64, 33 ms at 32; the standard graph (ORT
dequantizes every call) 444 ms, MatMulNBits at accuracy level 0 (fp32) 897 ms, block 256 has no
fast kernel (909 ms). ``onnxruntime-standard`` runs the file as written.
"""

from __future__ import annotations

import functools
from collections import Counter
from copy import copy
from pathlib import Path

import numpy as np

from edgespike.quant.packing import CODE_FIELDS
from edgespike.runtimes.registry import check_token, missing_runtime, position_inputs, register_runtime

EDGESPIKE = "ai.edgespike"
BLOCK_SIZES = (128, 64, 32, 16)  # the largest dividing K: measured fastest first
DENSE_PIECES = 3
SHAPE_OPS = {"Reshape", "Transpose", "Squeeze", "Unsqueeze", "Identity", "Flatten", "Expand", "Slice"}


class _Graph:
    """Producers and initializers of a top-level ONNX graph, and the shared constants added to it."""

    def __init__(self, graph):
        from onnx import TensorProto

        self.graph = graph
        self.producer = {out: node for node in graph.node for out in node.output}
        self.initializer = {init.name: init for init in graph.initializer}
        self.bits_of = {getattr(TensorProto, field.dtype_name): field.bits for field in CODE_FIELDS}
        self.constants: set[str] = set()

    def scalar(self, name: str) -> bool:
        """``name`` is a one-element constant."""
        from onnx import numpy_helper

        if name in self.initializer:
            return int(np.prod(self.initializer[name].dims)) == 1
        node = self.producer.get(name)
        if node is not None and node.op_type == "Constant" and node.attribute[0].name == "value":
            return numpy_helper.to_array(node.attribute[0].t).size == 1
        return False

    def constant(self, values: np.ndarray, key: str) -> str:
        """A shared initializer holding ``values``."""
        from onnx import numpy_helper

        name = f"edgespike.ort.{key}"
        if name not in self.constants:
            self.graph.initializer.append(numpy_helper.from_array(values, name))
            self.constants.add(name)
        return name


def _spike_fed(g: _Graph, name: str) -> bool:
    """``name`` carries spikes unchanged: a LIF's spikes with one graded value, or a SpikeEncode's."""
    node = g.producer.get(name)
    while node is not None and node.op_type in SHAPE_OPS:
        name = node.input[0]
        node = g.producer.get(name)
    if node is None or node.domain != EDGESPIKE:
        return False
    if node.op_type == "SpikeEncode":
        return True
    return node.op_type == "LIF" and name == node.output[0] and g.scalar(node.input[4])


def _codes(g: _Graph, name: str):
    """(fields initializer, DequantizeLinear node, offset Sub node, bits) behind a SpikeLinear's codes, else None."""
    sub = g.producer.get(name)
    if sub is None or sub.op_type != "Sub":
        return None
    dequantize = g.producer.get(sub.input[0])
    if dequantize is None or dequantize.op_type != "DequantizeLinear" or len(dequantize.input) != 2:
        return None
    fields = g.initializer.get(dequantize.input[0])
    if fields is None or fields.data_type not in g.bits_of or len(fields.dims) != 2:
        return None
    return fields, dequantize, sub, g.bits_of[fields.data_type]


def _offset(g: _Graph, sub) -> int | None:
    from onnx import numpy_helper

    init = g.initializer.get(sub.input[1])
    if init is None:
        return None
    value = numpy_helper.to_array(init)
    return int(value) if value.size == 1 and float(value) == int(value) else None


def _dense_pieces(g: _Graph, x: str, k: int, block: int, prefix: str) -> tuple[list, str]:
    """Nodes cutting ``x`` [..., K] into DENSE_PIECES int8-exact pieces stacked as [pieces * rows, K]."""
    from onnx import helper

    mk = helper.make_node
    blocks = g.constant(np.array([-1, k // block, block], np.int64), f"blocks.{k}.{block}")
    rows = g.constant(np.array([-1, k], np.int64), f"rows.{k}")
    last = g.constant(np.array([-1], np.int64), "last_axis")
    levels, zero, one = g.constant(np.float32(127.0), "levels"), g.constant(np.float32(0.0), "zero"), g.constant(np.float32(1.0), "one")
    nodes, pieces, rest = [mk("Reshape", [x, blocks], [f"{prefix}.blocks"])], [], f"{prefix}.blocks"
    for i in range(DENSE_PIECES - 1):
        p = f"{prefix}.piece{i}"
        nodes += [
            mk("Abs", [rest], [f"{p}.abs"]),
            mk("ReduceMax", [f"{p}.abs", last], [f"{p}.amax"], keepdims=1),
            mk("Div", [f"{p}.amax", levels], [f"{p}.step"]),
            mk("Equal", [f"{p}.step", zero], [f"{p}.empty"]),
            mk("Where", [f"{p}.empty", one, f"{p}.step"], [f"{p}.scale"]),
            mk("Div", [rest, f"{p}.scale"], [f"{p}.scaled"]),
            mk("Round", [f"{p}.scaled"], [f"{p}.q"]),
            mk("Mul", [f"{p}.q", f"{p}.scale"], [p]),
            mk("Sub", [rest, p], [f"{p}.rest"]),
        ]
        pieces.append(p)
        rest = f"{p}.rest"
    nodes += [mk("Concat", [*pieces, rest], [f"{prefix}.stacked"], axis=0), mk("Reshape", [f"{prefix}.stacked", rows], [f"{prefix}.rows"])]
    return nodes, f"{prefix}.rows"


def _dense_sum(g: _Graph, x: str, y: str, n: int, out: str, prefix: str) -> list:
    """Nodes summing the pieces' outputs ``y`` [pieces * rows, N] back to ``out`` [..., N] (the shape of ``x``)."""
    from onnx import helper

    mk = helper.make_node
    split = g.constant(np.array([DENSE_PIECES, -1, n], np.int64), f"pieces.{n}")
    axis0 = g.constant(np.array([0], np.int64), "first_axis")
    start, stop = g.constant(np.array([0], np.int64), "start"), g.constant(np.array([-1], np.int64), "stop_before_last")
    width = g.constant(np.array([n], np.int64), f"width.{n}")
    return [
        mk("Reshape", [y, split], [f"{prefix}.by_piece"]),
        mk("ReduceSum", [f"{prefix}.by_piece", axis0], [f"{prefix}.sum"], keepdims=0),
        mk("Shape", [x], [f"{prefix}.x_shape"]),
        mk("Slice", [f"{prefix}.x_shape", start, stop], [f"{prefix}.lead"]),
        mk("Concat", [f"{prefix}.lead", width], [f"{prefix}.out_shape"], axis=0),
        mk("Reshape", [f"{prefix}.sum", f"{prefix}.out_shape"], [out]),
    ]


def _leading_dims(graph) -> dict[str, int]:
    """The static leading dimension of every value the graph declares one for (a LIF current's: its steps)."""
    dims = {}
    for info in (*graph.value_info, *graph.input):
        shape = info.type.tensor_type.shape.dim
        if shape and shape[0].dim_value and info.name not in dims:
            dims[info.name] = shape[0].dim_value
    return dims


def _unrolled_lif(g: _Graph, node, timesteps: int, prefix: str) -> list:
    """The LIF node's law (exporters/onnx.py ``_lif_body``, the same ops in the same order) unrolled
    over its ``timesteps`` with its reset law fixed: no Scan, whose per-step overhead dominated the
    decode step (measured: a third of onnxruntime's kernel time at pulse-1b)."""
    from onnx import TensorProto, helper

    from edgespike.ops.lif import RESETS

    mk = helper.make_node
    attrs = {a.name: a.i for a in node.attribute}
    reset, delayed, strict = RESETS[attrs.get("reset", 0)], attrs.get("delayed_reset", 0), attrs.get("strict", 0)
    current, v0, beta_in, threshold, graded = node.input[:5]
    zero, one, axis0 = g.constant(np.float32(0.0), "zero"), g.constant(np.float32(1.0), "one"), g.constant(np.array([0], np.int64), "first_axis")

    def fire(x, out):  # float(H(x))
        return [mk("Greater" if strict else "GreaterOrEqual", [x, threshold], [f"{out}.bool"]),
                mk("Cast", [f"{out}.bool"], [out], to=TensorProto.FLOAT)]

    steps = [f"{prefix}.current{t}" for t in range(timesteps)]  # rows [1, ...]: no Squeeze / Unsqueeze per step
    nodes = [mk("Clip", [beta_in, zero, one], [f"{prefix}.beta"]),
             mk("Split", [current], steps, axis=0, num_outputs=timesteps),
             mk("Unsqueeze", [v0, axis0], [f"{prefix}.v0_row"])]
    v, fired = f"{prefix}.v0_row", []
    for t, current_t in enumerate(steps):
        p = f"{prefix}.t{t}"
        kept, subtracted = v, None
        if delayed and reset != "none":
            nodes += fire(v, f"{p}.r")
            if reset == "zero":
                nodes += [mk("Mul", [f"{p}.r", v], [f"{p}.r_v"]), mk("Sub", [v, f"{p}.r_v"], [f"{p}.kept"])]
                kept = f"{p}.kept"
            else:
                nodes.append(mk("Mul", [f"{p}.r", threshold], [f"{p}.r_thr"]))
                subtracted = f"{p}.r_thr"
        nodes += [mk("Mul", [f"{prefix}.beta", kept], [f"{p}.decayed"]), mk("Add", [f"{p}.decayed", current_t], [f"{p}.w"])]
        w = f"{p}.w"
        if subtracted:
            nodes.append(mk("Sub", [w, subtracted], [f"{p}.w_reset"]))
            w = f"{p}.w_reset"
        nodes += fire(w, f"{p}.h")
        v = w
        if not delayed and reset != "none":
            nodes += [mk("Mul", [f"{p}.h", w if reset == "zero" else threshold], [f"{p}.drop"]), mk("Sub", [w, f"{p}.drop"], [f"{p}.v"])]
            v = f"{p}.v"
        fired.append(f"{p}.h")
    # graded * H once over all steps: the same products as one per step
    nodes += [mk("Concat", fired, [f"{prefix}.fired"], axis=0), mk("Mul", [graded, f"{prefix}.fired"], [node.output[0]]),
              mk("Squeeze", [v, axis0], [node.output[1]])]
    return nodes


def specialise(model) -> dict[str, int]:
    """Rewrite ``model`` (an onnx.ModelProto, external data not loaded) in place for onnxruntime's
    MatMulNBits kernels (module docstring); returns how many linears went which way."""
    from onnx import TensorProto, helper

    g = _Graph(model.graph)
    counts = {"spike_fed": 0, "dense": 0, "standard": 0, "lif_unrolled": 0}
    replaced, dropped = {}, []
    for index, node in enumerate(model.graph.node):
        if node.domain != EDGESPIKE or node.op_type != "SpikeLinear":
            continue
        found = _codes(g, node.input[1])
        offset = _offset(g, found[2]) if found else None
        n, k = (found[0].dims if found else (0, 0))
        block = next((b for b in BLOCK_SIZES if k % b == 0), None)
        if offset is None or block is None or offset >= 1 << found[3]:
            counts["standard"] += 1
            continue
        fields, dequantize, sub, bits = found
        weights = TensorProto(name=f"{fields.name}.nbits", data_type=TensorProto.UINT8, dims=[n, k // block, block * bits // 8])
        weights.raw_data = fields.raw_data  # the same bytes: MatMulNBits' layout (or the same span of the external file)
        weights.data_location = fields.data_location
        weights.external_data.extend(fields.external_data)
        model.graph.initializer.append(weights)
        n_blocks = k // block
        zero_byte = sum(offset << (i * bits) for i in range(8 // bits))
        zero_points = g.constant(np.full(n * -(-n_blocks * bits // 8), zero_byte, np.uint8), f"zero_points.{n}.{n_blocks}.{bits}.{offset}")
        ones = g.constant(np.ones(n * n_blocks, np.float32), f"unit_scales.{n}.{n_blocks}")
        prefix, x, y = f"edgespike.ort.{node.name or index}", node.input[0], node.output[0]
        spiking = _spike_fed(g, x)
        nodes, a = ([], x) if spiking else _dense_pieces(g, x, k, block, prefix)
        product = f"{prefix}.product"
        nodes.append(helper.make_node("MatMulNBits", [a, weights.name, ones, zero_points], [product], domain="com.microsoft",
                                      K=k, N=n, bits=bits, block_size=block, accuracy_level=4))
        if not spiking:
            nodes += _dense_sum(g, x, product, n, f"{prefix}.summed", prefix)
            product = f"{prefix}.summed"
        nodes.append(helper.make_node("Mul", [product, node.input[2]], [y]))
        replaced[index] = nodes
        dropped.append((fields, dequantize, sub))
        counts["spike_fed" if spiking else "dense"] += 1
    leading = _leading_dims(model.graph)
    for index, node in enumerate(model.graph.node):
        timesteps = leading.get(node.input[0]) if node.domain == EDGESPIKE and node.op_type == "LIF" else None
        if timesteps:
            replaced[index] = _unrolled_lif(g, node, timesteps, f"edgespike.ort.lif{index}")
            counts["lif_unrolled"] += 1
    if not replaced:
        return counts
    nodes = [copy(new) for index, node in enumerate(model.graph.node) for new in replaced.get(index, [node])]
    uses = Counter(name for node in nodes for name in node.input)
    dead = set()
    for fields, dequantize, sub in dropped:  # the standard reading of codes no other node uses
        if uses[sub.output[0]] == 0 and uses[dequantize.output[0]] == 1:
            dead.update((sub.output[0], dequantize.output[0]))
            uses[fields.name] -= 1
    del model.graph.node[:]
    model.graph.node.extend(node for node in nodes if node.output[0] not in dead)
    unused = {fields.name for fields, _, _ in dropped if uses[fields.name] == 0}
    for index in reversed(range(len(model.graph.initializer))):
        if model.graph.initializer[index].name in unused:
            del model.graph.initializer[index]
    model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return counts


class OnnxSession:
    """model.onnx with the state fed back; ``prefill_chunk`` runs prefill.onnx (manifest ``prefill``), opened at
    its first use, over the same state."""

    def __init__(self, directory: Path, manifest: dict, extra_outputs: tuple[str, ...] = (), specialised: bool = True):
        try:
            import onnxruntime as ort
        except ImportError:
            raise missing_runtime("onnxruntime", "onnxruntime") from None
        self.manifest, self.directory, self.specialised = manifest, directory, specialised
        self.session, self.kernels = self._open(manifest["model_file"], extra_outputs)
        self.runtime = f"onnxruntime {ort.__version__} (CPU" + (
            f"; MatMulNBits: {self.kernels['spike_fed']} spike-fed linears, {self.kernels['dense']} dense in "
            f"{DENSE_PIECES} int8 pieces)" if self.kernels and self.kernels["spike_fed"] + self.kernels["dense"] else ")"
        )
        self.prefill_session = None
        self.names = [spec["name"] for spec in manifest["states"]]
        self.last_spikes: list[np.ndarray] = []  # the extra outputs of the last step
        self.reset()

    def _open(self, file: str, extra_outputs: tuple[str, ...] = ()):
        """An InferenceSession of ``file``, specialised unless this is the standard runtime; (session, kernel counts)."""
        import onnx
        import onnxruntime as ort

        model = onnx.load(str(self.directory / file), load_external_data=False)  # large weights stay on disk
        kernels = specialise(model) if self.specialised else None
        if extra_outputs:  # intermediate values: the LIF spikes, for validation
            model.graph.output.extend(onnx.helper.make_empty_tensor_value_info(name) for name in extra_outputs)
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.add_session_config_entry("session.model_external_initializers_file_folder_path", str(self.directory))
        return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"]), kernels

    def reset(self) -> None:
        self.state = {f"state.{spec['name']}": np.zeros(spec["shape"], np.float32) for spec in self.manifest["states"]}
        self.position = 0

    def set_state(self, values: dict[str, np.ndarray]) -> None:
        """Overwrite the carried state (by the manifest's state names) with a copy of ``values``."""
        self.state = {f"state.{name}": np.array(values[name], np.float32) for name in self.names}

    def _run(self, session, tokens: list[int]) -> np.ndarray:
        feed = {"tokens": np.array([tokens], dtype=np.int64),
                **position_inputs(self.manifest, self.position, len(tokens)), **self.state}
        outputs = session.run(None, feed)
        self.position += len(tokens)
        n = len(self.names)
        self.state = {f"state.{name}": value for name, value in zip(self.names, outputs[1 : 1 + n])}
        self.last_spikes = outputs[1 + n :]
        return outputs[0][0]

    def step(self, token: int) -> np.ndarray:
        check_token(token, self.manifest["vocab_size"])
        return self._run(self.session, [token])

    def prefill_chunk(self, tokens: list[int]) -> np.ndarray:
        if self.prefill_session is None:
            self.prefill_session, _ = self._open(self.manifest["prefill"]["model_file"])
        return self._run(self.prefill_session, list(tokens))


register_runtime("onnxruntime", OnnxSession)
register_runtime("onnxruntime-standard", functools.partial(OnnxSession, specialised=False))
