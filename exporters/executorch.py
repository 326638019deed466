"""ExecuTorch: a .pte whose carried state is mutable buffers, linears delegated to XNNPACK.

Integer-coded linears fed by spikes of 0 and one value (ternary, int4, int8 codes; told apart on
the captured graph, ``graph_walk.spike_source``) become XNNPACK's dynamically quantized linears:
8-bit activations chosen per token (asymmetric) times the codes per output channel (scale = the
layer's). That is exact for such spikes: 0 and the spike value are both on the 8-bit grid, and
the integer sums are exact; the .pte stores ternary and int4 codes in 4 bits (XNNPACK's qc4w),
int8 codes in 8. The other linears (fed by dense values or ternary spikes: an 8-bit input would
change the model) get their codes as fp32 weights, made once for all methods, times the scale. The
edgespike ops are decomposed to core ATen with their reference kernels (the same Python that
defines them), keeping the state mutation; the portable kernels run the rest (the LIF recurrence,
comparisons, softmax).

``forward`` returns each LIF call's spikes after the logits (manifest ``spike_outputs``: how many),
so validation can follow them as it does ONNX's; a runtime that reads only the logits ignores them.
Prefill: a second method, ``prefill``, is the same step over ``prefill.tokens`` tokens (manifest).
A third, ``set_state``, writes its inputs (the manifest's states, in order) into the state, so a
runtime can restore a saved state and validation can give eager's state to the program before
every token. All methods' mutable buffers are planned into one shared slot each
(``share_mutable_buffers``), so they carry one state, given its initial zeros
(``InitializedMutableBufferPass``); XNNPACK's weights and the other constants are stored once,
keyed by their bytes' hash.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import logging
import os
from pathlib import Path

import torch
from torch import nn

from edgespike.capture import PREFILL_TOKENS, DecodeStep, export_step
from edgespike.errors import EdgespikeError
from edgespike.staging import size_text
from edgespike.exporters import graph_walk
from edgespike.exporters.registry import ExportOptions, prefill_tokens, register_exporter, step_io
from edgespike.nn.ternary_linear import TernaryLinear
from edgespike.ops.lif import lif_reference, lif_scan
from edgespike.ops.spike_encode import encode_reference

log = logging.getLogger(__name__)

MODEL_FILE = "model.pte"
PREFILL_METHOD = "prefill"
SET_STATE_METHOD = "set_state"
# a LIF over more steps (a prefill: tokens x timesteps) is one loop (torch.scan) in the program, not a copy
# of the step per step, which made lowering the demo's 16-token prefill take 154 s and 3.6 GB
UNROLLED_LIF_STEPS = 32


def _lif(current, v0, beta, threshold, graded, reset, delayed_reset=False, strict=False, slope=5.0):
    lif = lif_scan if current.shape[0] > UNROLLED_LIF_STEPS else lif_reference
    return lif(current, v0, beta, threshold, graded, reset, delayed_reset, strict)


def _spike_linear(spikes, codes, scale):
    return torch.nn.functional.linear(spikes, codes.to(spikes.dtype)) * scale.to(spikes.dtype)


def _spike_encode(x, timesteps, coding, twos_complement=False):
    return encode_reference(x, timesteps, coding, twos_complement)


DECOMPOSITIONS = {
    torch.ops.edgespike.lif.default: _lif,
    torch.ops.edgespike.spike_linear.default: _spike_linear,
    torch.ops.edgespike.spike_encode.default: _spike_encode,
}


def _on_the_8bit_grid(source) -> bool:
    """The spikes of ``source`` (a lif / spike_encode node) are 0 and one value, which per-token
    asymmetric 8-bit quantization holds exactly; ternary -1 / 0 / +1 spikes are not (±1 falls
    between its steps)."""
    if graph_walk.is_op(source, "lif"):
        return source.args[4].meta["val"].numel() == 1  # one graded spike value
    coding = source.args[2] if len(source.args) > 2 else source.kwargs.get("coding")
    return coding != "ternary"


def spike_fed_linears(step: DecodeStep) -> list[TernaryLinear]:
    """The frozen linears of ``step`` whose input is spikes of 0 and one value (on the captured graph)."""
    program = export_step(step)
    paths = set()
    for node in program.graph.nodes:
        source = graph_walk.spike_source(node.args[0]) if graph_walk.is_op(node, "spike_linear") else None
        if source is not None and _on_the_8bit_grid(source):
            paths.add(graph_walk.module_path(node))
    modules = dict(step.model.named_modules())
    return [modules[p] for p in sorted(paths) if isinstance(modules.get(p), TernaryLinear) and modules[p].mode == "frozen"]


# the code range a weight format's codes are declared in: XNNPACK stores [-8, 7] in 4 bits (qc4w)
CODE_RANGE = {"ternary": (-8, 7), "int4": (-8, 7), "int8": (-127, 127)}


def code_bits(weights: str) -> int:
    """The bits XNNPACK stores a spike-fed linear's codes of format ``weights`` in."""
    low, high = CODE_RANGE[weights]
    return (high - low).bit_length()


