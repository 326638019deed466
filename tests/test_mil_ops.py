"""The MIL interpreter op by op: one-op programs built with coremltools' own MIL builder, run by
the interpreter, against torch computing the same op in the same dtype (torch rounds CPU half
ops to fp16 after each op, as Core ML does). Tolerance: fp32 rtol 1e-6; fp16 one ulp (rtol 1e-3)
with infs and NaNs where torch has them. Edge cases by hand: fp16 overflow to inf, ties to even,
subnormals, states carried across runs, the iOS 18 LUT example from coremltools' docs.
"""

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pytest
import torch

ct = pytest.importorskip("coremltools")
from coremltools.converters.mil import Builder as mb  # noqa: E402
from coremltools.converters.mil.mil import types  # noqa: E402

from edgespike.runtimes.coreml.interpreter import MILProgram  # noqa: E402
from edgespike.runtimes.coreml.ops import OPS  # noqa: E402

MIL_DTYPE = {np.float16: types.fp16, np.float32: types.fp32}
TORCH_DTYPE = {np.float16: torch.float16, np.float32: torch.float32}

X = np.array([[-2.5, -0.5, 0.0, 0.5, 1.5, 2.5], [3.0, -7.25, 300.0, 1e-3, -1e3, 2049.0]])
Y = np.array([[1.5, 2.0, -3.0, 0.5, 1.5, -2.5], [0.25, 4.0, 300.0, 3.0, 7.0, 1.0]])
POSITIVE = np.abs(X) + 0.125
UNIT = np.array([[-6.0, -1.0, -0.125, 0.0, 0.7, 12.0], [1e-4, 3.0, -3.0, 0.5, -0.5, 2.0]])  # exp(12) overflows fp16


@dataclass
class Case:
    op: str
    build: Callable  # (x, *consts) -> MIL var
    reference: Callable  # (*torch tensors) -> tensor
    inputs: tuple  # arrays; the first is the program input, the rest become consts


def _positive(a):
    return mb.greater(x=a, y=mb.sub(x=a, y=a))  # a > 0, whatever a's dtype


def _binary(op, reference, x=X, y=Y):
    return Case(op, lambda a, b: getattr(mb, op)(x=a, y=b), reference, (x, y))


def _unary(op, reference, x=UNIT):
    return Case(op, lambda a: getattr(mb, op)(x=a), reference, (x,))


