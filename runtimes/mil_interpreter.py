"""A numpy reference interpreter of Core ML ML Programs, for hosts where Core ML cannot run.

It loads a saved .mlpackage through coremltools' own loaders (the MIL program and its weight
blobs) and executes the main function op by op. Each op computes from its inputs promoted to
float32 and rounds its result to the dtype the program declares for it (fp16 where the program
computes in fp16), the way the device rounds after every op; matmuls accumulate in float32
(the device may accumulate fp16 in fp16: a source of small differences, stated, not hidden).
States are read and updated like Core ML states. An op without an implementation raises an
error naming it; nothing is skipped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from edgespike.errors import EdgespikeError


def _float(x):
    x = np.asarray(x)
    return x.astype(np.float32) if x.dtype == np.float16 else x


def _slice_by_index(x, begin, end, stride=None, begin_mask=None, end_mask=None, squeeze_mask=None):
    slices = []
    for axis in range(x.ndim):
        start = None if begin_mask is not None and begin_mask[axis] else int(begin[axis])
        stop = None if end_mask is not None and end_mask[axis] else int(end[axis])
        step = 1 if stride is None else int(stride[axis])
        slices.append(slice(start, stop, step))
    out = x[tuple(slices)]
    if squeeze_mask is not None and any(squeeze_mask):
        out = out.squeeze(axis=tuple(i for i, s in enumerate(squeeze_mask) if s))
    return out


def _lut_to_dense(indices, lut, vector_axis=None):
    """iOS 18 ``constexpr_lut_to_dense``: lut [g_0, ..., g_{n-1}, 2^bits, 1], one table per block."""
    if lut.shape[-1] != 1:
        raise EdgespikeError("mil interpreter: vector palettization (lut vector size > 1) is not supported")
    blocks = [indices.shape[d] // lut.shape[d] for d in range(indices.ndim)]
    grid = np.meshgrid(*[np.arange(n) // b for n, b in zip(indices.shape, blocks)], indexing="ij")
    return lut[(*grid, indices.astype(np.int64), 0)]


def _softmax(x, axis):
    shifted = x - x.max(axis=axis, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=axis, keepdims=True)


def _concat(values, axis, interleave=False):
    if interleave:
        raise EdgespikeError("mil interpreter: concat with interleave=True is not supported")
    return np.concatenate([np.asarray(v) for v in values], axis=int(axis))


# op type -> numpy implementation over the op's named arguments (float16 promoted to float32)
OPS: dict[str, Callable] = {
    "add": lambda x, y: x + y,
    "sub": lambda x, y: x - y,
    "mul": lambda x, y: x * y,
    "real_div": lambda x, y: x / y,
    "pow": lambda x, y: np.power(x, y),
    "maximum": np.maximum,
    "minimum": np.minimum,
    "mod": lambda x, y: np.mod(x, y),
    "floor_div": lambda x, y: np.floor_divide(x, y),
    "greater": lambda x, y: x > y,
    "greater_equal": lambda x, y: x >= y,
    "less": lambda x, y: x < y,
    "less_equal": lambda x, y: x <= y,
    "equal": lambda x, y: x == y,
    "not_equal": lambda x, y: x != y,
    "logical_and": np.logical_and,
    "select": lambda cond, a, b: np.where(cond, a, b),
    "abs": np.abs,
    "sign": np.sign,
    "floor": np.floor,
    "round": np.round,
    "exp": np.exp,
    "log": lambda x, epsilon=0.0: np.log(x + epsilon),
    "sqrt": np.sqrt,
    "rsqrt": lambda x, epsilon=1e-12: 1.0 / np.sqrt(x + epsilon),
    "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
    "softplus": lambda x: np.logaddexp(0.0, x),
    "silu": lambda x: x / (1.0 + np.exp(-x)),
    "tanh": np.tanh,
    "relu": lambda x: np.maximum(x, 0),
    "clip": lambda x, alpha, beta: np.clip(x, alpha, beta),
    "cast": lambda x, dtype: x,  # the declared output dtype does the conversion
    "identity": lambda x: x,
    "reduce_mean": lambda x, axes=None, keep_dims=False: np.mean(x, axis=tuple(axes) if axes is not None else None, keepdims=bool(keep_dims)),
    "reduce_sum": lambda x, axes=None, keep_dims=False: np.sum(x, axis=tuple(axes) if axes is not None else None, keepdims=bool(keep_dims)),
    "reduce_max": lambda x, axes=None, keep_dims=False: np.max(x, axis=tuple(axes) if axes is not None else None, keepdims=bool(keep_dims)),
    "softmax": lambda x, axis=-1: _softmax(x, int(axis)),
    "linear": lambda x, weight, bias=None: x @ weight.T + (0.0 if bias is None else bias),
    "matmul": lambda x, y, transpose_x=False, transpose_y=False: np.matmul(
        np.swapaxes(x, -1, -2) if transpose_x else x, np.swapaxes(y, -1, -2) if transpose_y else y
    ),
    "transpose": lambda x, perm: np.transpose(x, perm),
    "reshape": lambda x, shape: np.reshape(x, [int(s) for s in shape]),
    "expand_dims": lambda x, axes: np.expand_dims(x, tuple(int(a) for a in axes)),
    "squeeze": lambda x, axes=None: np.squeeze(x, axis=None if axes is None else tuple(int(a) for a in axes)),
    "tile": lambda x, reps: np.tile(x, [int(r) for r in reps]),
    "slice_by_index": _slice_by_index,
    "concat": _concat,
    "gather": lambda x, indices, axis=0, batch_dims=0, validate_indices=False: np.take(x, np.asarray(indices, np.int64), axis=int(axis)),
    "constexpr_lut_to_dense": _lut_to_dense,
}


class MILProgram:
    """The main function of a saved .mlpackage, runnable with numpy."""

    def __init__(self, package: str | Path):
        import coremltools as ct
        from coremltools.converters.mil.frontend.milproto.load import load as load_mil

        mlmodel = ct.models.MLModel(str(package), skip_model_load=True)
        spec = mlmodel.get_spec()
        program = load_mil(model_spec=spec, specification_version=spec.specificationVersion, file_weights_dir=mlmodel.weights_dir)
        self.function = program.functions["main"]
        self.state_names = [state.name for state in spec.description.state]
        self.output_names = [var.name for var in self.function.outputs]
        unknown = sorted({op.op_type for op in self.function.operations} - set(OPS) - {"const", "read_state", "coreml_update_state"})
        if unknown:
            raise EdgespikeError(f"mil interpreter: no implementation of op(s) {', '.join(unknown)}")

    def initial_state(self) -> dict[str, np.ndarray]:
        from coremltools.converters.mil.mil.types import nptype_from_builtin

        inputs = self.function.inputs
        return {
            name: np.zeros(inputs[name].shape, nptype_from_builtin(inputs[name].dtype))
            for name in self.state_names
        }

    def run(self, inputs: dict[str, np.ndarray], state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Execute once; ``state`` is read and updated in place, like a Core ML state."""
        from coremltools.converters.mil.mil.types import nptype_from_builtin

        env: dict[str, object] = dict(inputs)

        def value(var):
            if isinstance(var, (list, tuple)):
                return [value(v) for v in var]
            return env[var.name] if var.name in env else var.val

        for op in self.function.operations:
            out = op.outputs[0]
            if op.op_type == "const":
                env[out.name] = out.val
                continue
            if op.op_type == "read_state":
                env[out.name] = state[op.inputs["input"].name]
                continue
            args = {name: value(var) for name, var in op.inputs.items()}
            if op.op_type == "coreml_update_state":
                state[op.inputs["state"].name] = np.asarray(args["value"], state[op.inputs["state"].name].dtype)
                env[out.name] = state[op.inputs["state"].name]
                continue
            promoted = {name: ([_float(v) for v in a] if isinstance(a, list) and name == "values" else _float(a) if isinstance(a, np.ndarray) else a)
                        for name, a in args.items()}
            result = OPS[op.op_type](**promoted)
            env[out.name] = np.asarray(result).astype(nptype_from_builtin(out.dtype))
        return {name: env[name] for name in self.output_names}