def _dynamically_quantized(self: TernaryLinear, x: torch.Tensor, code_range: tuple[int, int]) -> torch.Tensor:
    """A frozen TernaryLinear as the pattern XNNPACK lowers to a dynamically quantized linear."""
    ops = torch.ops.quantized_decomposed
    scale, zero_point = ops.choose_qparams_per_token_asymmetric.default(x, torch.int8)
    x = ops.dequantize_per_token.default(
        ops.quantize_per_token.default(x, scale, zero_point, -128, 127, torch.int8), scale, zero_point, -128, 127, torch.int8, x.dtype
    )
    channels = self.codes.shape[0]
    weight = ops.dequantize_per_channel.default(
        self.codes, self.scale.expand(channels), torch.zeros(channels, dtype=torch.int64), 0, *code_range, torch.int8
    )
    y = nn.functional.linear(x, weight)
    return y if self.bias is None else y + self.bias


@contextlib.contextmanager
def dynamically_quantized(linears: list[TernaryLinear], weights: str):
    """``linears`` (codes of format ``weights``) traced as XNNPACK's dynamically quantized pattern
    while the context lasts."""
    for linear in linears:
        linear.forward = functools.partial(_dynamically_quantized, linear, code_range=CODE_RANGE[weights])
    try:
        yield
    finally:
        for linear in linears:
            del linear.forward


def _folded(self: TernaryLinear, x: torch.Tensor) -> torch.Tensor:
    """A frozen TernaryLinear fed by dense values: its codes as an fp32 weight, times the scale."""
    y = nn.functional.linear(x, self.folded_codes) * self.scale
    return y if self.bias is None else y + self.bias


@contextlib.contextmanager
def folded_once(linears: list[TernaryLinear]):
    """``linears`` hold their codes as fp32 weights while the context lasts: one tensor per linear,
    which every method's program shares (constant propagation would fold a copy per method)."""
    codes = {}
    for linear in linears:
        codes[linear] = linear._buffers.pop("codes")
        linear.register_buffer("folded_codes", codes[linear].float())
        linear.forward = functools.partial(_folded, linear)
    try:
        yield
    finally:
        for linear, linear_codes in codes.items():
            del linear.forward, linear._buffers["folded_codes"]
            linear.register_buffer("codes", linear_codes)


@contextlib.contextmanager
def preprocessing_shares_weights():
    """XNNPACK preprocesses a deep copy of every partition (``copy_exported_program_for_preprocess``),
    weights included, all of them at once: a copy of every weight per method. Its preprocessing reads
    the weights without changing them, so while the context lasts the graphs are copied and the tensors
    shared, as executorch's CUDA backend does in its low-memory mode."""
    from executorch.backends.xnnpack.xnnpack_preprocess import XnnpackBackend

    def copy_sharing_tensors(cls, program, compile_specs):
        tensors = (t for values in (program.state_dict, program.constants) for t in values.values())
        return copy.deepcopy(program, {id(t): t for t in tensors if isinstance(t, torch.Tensor)})

    XnnpackBackend.copy_exported_program_for_preprocess = classmethod(copy_sharing_tensors)
    try:
        yield
    finally:
        del XnnpackBackend.copy_exported_program_for_preprocess  # BackendDetails' deep copy again


class StateWriter(nn.Module):
    """The ``set_state`` method: writes its inputs into buffers named as the step's state buffers
    (the names the shared memory plan matches), one per state spec, in order."""

    def __init__(self, step: DecodeStep):
        super().__init__()
        self.names = [spec.buffer for spec in step.specs]
        for name in self.names:
            self.register_buffer(name, torch.zeros_like(getattr(step, name)))

    def forward(self, *values: torch.Tensor) -> torch.Tensor:
        for name, value in zip(self.names, values):
            getattr(self, name).copy_(value)
        return torch.zeros(())

    def example_inputs(self) -> tuple[torch.Tensor, ...]:
        return tuple(torch.zeros_like(getattr(self, name)) for name in self.names)


def delegated_ops(program) -> int:
    """How many XNNPACK delegate calls the lowered ExportedProgram holds."""
    graph = program.graph_module.graph
    return sum(1 for node in graph.nodes if node.op == "call_function" and "executorch_call_delegate" in str(node.target))


# Lowering holds the int8 codes, the dense linears' folded fp32 weights, XNNPACK's packed copies and
# the serialized program: measured on pulse-1b (1.01B parameters, 150 of 180 linears int8, streamed),
# peak RSS 6,212,500 KiB, i.e. ~6.3 bytes per parameter (the whole export's peak: validation stays below it).
LOWERING_BYTES_PER_PARAMETER = 6