CASES = [
    _binary("add", torch.add),
    _binary("sub", torch.sub),
    _binary("mul", torch.mul),
    _binary("real_div", torch.div),
    _binary("pow", torch.pow, x=POSITIVE, y=np.full_like(Y, 1.5)),
    _binary("maximum", torch.maximum),
    _binary("minimum", torch.minimum),
    _binary("mod", torch.remainder),
    _binary("floor_div", lambda a, b: torch.div(a, b, rounding_mode="floor")),
    _binary("greater", torch.gt),
    _binary("greater_equal", torch.ge),
    _binary("less", torch.lt),
    _binary("less_equal", torch.le),
    _binary("equal", torch.eq, y=np.where(np.arange(12).reshape(2, 6) % 2 == 0, X, Y)),
    _binary("not_equal", torch.ne, y=np.where(np.arange(12).reshape(2, 6) % 2 == 0, X, Y)),
    Case("logical_and", lambda a, b: mb.logical_and(x=_positive(a), y=b), lambda a, b: (a > 0) & b, (X, Y > 1)),
    Case("logical_or", lambda a, b: mb.logical_or(x=_positive(a), y=b), lambda a, b: (a > 0) | b, (X, Y > 1)),
    Case("select", lambda a, c, b: mb.select(cond=c, a=a, b=b), lambda a, c, b: torch.where(c, a, b), (X, Y > 1, Y)),
    _unary("abs", torch.abs, X),
    _unary("sign", torch.sign, X),
    _unary("floor", torch.floor, X),
    _unary("round", torch.round, X),  # ties to even: -2.5, -0.5, 0.5, 1.5, 2.5
    _unary("exp", torch.exp),
    _unary("sqrt", torch.sqrt, POSITIVE),
    _unary("sigmoid", torch.sigmoid),
    _unary("softplus", torch.nn.functional.softplus),
    _unary("silu", torch.nn.functional.silu),
    _unary("tanh", torch.tanh),
    _unary("relu", torch.relu),
    Case("log", lambda a: mb.log(x=a, epsilon=0.0), torch.log, (POSITIVE,)),
    Case("rsqrt", lambda a: mb.rsqrt(x=a, epsilon=1e-6), lambda a: torch.rsqrt(a + 1e-6), (POSITIVE,)),
    Case("clip", lambda a, lo, hi: mb.clip(x=a, alpha=lo, beta=hi), lambda a, lo, hi: torch.clamp(a, lo, hi), (X, np.array(-1.0), np.array(2.0))),
    Case("reduce_mean", lambda a: mb.reduce_mean(x=a, axes=[-1], keep_dims=True), lambda a: a.mean(-1, keepdim=True), (UNIT,)),
    Case("reduce_sum", lambda a: mb.reduce_sum(x=a, axes=[0]), lambda a: a.sum(0), (X,)),
    Case("reduce_max", lambda a: mb.reduce_max(x=a, axes=[1]), lambda a: a.amax(1), (X,)),
    Case("softmax", lambda a: mb.softmax(x=a, axis=-1), lambda a: torch.softmax(a, -1), (UNIT,)),
    Case("linear", lambda a, w, b: mb.linear(x=a, weight=w, bias=b), torch.nn.functional.linear, (UNIT, Y[:, :6].repeat(2, 0), X[0, :4])),
    Case("matmul", lambda a, b: mb.matmul(x=a, y=b, transpose_y=True), lambda a, b: a @ b.T, (UNIT, Y)),
    Case("matmul", lambda a, b: mb.matmul(x=a, y=b, transpose_x=True), lambda a, b: a.T @ b, (UNIT, Y)),
    Case("transpose", lambda a: mb.transpose(x=a, perm=[1, 0]), lambda a: a.T, (X,)),
    Case("reshape", lambda a: mb.reshape(x=a, shape=[3, 4]), lambda a: a.reshape(3, 4), (X,)),
    Case("expand_dims", lambda a: mb.expand_dims(x=a, axes=[1]), lambda a: a.unsqueeze(1), (X,)),
    Case("squeeze", lambda a: mb.squeeze(x=a, axes=[0]), lambda a: a.squeeze(0), (X[:1],)),
    Case("tile", lambda a: mb.tile(x=a, reps=[2, 1]), lambda a: a.repeat(2, 1), (X,)),
    Case("slice_by_index", lambda a: mb.slice_by_index(x=a, begin=[0, 1], end=[2, 6], stride=[1, 2]), lambda a: a[:, 1:6:2], (X,)),
    Case("slice_by_index", lambda a: mb.slice_by_index(x=a, begin=[1, 0], end=[2, 3], squeeze_mask=[True, False]), lambda a: a[1, :3], (X,)),
    Case("slice_by_index", lambda a: mb.slice_by_index(x=a, begin=[0, 4], end=[0, 0], begin_mask=[True, False], end_mask=[True, True]),
         lambda a: a[:, 4:], (X,)),
    Case("concat", lambda a, b: mb.concat(values=[a, b], axis=1), lambda a, b: torch.cat([a, b], 1), (X, Y)),
    Case("stack", lambda a, b: mb.stack(values=[a, b], axis=0), lambda a, b: torch.stack([a, b], 0), (X, Y)),
    Case("gather", lambda a, i: mb.gather(x=a, indices=i, axis=1), lambda a, i: a[:, i.long()], (X, np.array([5, 0, 3], np.int32))),
    Case("fill_like", lambda a, v: mb.add(x=mb.fill_like(ref_tensor=a, value=v), y=a), lambda a, v: a + v, (UNIT, np.array(-1.0e4))),
    Case("cast", lambda a: mb.cast(x=_positive(a), dtype="fp32"), lambda a: (a > 0).float(), (X,)),
]


