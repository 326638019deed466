"""Core ML: an ML Program for iOS 18 with Core ML states and 2-bit palettized ternary weights.

The captured decode step (torch.export) goes through coremltools' ExportedProgram frontend.
The edgespike ops become MIL composites (``register_torch_op``): LIF unrolled over its T
steps, spike_encode as comparisons. A ternary spike_linear is a ``linear`` over its codes (2-bit
indices into one table (0, 1, -1), ``constexpr_lut_to_dense``), then x the per-channel scale, as
eager computes it: in fp16 compute the sums of spikes x codes are integers, exact up to 2048, and
the scale multiply stays fp32. An int8 / int4 one is one ``linear`` whose weight is the codes x
scale (``constexpr_blockwise_shift_scale``). The carried state buffers become Core ML states
(``StateType`` named after the buffer). Core ML states are fp16 only, so by default each float
state is an fp16x2 pair (``edgespike.quant.state``: hi and ``__lo`` states, read as hi + lo),
which keeps the trained fp32 dynamics; ``--state-precision fp16`` keeps one fp16 state each.
Compute is fp32 by default; ``--precision fp16`` runs the weight-reading ops (linear, matmul)
in fp16 for the Neural Engine, the state arithmetic staying fp32. A second output, ``spike_rates``
[B, P], gives the fraction of each LIF population's neurons x timesteps that fired for the
token (the iOS app's live spike view); the manifest names the P populations.

Prefill: the package has two functions, ``main`` (the decode step, its default) and ``prefill``
(the same step over ``prefill.tokens`` tokens, logits only), converted separately, sharing each
ternary weight's 2-bit indices, and merged in memory as ``save_multifunction`` merges packages, equal
weights stored once; both declare the same states, so one ``MLState`` carries the sequence through
either (``MLModel(..., function_name="prefill")``).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from pathlib import Path

import numpy as np

from edgespike.capture import POSITION, DecodeStep, export_step
from edgespike.exporters.registry import ExportOptions, prefill_tokens, register_exporter, step_io
from edgespike.quant.state import check_state_precision

log = logging.getLogger(__name__)

MODEL_FILE = "model.mlpackage"
CODED_SUFFIX = "_coded_weight"  # names the integer-coded (compressed) weights
SPIKES_SUFFIX = "_lif_spikes"  # names each LIF's spikes [T, ...], listed in the manifest for validation
MIN_IOS = "iOS18"  # Core ML states need iOS 18
PREFILL_FUNCTION = "prefill"  # the second function: the step over ``prefill.tokens`` tokens, the same states
# each token unrolls every LIF over T steps in the MIL program (``_register_composites``): measured on the demo,
# the export takes 203 s and 6.8 MB with 64 tokens, 43 s with 8 (without a prefill function: 1.4 MB)
PREFILL_TOKENS = 8
DEBUG_HANDLE_MAP = "executorch_debug_handle_mapping.json"
DEFAULT_STATE_PRECISION = "fp16x2"  # fp16 pairs: Core ML states are fp16, the trained dynamics are fp32


def _register_composites() -> None:
    """MIL composites of the edgespike ops (registered once per process)."""
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.frontend.torch.ops import _get_inputs
    from coremltools.converters.mil.frontend.torch.torch_op_registry import _TORCH_OPS_REGISTRY, register_torch_op

    if "edgespike::lif" in _TORCH_OPS_REGISTRY.name_to_func_mapping:
        return

    @register_torch_op(torch_alias=["edgespike::lif"])
    def edgespike_lif(context, node):
        """The op unrolled over T (``edgespike.ops.lif``'s two laws, op for op as eager computes them)."""
        inputs = _get_inputs(context, node, min_expected=6)
        current, v0, reset = inputs[0], inputs[1], str(_value(inputs[5]))
        delayed, strict = (bool(_value(inputs[i])) if len(inputs) > i else False for i in (6, 7))
        dtype = _np_dtype(current)
        beta = np.clip(_const(inputs[2], "beta", node), 0.0, 1.0).astype(dtype)
        threshold, graded = (_const(inputs[i], name, node).astype(dtype) for i, name in ((3, "threshold"), (4, "graded")))

        def fire(x):
            return mb.cast(x=(mb.greater if strict else mb.greater_equal)(x=x, y=threshold), dtype=_dtype_name(x))

        fired = fire(v0) if delayed else None  # delayed: r[t] = H(v[t-1]), the previous step's H
        v, spikes = v0, []
        for t in range(current.shape[0]):
            step_current = mb.squeeze(x=mb.slice_by_index(x=current, begin=[t] + [0] * (current.rank - 1),
                                                          end=[t + 1] + list(current.shape[1:])), axes=[0])
            if delayed:
                kept = mb.mul(x=v, y=mb.sub(x=dtype(1.0), y=fired)) if reset == "zero" else v
                v = mb.add(x=mb.mul(x=beta, y=kept), y=step_current)
                if reset == "subtract":
                    v = mb.sub(x=v, y=mb.mul(x=fired, y=threshold))
                fired = fire(v)
            else:
                v = mb.add(x=mb.mul(x=beta, y=v), y=step_current)
                fired = fire(v)
                if reset == "subtract":
                    v = mb.sub(x=v, y=mb.mul(x=fired, y=threshold))
                elif reset == "zero":
                    v = mb.mul(x=v, y=mb.sub(x=dtype(1.0), y=fired))
            spikes.append(fired if np.all(graded == 1) else mb.mul(x=fired, y=graded))
        all_spikes = mb.stack(values=spikes, axis=0, name=node.name + SPIKES_SUFFIX)
        context.add((all_spikes, v), torch_name=node.name)

    @register_torch_op(torch_alias=["edgespike::spike_linear"])
    def edgespike_spike_linear(context, node):
        """Ternary: linear over the codes, then x scale, as eager computes it: in fp16 compute the
        linear's sums of spikes x codes are integers, exact up to 2048, and the scale is applied in fp32."""
        spikes, codes, scale = _get_inputs(context, node, expected=3)
        dtype = _np_dtype(spikes)
        if _is_ternary(codes.val):
            sums = mb.linear(x=spikes, weight=_ternary_weight(codes.val, dtype, node.name + CODED_SUFFIX))
            context.add(mb.mul(x=sums, y=np.asarray(scale.val, np.float32).reshape(-1).astype(dtype), name=node.name))
            return
        weight = _coded_weight(codes.val, scale.val, dtype, node.name + CODED_SUFFIX)
        context.add(mb.linear(x=spikes, weight=weight, name=node.name))

    @register_torch_op(torch_alias=["edgespike::spike_encode"])
    def edgespike_spike_encode(context, node):
        from edgespike.ops import spike_range

        inputs = _get_inputs(context, node, min_expected=3)
        x, timesteps, coding = inputs[0], int(_value(inputs[1])), str(_value(inputs[2]))
        twos = bool(_value(inputs[3])) if len(inputs) > 3 else False
        low, high = spike_range(timesteps, coding, twos)
        dtype = _np_dtype(x)
        q = mb.clip(x=mb.round(x=x), alpha=dtype(low), beta=dtype(high))
        steps = []
        for t in range(timesteps):
            if coding in ("binary", "ternary"):
                within = mb.cast(x=mb.greater(x=mb.abs(x=q), y=dtype(t)), dtype=_dtype_name(x))
                spike = within if coding == "binary" else mb.mul(x=mb.sign(x=q), y=within)
            else:
                unsigned = mb.mod(x=mb.add(x=mb.mod(x=q, y=dtype(2**timesteps)), y=dtype(2**timesteps)), y=dtype(2**timesteps))
                spike = mb.mod(x=mb.floor(x=mb.real_div(x=unsigned, y=dtype(2 ** (timesteps - 1 - t)))), y=dtype(2))
            steps.append(mb.expand_dims(x=spike, axes=[0]))
        context.add(steps[0] if timesteps == 1 else mb.concat(values=steps, axis=0), torch_name=node.name)


def _is_ternary(codes: np.ndarray) -> bool:
    return codes.min() >= -1 and codes.max() <= 1


# while a package is lowered: each ternary weight's codes (a view of the frozen model's tensor, at the same
# address in every function's conversion) and its 2-bit indices, which the functions then share
_shared_indices: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}