def check_fits(step: DecodeStep) -> None:
    """Refuse, before lowering, a model whose lowering cannot fit in this machine's memory."""
    parameters = step.model.num_parameters()
    needed = LOWERING_BYTES_PER_PARAMETER * parameters
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if needed > total:
        raise EdgespikeError(
            f"a {parameters / 1e9:.2f}B-parameter model needs about {size_text(needed)} of memory to lower to executorch "
            f"(its .pte holds 4- or 8-bit codes, fp32 for linears fed by dense values), this machine has {size_text(total)}; "
            "export it to onnx or coreml (2-bit weights), or lower it on a larger machine"
        )


class ExecuTorchExporter:
    name = "executorch"
    model_file = MODEL_FILE
    runtime = "executorch"
    default_precision = "fp32"
    stored_weight_bits = 4  # spike-fed ternary or int4 codes (int8 ones: 8); the dense linears' fp32 weights are not counted
    prefill_tokens = PREFILL_TOKENS

    def lower(self, step: DecodeStep, options: ExportOptions, staging: Path) -> dict:
        try:
            from executorch.backends.xnnpack.partition.config.gemm_configs import AddmmConfig, LinearConfig, MMConfig
            from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
            from executorch.exir import ExecutorchBackendConfig, to_edge_transform_and_lower
            from executorch.exir.backend.utils import is_same_node
            from executorch.exir.passes import MemoryPlanningPass
            from executorch.exir.passes.constant_prop_pass import _DEFAULT_SKIP_TARGETS, _QUANT_PRIMITIVES, constant_prop_pass
            from executorch.exir.passes.init_mutable_pass import InitializedMutableBufferPass
        except ImportError as err:
            raise ImportError("the executorch target needs executorch: pip install 'edgespike[export]'") from err
        if options.precision != "fp32":
            raise ValueError(f"executorch: precision {options.precision!r} is not supported; use --precision fp32")
        check_fits(step)
        quantized = spike_fed_linears(step)
        prefill = prefill_tokens(step, options, self.prefill_tokens)
        methods = {"forward": 1, **({PREFILL_METHOD: prefill} if prefill else {})}
        dense = [m for m in step.model.modules() if isinstance(m, TernaryLinear) and m.mode == "frozen" and m not in quantized]
        programs = {}
        # the dense linears get static fp32 weights XNNPACK can pack; the spike-fed ones keep their codes
        with torch.no_grad(), dynamically_quantized(quantized, step.weights), folded_once(dense):
            for method, tokens in methods.items():
                step.spike_outputs = method == "forward"
                program = export_step(step, tokens).run_decompositions(DECOMPOSITIONS)
                # the quantized pattern's per-channel scales and zero points, folded into the constants XNNPACK packs
                programs[method] = constant_prop_pass(program, custom_skip_targets={*_DEFAULT_SKIP_TARGETS, *_QUANT_PRIMITIVES})
            step.spike_outputs = False
        spike_outputs = len(programs["forward"].graph_signature.user_outputs) - 1
        writer = StateWriter(step)
        programs[SET_STATE_METHOD] = torch.export.export(writer, writer.example_inputs(), strict=False)
        mutated = sorted(programs["forward"].graph_signature.buffers_to_mutate.values())
        # XNNPACK takes the linears (DESIGN.md); delegating every elementwise op as well splits
        # the graph into one partition per stretch between LIF steps, each lowered separately
        partitioner = XnnpackPartitioner(configs=[LinearConfig, AddmmConfig, MMConfig])
        with preprocessing_shares_weights():
            edge = to_edge_transform_and_lower(programs, partitioner=[partitioner])
        del programs
        # the partitioner's is_same_node is an unbounded lru_cache of fx nodes, which (with torch's fake-tensor
        # cache, which export() empties) kept every program made on the way alive, their constants too
        is_same_node.cache_clear()
        delegates = delegated_ops(edge.exported_program("forward"))
        executorch_program = edge.to_executorch(ExecutorchBackendConfig(
            passes=[InitializedMutableBufferPass([spec.buffer for spec in step.specs])],  # the state starts at zero
            memory_planning_pass=MemoryPlanningPass(share_mutable_buffers=True),  # one state for both methods
        ))
        del edge
        with open(staging / MODEL_FILE, "wb") as file:
            executorch_program.write_to_file(file)  # its pieces as they are: ``.buffer`` joins a copy of the whole .pte
        linears = sum(isinstance(m, TernaryLinear) for m in step.model.modules())
        bits = code_bits(step.weights) if quantized else None
        log.info("executorch: %d XNNPACK delegate calls, %d mutable state buffers, %d of %d linears int%s",
                 delegates, len(mutated), len(quantized), linears, bits)
        return {
            **step_io(step),
            "mutable_buffers": mutated,
            "xnnpack_delegates": delegates,
            "linears": {f"int{bits}_codes_dynamic_int8_input": len(quantized), "fp32": linears - len(quantized)} if quantized
                       else {"fp32": linears},
            "prefill": {"tokens": prefill, "method": PREFILL_METHOD} if prefill else None,
            "set_state_method": SET_STATE_METHOD,
            "spike_outputs": spike_outputs,
        }


register_exporter(ExecuTorchExporter())