def _program(case: Case, dtype):
    """A one-op ML Program (iOS 18 opset) whose input is ``case.inputs[0]`` in ``dtype``."""
    first, *rest = [np.asarray(a, dtype) if np.asarray(a).dtype.kind == "f" else np.asarray(a) for a in case.inputs]

    @mb.program(input_specs=[mb.TensorSpec(shape=first.shape, dtype=MIL_DTYPE[dtype])], opset_version=ct.target.iOS18)
    def program(x):
        return case.build(x, *rest)

    return program, first, rest


def _torch(array):
    return torch.from_numpy(np.ascontiguousarray(array))


@pytest.mark.parametrize("dtype", [np.float32, np.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("case", CASES, ids=[f"{c.op}-{i}" for i, c in enumerate(CASES)])
def test_op_matches_torch(case, dtype):
    program, x, rest = _program(case, dtype)
    ops = [op.op_type for op in program.functions["main"].operations if op.op_type != "const"]
    assert case.op in ops, f"the builder folded {case.op} away: {ops}"
    (ours,) = MILProgram(program).run({"x": x}, {}).values()
    expected = case.reference(_torch(x), *map(_torch, rest)).numpy()
    assert ours.shape == expected.shape
    if expected.dtype == np.bool_:
        np.testing.assert_array_equal(ours, expected)
        return
    assert ours.dtype == expected.dtype, (ours.dtype, expected.dtype)
    rtol = 1e-6 if dtype == np.float32 else 1e-3
    np.testing.assert_allclose(ours.astype(np.float64), expected.astype(np.float64), rtol=rtol, atol=rtol * 1e-3)


def test_every_op_the_interpreter_implements_is_tested():
    tested = {case.op for case in CASES} | {"split", "constexpr_lut_to_dense", "constexpr_blockwise_shift_scale", "identity"}
    assert set(OPS) - tested == set()


def _run(build, x):
    @mb.program(input_specs=[mb.TensorSpec(shape=x.shape, dtype=MIL_DTYPE[x.dtype.type])], opset_version=ct.target.iOS18)
    def program(x):
        return build(x)

    return list(MILProgram(program).run({"x": x}, {}).values())


def test_fp16_rounds_after_every_op():
    x = np.array([2048.0, 2048.0, 1.0], np.float16)
    # 2049 is not an fp16: 2048 + 1 ties to even (2048), 2048 + 3 rounds up to 2052;
    # (x + 1) - x in fp16 is 0 for 2048 but 1 with float32 intermediates.
    (total,) = _run(lambda a: mb.sub(x=mb.add(x=a, y=np.array([1.0, 3.0, 1.0], np.float16)), y=a), x)
    np.testing.assert_array_equal(total, np.array([0.0, 4.0, 1.0], np.float16))


def test_fp16_overflows_to_inf_and_underflows_to_subnormals():
    x = np.array([300.0, -300.0, 1e-4, 65504.0], np.float16)
    (product,) = _run(lambda a: mb.mul(x=a, y=np.array([300.0, 300.0, 1e-3, 1.0], np.float16)), x)
    assert product[0] == np.inf and product[1] == -np.inf and product[3] == 65504
    assert product[2] == np.float16(1e-7) and 0 < product[2] < np.finfo(np.float16).tiny  # a subnormal, not flushed
    (exp,) = _run(lambda a: mb.exp(x=a), np.array([11.0, 12.0], np.float16))
    assert np.isfinite(exp[0]) and exp[1] == np.inf  # e^12 = 162755 > 65504
    (cast,) = _run(lambda a: mb.cast(x=a, dtype="fp16"), np.array([70000.0, 65519.0, 65520.0], np.float32))
    np.testing.assert_array_equal(cast, np.array([np.inf, 65504, np.inf], np.float16))


@pytest.mark.parametrize("sizes", [None, [1, 2, 3]])
def test_split(sizes):
    x = np.arange(12, dtype=np.float32).reshape(2, 6)
    build = (lambda a: mb.split(x=a, num_splits=3, axis=1)) if sizes is None else (lambda a: mb.split(x=a, split_sizes=sizes, axis=1))
    parts = _run(build, x)
    expected = torch.split(_torch(x), 2 if sizes is None else sizes, dim=1)
    assert len(parts) == len(expected)
    for ours, theirs in zip(parts, expected):
        np.testing.assert_array_equal(ours, theirs.numpy())


def test_lut_to_dense_reproduces_the_coremltools_docs_example():
    # coremltools ops/defs/iOS18/compression.py, constexpr_lut_to_dense: two 2-bit tables over rows 0-2 and 3-5
    indices = np.array([2, 3, 3, 0, 1, 0, 3, 0, 2, 1, 0, 3]).reshape(6, 2).astype(types.np_uint2_dtype)
    lut = np.array([1, 5, 9, 13, 2, 10, 18, 26], np.float16).reshape(2, 1, 4, 1)
    (dense,) = _run(lambda a: mb.add(x=mb.constexpr_lut_to_dense(indices=indices, lut=lut), y=a), np.zeros((6, 2), np.float16))
    np.testing.assert_array_equal(dense, np.array([[9, 13], [13, 1], [5, 1], [26, 2], [18, 10], [2, 26]], np.float16))


@pytest.mark.parametrize("dtype", ["int8", "int4"])
def test_blockwise_shift_scale_dequantizes_per_block(dtype):
    # coremltools ops/defs/iOS18/compression.py: output[i, j] = scale[i0, j0] * (data[i, j] - offset[i0, j0]),
    # blocks data.shape / scale.shape: here rows 0-1 and 2-3, columns 0-2 and 3-5
    np_dtype = np.int8 if dtype == "int8" else types.np_int4_dtype
    data = np.array([[-7, 0, 7, 1, 2, 3]] * 4).astype(np_dtype)
    scale = np.array([[0.5, 2.0], [1.0, 0.25]], np.float16)
    offset = np.array([[1, 0], [0, -1]]).astype(np_dtype)
    (dense,) = _run(lambda a: mb.add(x=mb.constexpr_blockwise_shift_scale(data=data, scale=scale, offset=offset), y=a),
                    np.zeros((4, 6), np.float16))
    block = lambda r, c: (r // 2, c // 3)
    expected = [[scale[block(r, c)] * (int(data[r, c]) - int(offset[block(r, c)])) for c in range(6)] for r in range(4)]
    np.testing.assert_array_equal(dense, np.array(expected, np.float16))


def test_states_are_read_and_updated_across_runs():
    @mb.program(
        input_specs=[mb.TensorSpec(shape=(3,), dtype=types.fp16), mb.StateTensorSpec(shape=(3,), dtype=types.fp16)],
        opset_version=ct.target.iOS18,
    )
    def program(x, acc):
        total = mb.add(x=mb.read_state(input=acc), y=x)
        mb.coreml_update_state(state=acc, value=total)
        return mb.mul(x=total, y=np.float16(2.0))

    interpreter = MILProgram(program)
    assert interpreter.state_names == ["acc"]
    state = interpreter.initial_state()
    assert state["acc"].dtype == np.float16 and not state["acc"].any()
    x = np.array([1.0, 0.5, 2048.0], np.float16)
    for step in range(1, 4):
        (doubled,) = interpreter.run({"x": x}, state).values()
    # the state accumulates in fp16: 2048 + 2048 + 2048 = 6144 exactly, 0.5 * 3 = 1.5
    np.testing.assert_array_equal(state["acc"], np.array([3.0, 1.5, 6144.0], np.float16))
    np.testing.assert_array_equal(doubled, 2 * state["acc"])