@contextlib.contextmanager
def indices_shared_by_functions():
    """The conversions inside share each ternary weight's indices (``_ternary_weight``)."""
    try:
        yield
    finally:
        _shared_indices.clear()


def _ternary_weight(codes: np.ndarray, dtype, name: str):
    """Ternary codes [out, in] as 2-bit indices into one table (0, 1, -1) (``constexpr_lut_to_dense``);
    numpy holds a 2-bit index in a byte, so each function's own copy would cost a byte per weight."""
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.mil import types

    key = (codes.__array_interface__["data"][0], codes.shape, codes.strides)
    if key not in _shared_indices:  # the codes are kept with their indices: their address stays theirs
        _shared_indices[key] = codes, np.where(codes < 0, 2, codes).astype(types.np_uint2_dtype)
    indices = _shared_indices[key][1]
    lut = np.array([0.0, 1.0, -1.0, 0.0], dtype).reshape(1, 1, 4, 1)
    return mb.constexpr_lut_to_dense(indices=indices, lut=lut, name=name)


def _coded_weight(codes: np.ndarray, scale: np.ndarray, dtype, name: str):
    """int4 / int8 codes [out, in] x scale as Core ML stores it, made from the codes without a float
    copy of the weight: data times the per-channel scale (``constexpr_blockwise_shift_scale``)."""
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.mil import types

    scale = scale.astype(np.float32).reshape(-1, 1)  # [out, 1] or [1, 1]
    data = codes.astype(types.np_int4_dtype) if codes.min() >= -8 and codes.max() <= 7 else codes.astype(np.int8)
    return mb.constexpr_blockwise_shift_scale(data=data, scale=np.broadcast_to(scale, (codes.shape[0], 1)).astype(dtype), name=name)


