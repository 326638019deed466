"""ONNX: the decode step with explicit state and the spiking ops as ``ai.edgespike`` functions.

State: torch.onnx (dynamo) drops buffer mutations (DESIGN.md), so the step is exported in
its explicit form: inputs ``tokens`` (int64 [B, 1]) and ``state.<name>``, outputs ``logits``
first, then ``next_state.<name>``.

Spiking ops: each edgespike op translates to one bare node of the domain ``ai.edgespike``
with a registered schema; after export the op's FunctionProto, whose body is standard ONNX
(a Scan for the LIF recurrence), is appended to ``model.functions``. The nodes survive, the
full ``onnx.checker`` passes, and stock onnxruntime runs the file by inlining the bodies.

Weights, each in its narrowest lossless form: ternary codes as UINT2 fields of code + 1 (four
per byte) and int4 codes as UINT4 fields of code + 8 (two per byte), read back by
DequantizeLinear (opset 25) minus that offset. The fields are laid out as onnxruntime's
``com.microsoft::MatMulNBits`` reads its weights (zero point = the offset), so the onnxruntime
session specialises each linear to that 2- / 4-bit kernel over the very same bytes
(``edgespike.runtimes.onnxruntime``); any other ONNX runtime runs the standard graph. (The
offset is subtracted as a float: onnxruntime 1.32's constant folding fails on a UINT2 zero
point.) int8 codes stay INT8; fp16 weights are FLOAT16 behind a Cast. Past 1 GB of weights they
are written to ``model.onnx.data`` beside the graph (protobuf cannot hold 2 GB), and the session
reads them there.

Prefill: ``prefill.onnx`` is the same step at tokens [B, ``prefill.tokens``] (manifest); the weights
then go to ``model.onnx.data`` whatever their size, and its initializers point into that file.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from edgespike.capture import POSITION, PREFILL_TOKENS, DecodeStep
from edgespike.exporters.registry import ExportOptions, prefill_tokens, register_exporter, step_io
from edgespike.ops.lif import RESETS
from edgespike.quant.packing import CODE_FIELDS, pack_fields

log = logging.getLogger(__name__)

DOMAIN = "ai.edgespike"
OPSET = 25  # DequantizeLinear over UINT2 needs opset 25
# protobuf cannot serialize a message past 2 GB: larger weights go to one external data file
EXTERNAL_DATA_BYTES, EXTERNAL_DATA_FILE = 1 << 30, "model.onnx.data"
MODEL_FILE = "model.onnx"
PREFILL_FILE = "prefill.onnx"  # the same step over ``prefill.tokens`` tokens (manifest), sharing model.onnx.data


class ExplicitStateStep(nn.Module):
    """DecodeStep's model with the state as inputs and outputs: (tokens, [position,] *state) -> (logits, *next_state)."""

    def __init__(self, step: DecodeStep):
        super().__init__()
        self.model, self.positional = step.model, step.positional
        self.names = [spec.name for spec in step.specs]

    def forward(self, tokens, *inputs):
        state = dict(zip(self.names, inputs[self.positional :]))
        if self.positional:
            state[POSITION] = inputs[0]
        logits, new_state = self.model(tokens, state)
        return (logits[:, -1], *(new_state[name] for name in self.names))


# --- the edgespike ops in ONNX: schema, translation, function body -----------------------------


@dataclass(frozen=True)
class OnnxOp:
    """How one edgespike op reaches ONNX."""

    name: str  # op type in the ai.edgespike domain
    torch_op: object
    inputs: tuple[tuple[str, str], ...]  # (name, type constraint)
    outputs: tuple[tuple[str, str], ...]
    types: tuple[tuple[str, tuple[str, ...]], ...]
    attributes: tuple[tuple[str, str], ...]  # (name, FLOAT|INT)
    translate: Callable
    body: Callable[[], object]  # builds the onnx.FunctionProto of the op


def _schema(op: OnnxOp):
    from onnx import defs

    Param, Attr = defs.OpSchema.FormalParameter, defs.OpSchema.Attribute
    return defs.OpSchema(
        op.name,
        DOMAIN,
        1,
        inputs=[Param(name, constraint) for name, constraint in op.inputs],
        outputs=[Param(name, constraint) for name, constraint in op.outputs],
        type_constraints=[(name, list(allowed), "") for name, allowed in op.types],
        attributes=[Attr(name, getattr(defs.OpSchema.AttrType, kind), "") for name, kind in op.attributes],
    )


