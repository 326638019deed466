"""Exporters by target name. An exporter lowers a DecodeStep into files in a staging dir and
returns the target-specific manifest fields; ``edgespike.exporters.export`` does the rest."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from edgespike.capture import POSITION, DecodeStep

PRECISIONS = ("fp16", "fp32")


@dataclass
class ExportOptions:
    timesteps: int | None = None  # None: the model's own
    precision: str | None = None  # None: the target's default
    batch: int = 1
    chip: str | None = None  # neuronchip: a chip preset (edgespike.chip.CHIPS) or .toml path; None: loihi
    weights: str | None = None  # edgespike.quant.weights format; None: the model's default
    state_precision: str | None = None  # coreml: fp16 or fp16x2 (edgespike.quant.state); None: fp16x2
    prefill_tokens: int | None = None  # the prefill entry's length; None: the target's ``prefill_tokens``, 0: none


class Exporter(Protocol):
    name: str
    model_file: str  # file or package the runtime opens, relative to the artifact dir
    runtime: str  # the runtime that executes it (edgespike.runtimes.RUNTIMES)
    default_precision: str
    stored_weight_bits: int | None  # the fewest bits a linear's weight takes in the artifact, None: its format's (``expected_bytes``)
    prefill_tokens: int  # its prefill entry's default length (a prompt runs in chunks of it, the rest token by token); 0: none

    def lower(self, step: DecodeStep, options: ExportOptions, staging: Path) -> dict: ...


def expected_bytes(step: DecodeStep, stored_weight_bits: int | None) -> int:
    """About an artifact's size, known before lowering: each linear's weight at its format's width
    (``WEIGHT_BITS``) or the target's narrowest, whichever is wider; every other tensor at 4 bytes."""
    from edgespike.nn.ternary_linear import TernaryLinear
    from edgespike.quant.weights import WEIGHT_BITS

    linears = sum(m.out_features * m.in_features for m in step.model.modules() if isinstance(m, TernaryLinear))
    bits = max(stored_weight_bits or 0, WEIGHT_BITS[step.weights])
    return linears * bits // 8 + 4 * (step.model.num_parameters() - linears)


def step_io(step: DecodeStep, token_dtype: str = "int64", logits: str = "logits", logits_dtype: str = "float32") -> dict:
    """The manifest's ``inputs``/``outputs`` of a decode step: tokens [B, 1] (+ position [B], with
    ``max_seq_len``) in, logits [B, V] out."""
    io = {
        "inputs": [{"name": "tokens", "dtype": token_dtype, "shape": [step.batch, 1]}],
        "outputs": [{"name": logits, "dtype": logits_dtype, "shape": [step.batch, step.model.config.vocab_size]}],
    }
    if step.positional:
        io["inputs"].append({"name": POSITION, "dtype": token_dtype, "shape": [step.batch]})
        io["max_seq_len"] = step.model.config.max_seq_len
    return io


def prefill_tokens(step: DecodeStep, options: ExportOptions, default: int) -> int:
    """The length of the prefill entry to export (0: none): ``options.prefill_tokens``, or the target's
    ``default`` cut to the model's ``max_seq_len``."""
    from edgespike.errors import EdgespikeError

    limit = step.model.config.max_seq_len if step.positional else None
    if options.prefill_tokens is None:
        return min(default, limit or default)
    if options.prefill_tokens < 0 or (limit and options.prefill_tokens > limit):
        raise EdgespikeError(f"--prefill-tokens must be in [0, {limit or 'any'}] (0: no prefill entry), got {options.prefill_tokens}")
    return options.prefill_tokens


EXPORTERS: dict[str, Exporter] = {}


def register_exporter(exporter: Exporter, override: bool = False) -> None:
    if exporter.name in EXPORTERS and not override:
        raise ValueError(f"exporter {exporter.name!r} is already registered; pass override=True to replace it")
    EXPORTERS[exporter.name] = exporter
