"""ExecuTorch: a .pte whose carried state is mutable buffers, linears delegated to XNNPACK.

The edgespike ops are decomposed to core ATen with their reference kernels (the same Python
that defines them), keeping the state mutation; constant propagation turns int8 codes x scale
into static float weights, XNNPACK takes the linears and matmuls over them, and the portable
kernels run the rest (the LIF recurrence, comparisons, softmax). XNNPACK has no 2-bit weight
path, so the .pte stores float weights.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from edgespike.capture import DecodeStep, export_step
from edgespike.errors import EdgespikeError
from edgespike.staging import size_text
from edgespike.exporters.registry import ExportOptions, register_exporter, step_io
from edgespike.ops.lif import lif_reference
from edgespike.ops.spike_encode import encode_reference

log = logging.getLogger(__name__)

MODEL_FILE = "model.pte"


def _lif(current, v0, beta, threshold, graded, reset, delayed_reset=False, strict=False, slope=5.0):
    return lif_reference(current, v0, beta, threshold, graded, reset, delayed_reset, strict)


def _spike_linear(spikes, codes, scale):
    return torch.nn.functional.linear(spikes, codes.to(spikes.dtype)) * scale.to(spikes.dtype)


def _spike_encode(x, timesteps, coding, twos_complement=False):
    return encode_reference(x, timesteps, coding, twos_complement)


DECOMPOSITIONS = {
    torch.ops.edgespike.lif.default: _lif,
    torch.ops.edgespike.spike_linear.default: _spike_linear,
    torch.ops.edgespike.spike_encode.default: _spike_encode,
}


def delegated_ops(program) -> int:
    """How many XNNPACK delegate calls the lowered program holds."""
    graph = program.exported_program().graph_module.graph
    return sum(1 for node in graph.nodes if node.op == "call_function" and "executorch_call_delegate" in str(node.target))


# Lowering folds the codes into fp32 weights, which XNNPACK packs and the program serializes: measured
# on pulse-1b (1.01B parameters, streamed), peak RSS 13.9 GB, i.e. ~14 bytes per parameter.
LOWERING_BYTES_PER_PARAMETER = 14


def check_fits(step: DecodeStep) -> None:
    """Refuse, before lowering, a model whose fp32 lowering cannot fit in this machine's memory."""
    parameters = step.model.num_parameters()
    needed = LOWERING_BYTES_PER_PARAMETER * parameters
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if needed > total:
        raise EdgespikeError(
            f"executorch stores fp32 weights (XNNPACK has no 2-bit path): a {parameters / 1e9:.2f}B-parameter model makes a "
            f"{size_text(4 * parameters)} .pte and needs about {size_text(needed)} of memory to lower, this machine has "
            f"{size_text(total)}; export it to onnx or coreml (2-bit weights), or lower it on a larger machine"
        )


class ExecuTorchExporter:
    name = "executorch"
    model_file = MODEL_FILE
    runtime = "executorch"
    default_precision = "fp32"
    float_weights = True

    def lower(self, step: DecodeStep, options: ExportOptions, staging: Path) -> dict:
        try:
            from executorch.backends.xnnpack.partition.config.gemm_configs import AddmmConfig, LinearConfig, MMConfig
            from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
            from executorch.exir import to_edge_transform_and_lower
            from executorch.exir.passes.constant_prop_pass import constant_prop_pass
        except ImportError as err:
            raise ImportError("the executorch target needs executorch: pip install 'edgespike[export]'") from err
        if options.precision != "fp32":
            raise ValueError(f"executorch: precision {options.precision!r} is not supported; use --precision fp32")
        check_fits(step)
        with torch.no_grad():
            program = export_step(step).run_decompositions(DECOMPOSITIONS)
        # fold codes -> float weights, so XNNPACK sees static weights it can pack
        program = constant_prop_pass(program)
        mutated = sorted(program.graph_signature.buffers_to_mutate.values())
        # XNNPACK takes the linears (DESIGN.md); delegating every elementwise op as well splits
        # the graph into one partition per stretch between LIF steps, each lowered separately
        partitioner = XnnpackPartitioner(configs=[LinearConfig, AddmmConfig, MMConfig])
        edge = to_edge_transform_and_lower(program, partitioner=[partitioner])
        executorch_program = edge.to_executorch()
        (staging / MODEL_FILE).write_bytes(executorch_program.buffer)
        delegates = delegated_ops(edge)
        log.info("executorch: %d XNNPACK delegate calls, %d mutable state buffers", delegates, len(mutated))
        return {
            **step_io(step),
            "mutable_buffers": mutated,
            "xnnpack_delegates": delegates,
        }


register_exporter(ExecuTorchExporter())