def _opset():
    from onnxscript import values

    return values.Opset(DOMAIN, 1)


def _translate_lif(current, v0, beta, threshold, graded, reset, delayed_reset=False, strict=False, slope=5.0):
    return _opset().LIF(current, v0, beta, threshold, graded, reset=RESETS.index(reset),
                        delayed_reset=int(delayed_reset), strict=int(strict))


def _translate_spike_linear(spikes, codes, scale):
    return _opset().SpikeLinear(spikes, codes, scale)


def _translate_spike_encode(x, timesteps, coding, twos_complement=False):
    return _opset().SpikeEncode(
        x, timesteps=timesteps, coding=("binary", "ternary", "bitwise").index(coding), twos_complement=int(twos_complement)
    )


def _attr_constant(name: str, attr: str, kind: str):
    """A Constant node whose value is the function's attribute ``attr``."""
    from onnx import AttributeProto, helper

    value = helper.make_attribute_ref(f"value_{kind}", AttributeProto.FLOAT if kind == "float" else AttributeProto.INT)
    value.ref_attr_name = attr
    node = helper.make_node("Constant", [], [name])
    node.attribute.append(value)
    return node


def _function(name, inputs, outputs, attributes, nodes):
    from onnx import helper

    return helper.make_function(
        DOMAIN, name, inputs, outputs, nodes, [helper.make_opsetid("", OPSET)], attributes=attributes
    )


def _lif_body():
    """Both laws of ``edgespike.ops.lif`` in one Scan step, d = delayed_reset, z / s = reset is
    "zero" / "subtract", H = Greater if strict else GreaterOrEqual, beta clipped to [0, 1]:
        r = d * H(v);  w = beta * (v - z*r*v) + I - s*r*thr;  h = H(w)
        v' = w - (1 - d) * h * (z*w + s*thr);  spike = graded * h"""
    from onnx import TensorProto, helper

    mk = helper.make_node

    def fire(x, out):  # out = H(x), as float (onnxruntime's Where takes no bool values)
        return [
            mk("Greater", [x, "threshold"], [f"{out}_gt"]),
            mk("GreaterOrEqual", [x, "threshold"], [f"{out}_ge"]),
            mk("Cast", [f"{out}_gt"], [f"{out}_gt_f"], to=TensorProto.FLOAT),
            mk("Cast", [f"{out}_ge"], [f"{out}_ge_f"], to=TensorProto.FLOAT),
            mk("Where", ["strict", f"{out}_gt_f", f"{out}_ge_f"], [out]),
        ]

    step = helper.make_graph(
        [
            *fire("v", "h_prev"),
            mk("Mul", ["delayed", "h_prev"], ["r"]),
            mk("Mul", ["r", "v"], ["r_v"]),
            mk("Mul", ["zero_mode", "r_v"], ["zeroed"]),
            mk("Sub", ["v", "zeroed"], ["kept"]),
            mk("Mul", ["beta", "kept"], ["decayed"]),
            mk("Add", ["decayed", "current_t"], ["integrated"]),
            mk("Mul", ["r", "threshold"], ["r_thr"]),
            mk("Mul", ["subtract_mode", "r_thr"], ["subtracted"]),
            mk("Sub", ["integrated", "subtracted"], ["w"]),
            *fire("w", "h"),
            mk("Mul", ["zero_mode", "w"], ["zero_part"]),
            mk("Mul", ["subtract_mode", "threshold"], ["subtract_part"]),
            mk("Add", ["zero_part", "subtract_part"], ["reset_by"]),
            mk("Mul", ["h", "reset_by"], ["reset_now"]),
            mk("Mul", ["immediate", "reset_now"], ["drop"]),
            mk("Sub", ["w", "drop"], ["v_next"]),
            mk("Mul", ["graded", "h"], ["s"]),
        ],
        "lif_step",
        [helper.make_tensor_value_info("v", TensorProto.FLOAT, None), helper.make_tensor_value_info("current_t", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("v_next", TensorProto.FLOAT, None), helper.make_tensor_value_info("s", TensorProto.FLOAT, None)],
    )

    def flag(name, attr, int_value):  # name = float(attribute == int_value)
        return [
            mk("Constant", [], [f"{name}_c"], value_int=int_value),
            mk("Equal", [attr, f"{name}_c"], [f"{name}_bool"]),
            mk("Cast", [f"{name}_bool"], [name], to=TensorProto.FLOAT),
        ]

    nodes = [
        mk("Constant", [], ["zero"], value_float=0.0),
        mk("Constant", [], ["one"], value_float=1.0),
        mk("Clip", ["beta_in", "zero", "one"], ["beta"]),
        _attr_constant("reset_int", "reset", "int"),
        _attr_constant("delayed_int", "delayed_reset", "int"),
        _attr_constant("strict_int", "strict", "int"),
        *flag("subtract_mode", "reset_int", RESETS.index("subtract")),
        *flag("zero_mode", "reset_int", RESETS.index("zero")),
        *flag("delayed", "delayed_int", 1),
        mk("Sub", ["one", "delayed"], ["immediate"]),
        mk("Cast", ["strict_int"], ["strict"], to=TensorProto.BOOL),
        mk("Scan", ["v0", "current"], ["v", "spikes"], body=step, num_scan_inputs=1),
    ]
    return _function("LIF", ["current", "v0", "beta_in", "threshold", "graded"], ["spikes", "v"],
                     ["reset", "delayed_reset", "strict"], nodes)


def _spike_linear_body():
    """y = MatMul(spikes, Transpose(Cast(codes))) * scale."""
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("Cast", ["codes"], ["codes_f"], to=TensorProto.FLOAT),
        helper.make_node("Transpose", ["codes_f"], ["codes_t"], perm=[1, 0]),
        helper.make_node("MatMul", ["spikes", "codes_t"], ["counts"]),
        helper.make_node("Mul", ["counts", "scale"], ["y"]),
    ]
    return _function("SpikeLinear", ["spikes", "codes", "scale"], ["y"], [], nodes)


