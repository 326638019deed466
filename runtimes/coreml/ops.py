"""numpy implementations of the MIL ops, one table entry per op type.

Each entry takes the op's named arguments with float16 arrays promoted to float32; the
interpreter rounds the result to the dtype the program declares (see ``interpreter``).
References: coremltools ``converters/mil/mil/ops/defs/iOS15`` … ``iOS18`` (op semantics).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from edgespike.errors import EdgespikeError


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


def _blockwise_shift_scale(data, scale, offset=None):
    """iOS 18 ``constexpr_blockwise_shift_scale``: scale * (data - offset), one scale (and offset)
    per block, block sizes data.shape / scale.shape."""
    def blocks(values):
        values = np.asarray(values, np.float32)
        for axis, (size, count) in enumerate(zip(np.shape(data), values.shape)):
            values = np.repeat(values, size // count, axis=axis)
        return values

    shifted = np.asarray(data, np.float32) - (0.0 if offset is None else blocks(offset))
    return blocks(scale) * shifted


def _split(x, axis, num_splits=None, split_sizes=None):
    """Several outputs: equal parts (``num_splits``) or the given ``split_sizes`` along ``axis``."""
    axis = int(axis)
    sizes = [int(s) for s in split_sizes] if split_sizes is not None else [x.shape[axis] // int(num_splits)] * int(num_splits)
    return tuple(np.split(x, np.cumsum(sizes)[:-1], axis=axis))


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
    "maximum": lambda x, y: np.maximum(x, y),
    "minimum": lambda x, y: np.minimum(x, y),
    "mod": lambda x, y: np.mod(x, y),
    "floor_div": lambda x, y: np.floor_divide(x, y),
    "greater": lambda x, y: x > y,
    "greater_equal": lambda x, y: x >= y,
    "less": lambda x, y: x < y,
    "less_equal": lambda x, y: x <= y,
    "equal": lambda x, y: x == y,
    "not_equal": lambda x, y: x != y,
    "logical_and": lambda x, y: np.logical_and(x, y),
    "logical_or": lambda x, y: np.logical_or(x, y),
    "select": lambda cond, a, b: np.where(cond, a, b),
    "abs": lambda x: np.abs(x),
    "sign": lambda x: np.sign(x),
    "floor": lambda x: np.floor(x),
    "round": lambda x: np.round(x),
    "exp": lambda x: np.exp(x),
    "log": lambda x, epsilon=0.0: np.log(x + epsilon),
    "sqrt": lambda x: np.sqrt(x),
    "rsqrt": lambda x, epsilon=1e-12: 1.0 / np.sqrt(x + epsilon),
    "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
    "softplus": lambda x: np.logaddexp(0.0, x),
    "silu": lambda x: x / (1.0 + np.exp(-x)),
    "tanh": lambda x: np.tanh(x),
    "relu": lambda x: np.maximum(x, 0),
    "clip": lambda x, alpha, beta: np.clip(x, alpha, beta),
    "cast": lambda x, dtype: x,  # the declared output dtype does the conversion
    "identity": lambda x: x,
    "fill_like": lambda ref_tensor, value=0.0: np.full(np.shape(ref_tensor), value),
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
    "stack": lambda values, axis: np.stack(values, axis=int(axis)),
    "split": _split,
    "gather": lambda x, indices, axis=0, batch_dims=0, validate_indices=False: np.take(x, np.asarray(indices, np.int64), axis=int(axis)),
    "constexpr_lut_to_dense": _lut_to_dense,
    "constexpr_blockwise_shift_scale": _blockwise_shift_scale,
}