def _value(arg):
    """A scalar argument's Python value (the EXIR frontend passes strings unwrapped)."""
    return arg.val if hasattr(arg, "val") else arg


def _const(var, name: str, node) -> np.ndarray:
    """A LIF parameter's constant value (a tensor known at conversion: buffer or frozen parameter)."""
    if getattr(var, "val", None) is None:
        raise ValueError(f"coreml: {name} of LIF {node.name} must be a constant tensor known at conversion, got a computed value")
    return np.asarray(var.val)


def _dtype_name(var) -> str:
    from coremltools.converters.mil.mil import types

    return "fp16" if var.dtype == types.fp16 else "fp32"


def _np_dtype(var):
    from coremltools.converters.mil.mil import types

    return np.float16 if var.dtype == types.fp16 else np.float32


def _compute_precision(precision: str, state_precision: str):
    """fp32: every op in fp32. fp16: every op in fp16, except with fp16x2 states, where only the
    weight-reading ops (linear, matmul) run in fp16 and the state arithmetic stays fp32 (an fp16
    sum hi + lo would drop lo)."""
    import coremltools as ct

    if precision == "fp32":
        return ct.precision.FLOAT32
    if state_precision == "fp16":
        return ct.precision.FLOAT16
    return ct.transform.FP16ComputePrecision(op_selector=lambda op: op.op_type in FP16_OPS)


FP16_OPS = ("linear", "matmul")
COMPRESSED_OP = {"ternary": "constexpr_lut_to_dense", "int8": "constexpr_blockwise_shift_scale", "int4": "constexpr_blockwise_shift_scale"}


def _convert(step: DecodeStep, tokens: int, spike_rates: bool, states: list, compute_precision):
    """The ML Program (one function, "main") of ``step`` at tokens [B, ``tokens``] with the Core ML ``states``;
    ``spike_rates``: the second output."""
    import coremltools as ct

    step.spike_rates = spike_rates
    try:
        program = export_step(step, tokens).run_decompositions({})
    finally:
        step.spike_rates = False
    # fuse_linear_bias would fold a layer's bias add into its linear under a new weight name,
    # hiding the coded weight from the compression below (and the spike linear's meaning)
    pipeline = ct.PassPipeline.DEFAULT
    pipeline.remove_passes({"common::fuse_linear_bias"})
    return ct.convert(
        program,
        pass_pipeline=pipeline,
        inputs=[ct.TensorType(name="tokens", shape=(step.batch, tokens), dtype=np.int32)]
        + [ct.TensorType(name=POSITION, shape=(step.batch,), dtype=np.int32)] * step.positional,
        outputs=[ct.TensorType(name=name) for name in (("logits", "spike_rates") if spike_rates else ("logits",))],
        states=states,
        minimum_deployment_target=ct.target.iOS18,
        compute_precision=compute_precision,
        skip_model_load=True,
    )


def _share_equal_consts(program) -> None:
    """Give the consts of equal type and bytes in ``program``'s functions one ``weight_id``, so the package
    stores each once, as save_multifunction's const deduplication does, whose ``np.allclose`` makes float64
    temporaries of the weights it compares (evospikenet:7b-llama's export peaked at 18.5 GB with it, 15.9 without)."""
    groups: dict[tuple, list] = {}
    for function in program.functions.values():
        for op in function.operations:
            var = op.outputs[0]
            if op.op_type == "const" and isinstance(var.val, np.ndarray):
                digest = hashlib.sha1(np.ascontiguousarray(var.val).view(np.uint8)).hexdigest()
                groups.setdefault((var.dtype, var.val.shape, digest), []).append(op)
    for weight_id, ops in enumerate(ops for ops in groups.values() if len(ops) > 1):
        for op in ops:
            op.weight_id = str(weight_id)