def _spike_encode_body():
    """Clamp(Round(x)) to the coding's range, then per step t (as a leading axis):
    binary: t < x;  ternary: sign(x) * (t < |x|);  bitwise: floor(mod(x, 2^T) / 2^(T-1-t)) mod 2.
    The coding (0 binary, 1 ternary, 2 bitwise) selects among the three with Where."""
    from onnx import TensorProto, helper

    mk = helper.make_node
    nodes = [
        _attr_constant("T_int", "timesteps", "int"),
        _attr_constant("coding", "coding", "int"),
        _attr_constant("twos_int", "twos_complement", "int"),
        mk("Cast", ["T_int"], ["T"], to=TensorProto.FLOAT),
        mk("Cast", ["twos_int"], ["twos"], to=TensorProto.FLOAT),
        mk("Constant", [], ["zero"], value_float=0.0),
        mk("Constant", [], ["one"], value_float=1.0),
        mk("Constant", [], ["two"], value_float=2.0),
        mk("Constant", [], ["axis0"], value_ints=[0]),
        mk("Constant", [], ["is_binary_c"], value_int=0),
        mk("Constant", [], ["is_ternary_c"], value_int=1),
        mk("Equal", ["coding", "is_binary_c"], ["is_binary"]),
        mk("Equal", ["coding", "is_ternary_c"], ["is_ternary"]),
        # range: binary [0, T], ternary [-T, T], bitwise [0, 2^T - 1] or [-2^(T-1), 2^(T-1) - 1]
        mk("Pow", ["two", "T"], ["levels"]),
        mk("Div", ["levels", "two"], ["half"]),
        mk("Neg", ["T"], ["neg_T"]),
        mk("Neg", ["half"], ["neg_half"]),
        mk("Mul", ["twos", "neg_half"], ["bit_low"]),
        mk("Sub", ["levels", "one"], ["unsigned_high"]),
        mk("Sub", ["half", "one"], ["signed_high"]),
        mk("Cast", ["twos_int"], ["twos_bool"], to=TensorProto.BOOL),
        mk("Where", ["twos_bool", "signed_high", "unsigned_high"], ["bit_high"]),
        mk("Where", ["is_ternary", "neg_T", "bit_low"], ["low_tb"]),
        mk("Where", ["is_binary", "zero", "low_tb"], ["low"]),
        mk("Where", ["is_binary", "T", "bit_high"], ["high_b"]),
        mk("Where", ["is_ternary", "T", "high_b"], ["high"]),
        mk("Round", ["x"], ["rounded"]),
        mk("Max", ["rounded", "low"], ["above"]),
        mk("Min", ["above", "high"], ["q"]),
        # steps t = 0..T-1 as [T, 1, ..., 1] against q unsqueezed to [1, ...]
        mk("Range", ["zero", "T", "one"], ["steps_1d"]),
        mk("Shape", ["q"], ["q_shape"]),
        mk("Size", ["q_shape"], ["q_rank"]),
        mk("Constant", [], ["minus_one"], value_ints=[-1]),
        mk("Reshape", ["q_rank", "minus_one"], ["q_rank_1d"]),
        mk("ConstantOfShape", ["q_rank_1d"], ["ones_i"], value=helper.make_tensor("v", TensorProto.INT64, [1], [1])),
        mk("Concat", ["minus_one", "ones_i"], ["steps_shape"], axis=0),
        mk("Reshape", ["steps_1d", "steps_shape"], ["steps"]),
        mk("Unsqueeze", ["q", "axis0"], ["q1"]),
        # binary / ternary
        mk("Abs", ["q1"], ["magnitude"]),
        mk("Less", ["steps", "magnitude"], ["within"]),
        mk("Cast", ["within"], ["within_f"], to=TensorProto.FLOAT),
        mk("Sign", ["q1"], ["sign"]),
        mk("Mul", ["sign", "within_f"], ["count_spikes"]),
        # bitwise
        mk("Mod", ["q1", "levels"], ["unsigned"], fmod=1),
        mk("Less", ["unsigned", "zero"], ["negative"]),
        mk("Add", ["unsigned", "levels"], ["wrapped"]),
        mk("Where", ["negative", "wrapped", "unsigned"], ["u"]),
        mk("Sub", ["T", "one"], ["top"]),
        mk("Sub", ["top", "steps"], ["place_exp"]),
        mk("Pow", ["two", "place_exp"], ["place"]),
        mk("Div", ["u", "place"], ["shifted"]),
        mk("Floor", ["shifted"], ["floored"]),
        mk("Mod", ["floored", "two"], ["bits"], fmod=1),
        mk("Where", ["is_binary", "count_spikes", "bits"], ["binary_or_bits"]),
        mk("Where", ["is_ternary", "count_spikes", "binary_or_bits"], ["spikes"]),
    ]
    return _function("SpikeEncode", ["x"], ["spikes"], ["timesteps", "coding", "twos_complement"], nodes)


def _ops() -> list[OnnxOp]:
    ops = torch.ops.edgespike
    float_t = (("T", ("tensor(float)",)),)
    return [
        OnnxOp("LIF", ops.lif.default, (("current", "T"), ("v0", "T"), ("beta", "T"), ("threshold", "T"), ("graded", "T")),
               (("spikes", "T"), ("v", "T")), float_t, (("reset", "INT"), ("delayed_reset", "INT"), ("strict", "INT")),
               _translate_lif, _lif_body),
        OnnxOp("SpikeLinear", ops.spike_linear.default, (("spikes", "T"), ("codes", "C"), ("scale", "T")), (("y", "T"),),
               float_t + (("C", ("tensor(int8)", "tensor(float)")),), (), _translate_spike_linear, _spike_linear_body),
        OnnxOp("SpikeEncode", ops.spike_encode.default, (("x", "T"),), (("spikes", "T"),), float_t,
               (("timesteps", "INT"), ("coding", "INT"), ("twos_complement", "INT")), _translate_spike_encode, _spike_encode_body),
    ]


def _register_schemas(ops: list[OnnxOp]) -> None:
    from onnx import defs

    for op in ops:
        if not defs.has(op.name, DOMAIN):
            defs.register_schema(_schema(op))


# --- weights, packed ------------------------------------------------------------------------------