def _multifunction(functions: dict):
    """One model of ``functions`` (name -> converted model; "main" the default) as ``ct.utils.save_multifunction``
    makes it, equal weights deduplicated across functions, but from their programs in memory: it reads saved
    packages back, one copy of every weight per function (a byte per 2-bit index: 2 bytes per parameter)."""
    import coremltools as ct
    from coremltools.converters.mil.converter import mil_convert
    from coremltools.converters.mil.mil import Program
    from coremltools.proto import Model_pb2

    program, descriptions = Program(), []
    for name, mlmodel in functions.items():
        program.add_function(name, mlmodel._mil_program.functions["main"])
        spec = mlmodel.get_spec().description
        descriptions.append(Model_pb2.FunctionDescription(name=name, input=spec.input, output=spec.output, state=spec.state))
    _share_equal_consts(program)
    program.default_function_name = "main"
    program.skip_all_passes = program.export_as_multifunction = True
    return mil_convert(
        program, convert_to="mlprogram", convert_from="milinternal", specification_version=ct.target.iOS18,
        compute_units=ct.ComputeUnit.CPU_ONLY, skip_model_load=True,
        model_description=Model_pb2.ModelDescription(functions=descriptions, defaultFunctionName="main"),
    )


class CoreMLExporter:
    name = "coreml"
    model_file = MODEL_FILE
    runtime = "coreml"
    default_precision = "fp32"  # with fp16x2 states: the trained model (fp16: see _compute_precision)
    stored_weight_bits = None
    prefill_tokens = PREFILL_TOKENS

    def lower(self, step: DecodeStep, options: ExportOptions, staging: Path) -> dict:
        try:
            import coremltools as ct
        except ImportError as err:
            raise ImportError("the coreml target needs coremltools: pip install 'edgespike[export]'") from err
        _register_composites()
        state_precision = check_state_precision(options.state_precision or DEFAULT_STATE_PRECISION)
        if state_precision == "fp16x2":
            step.split_states()
        populations = step.spike_populations()
        states = [  # Core ML states are fp16 only, whatever the compute precision
            ct.StateType(wrapped_type=ct.TensorType(shape=spec.shape, dtype=np.float16), name=buffer)
            for spec in step.specs
            for buffer in (spec.buffer, spec.lo_buffer)
            if buffer
        ]
        compute_precision = _compute_precision(options.precision, state_precision)
        prefill = prefill_tokens(step, options, self.prefill_tokens)
        with indices_shared_by_functions():
            mlmodel = _convert(step, 1, bool(populations), states, compute_precision)
            operations = mlmodel._mil_program.functions["main"].operations
            coded = [op.name for op in operations if op.op_type in COMPRESSED_OP.values() and CODED_SUFFIX in op.name]
            spike_values = [op.outputs[0].name for op in operations if op.op_type == "stack" and SPIKES_SUFFIX in op.outputs[0].name]
            if prefill:  # one package, two functions over the same states, equal weights stored once
                mlmodel = _multifunction({"main": mlmodel, PREFILL_FUNCTION: _convert(step, prefill, False, states, compute_precision)})
            mlmodel.save(str(staging / MODEL_FILE))
        # coremltools' ExportedProgram frontend adds ExecuTorch's debug handle map (0.29 MB on the demo, a
        # fifth of the package); Core ML does not read it (the package manifest does not list it)
        (staging / MODEL_FILE / DEBUG_HANDLE_MAP).unlink(missing_ok=True)
        log.info("coreml: %d %s weights compressed, %d states, prefill of %d tokens", len(coded), step.weights, len(states), prefill)
        dtype = "float16" if options.precision == "fp16" else "float32"
        io = step_io(step, "int32", "logits", dtype)
        if populations:
            io["outputs"].append({"name": "spike_rates", "dtype": dtype, "shape": [step.batch, len(populations)],
                                  "populations": populations})
        return {
            "minimum_deployment_target": MIN_IOS,
            **io,
            "state_precision": state_precision,
            "compressed_weights": len(coded),
            "spike_values": spike_values,
            "prefill": {"tokens": prefill, "function": PREFILL_FUNCTION} if prefill else None,
        }


register_exporter(CoreMLExporter())