FP16_MIN_ELEMENTS = 1024  # smaller float constants (norm weights, biases, scales) stay fp32


def _packed_form(tensor):
    """(kind, narrower lossless ONNX IR tensor, code offset) of initializer ``tensor``, else None: int8
    codes in {-1, 0, 1} as UINT2 fields of code + 1, in [-8, 7] as UINT4 of code + 8; float weights
    exactly fp16 as FLOAT16."""
    import onnx_ir as ir

    if tensor.dtype == ir.DataType.INT8:
        values = tensor.numpy()
        for field in CODE_FIELDS:
            if values.size and field.low <= values.min() and values.max() <= field.high:
                packed = pack_fields(values.reshape(-1).astype(np.int16) + field.offset, field.bits)  # flat, as ONNX packs
                return field.kind, ir.PackedTensor(packed, getattr(ir.DataType, field.dtype_name), shape=values.shape), field.offset
    elif tensor.dtype == ir.DataType.FLOAT and tensor.size >= FP16_MIN_ELEMENTS:
        values = tensor.numpy()
        half = values.astype(np.float16)
        if np.array_equal(half.astype(np.float32), values):
            return "fp16", ir.Tensor(half), None
    return None


def pack_initializers(model) -> dict[str, int]:
    """Store every initializer of the ONNX IR ``model`` in its narrowest lossless form
    (``_packed_form``), before any protobuf holds the wide one: integer codes as unsigned fields
    behind DequantizeLinear (scale 1) minus their offset, fp16 floats behind a Cast; returns how
    many of each."""
    import onnx_ir as ir

    graph = model.graph
    counts, nodes, constants = {"uint2": 0, "uint4": 0, "fp16": 0}, [], {}

    def constant(name: str, value: float):  # one shared scalar initializer per value
        if name not in constants:
            constants[name] = ir.Value(name=name, type=ir.TensorType(ir.DataType.FLOAT), shape=ir.Shape([]),
                                       const_value=ir.tensor(np.float32(value)))
            graph.register_initializer(constants[name])
        return constants[name]

    for name, value in list(graph.initializers.items()):
        packed = _packed_form(value.const_value)
        if packed is None:
            continue
        kind, tensor, offset = packed
        stored = ir.Value(name=f"{name}.{kind}", type=ir.TensorType(tensor.dtype), shape=tensor.shape, const_value=tensor)
        graph.register_initializer(stored)
        if kind == "fp16":
            chain = [ir.node("Cast", [stored], attributes={"to": ir.DataType.FLOAT}, name=f"cast.{name}")]
        else:
            fields = ir.node("DequantizeLinear", [stored, constant("edgespike.unit_scale", 1.0)], name=f"dequantize.{name}")
            fields.outputs[0].type = ir.TensorType(ir.DataType.FLOAT)
            offset_value = constant(f"edgespike.code_offset.{offset}", float(offset))
            chain = [fields, ir.node("Sub", [fields.outputs[0], offset_value], name=f"offset.{name}")]
        result = chain[-1].outputs[0]
        graph.initializers.pop(name)
        ir.convenience.replace_all_uses_with(value, result)
        value.const_value = None  # the wide tensor: freed with the model's own reference
        result.name, result.shape, result.type = name, value.shape, ir.TensorType(ir.DataType.FLOAT)
        nodes.extend(chain)
        counts[kind] += 1
    if nodes:
        graph.insert_before(graph[0], nodes)
    return counts


# --- the exporter -----------------------------------------------------------------------------------


def _graph(step: DecodeStep, tokens: int, ops: list[OnnxOp]):
    """The ONNX IR model of ``step`` at tokens [B, ``tokens``], its initializers packed (``pack_initializers``)
    and the functions of the ai.edgespike ops it uses appended; (model, packed counts)."""
    import onnx_ir as ir

    names = [spec.name for spec in step.specs]
    inputs = (*step.example_inputs([0] * tokens), *(v.clone() for v in step.state().values()))
    with torch.no_grad():
        program = torch.onnx.export(
            ExplicitStateStep(step).eval(),
            inputs,
            dynamo=True,
            opset_version=OPSET,
            input_names=["tokens", *[POSITION] * step.positional, *(f"state.{n}" for n in names)],
            output_names=["logits", *(f"next_state.{n}" for n in names)],
            custom_translation_table={op.torch_op: op.translate for op in ops},
            optimize=False,  # the optimizer folds Cast(int8 codes) into float weights
            verbose=False,
        )
    model = program.model  # ONNX IR: its initializers are the step's own tensors, not copies
    packed = pack_initializers(model)
    used = {node.op_type for node in model.graph if node.domain == DOMAIN}
    for op in ops:
        if op.name in used:
            function = ir.serde.deserialize_function(op.body())
            model.functions[function.identifier()] = function
    for node in model.graph:  # stack traces of the torch source: most of the file otherwise
        node.metadata_props.clear()
    return model, packed


def _share_weights(model, saved: Path) -> int:
    """Point every initializer of the ONNX IR ``model`` that ``saved`` (a graph whose weights are in an
    external data file) stores under the same name at those bytes, so a second graph reads the first's
    weights file instead of a copy; returns how many."""
    import onnx
    import onnx_ir as ir

    spans = {}
    for init in onnx.load(str(saved), load_external_data=False).graph.initializer:
        if init.data_location == onnx.TensorProto.EXTERNAL:
            spans[init.name] = {entry.key: entry.value for entry in init.external_data}
    shared = 0
    for name, value in model.graph.initializers.items():
        span = spans.get(name)
        if span is None or value.const_value is None:
            continue
        tensor = value.const_value
        if int(span["length"]) != tensor.nbytes:
            raise ValueError(f"onnx: the prefill graph's {name} differs from the decode graph's")
        value.const_value = ir.ExternalTensor(span["location"], int(span.get("offset", 0)), int(span["length"]),
                                              tensor.dtype, shape=tensor.shape, name=name, base_dir=saved.parent)
        shared += 1
    return shared


class OnnxExporter:
    name = "onnx"
    model_file = MODEL_FILE
    runtime = "onnxruntime"
    default_precision = "fp32"
    stored_weight_bits = None
    prefill_tokens = PREFILL_TOKENS

    def lower(self, step: DecodeStep, options: ExportOptions, staging: Path) -> dict:
        import onnx
        import onnx_ir as ir

        if options.precision != "fp32":
            raise ValueError(f"onnx: precision {options.precision!r} is not supported; use --precision fp32")
        ops = _ops()
        _register_schemas(ops)
        model, packed = _graph(step, 1, ops)
        prefill = prefill_tokens(step, options, self.prefill_tokens)
        # written tensor by tensor (no protobuf ever holds the weights); past 1 GB, or to be shared with the
        # prefill graph, into one external data file
        external = bool(prefill) or sum(value.const_value.nbytes for value in model.graph.initializers.values()) > EXTERNAL_DATA_BYTES
        ir.save(model, staging / MODEL_FILE, external_data=EXTERNAL_DATA_FILE if external else None, size_threshold_bytes=1024)
        used = sum(node.domain == DOMAIN for node in model.graph)
        del model
        onnx.checker.check_model(str(staging / MODEL_FILE), full_check=True)
        log.info("onnx: %d ai.edgespike nodes, initializers packed: %s", used, packed)
        if prefill:  # the same step at [B, prefill], its weights those of model.onnx.data
            model, _ = _graph(step, prefill, ops)
            shared = _share_weights(model, staging / MODEL_FILE)
            ir.save(model, staging / PREFILL_FILE)
            del model
            onnx.checker.check_model(str(staging / PREFILL_FILE), full_check=True)
            log.info("onnx: prefill graph of %d tokens, %d initializers shared with %s", prefill, shared, MODEL_FILE)
        io = step_io(step)
        states = [{"dtype": "float32", "shape": list(s.shape), "name": s.name} for s in step.specs]
        return {
            **io,
            "opset": OPSET,
            "custom_domain": DOMAIN,
            "packed_initializers": packed,
            "inputs": io["inputs"] + [{**s, "name": f"state.{s['name']}"} for s in states],
            "outputs": io["outputs"] + [{**s, "name": f"next_state.{s['name']}"} for s in states],
            "prefill": {"tokens": prefill, "model_file": PREFILL_FILE} if prefill else None,
        }


register_exporter(OnnxExporter())
