"""Exporters, one module per target, behind the ``EXPORTERS`` registry.

    export(model, "onnx", out_dir)  capture -> lower -> write (model files, tokenizer.json,
                                    manifest.json) -> validate (a callback, optional), all in a
                                    staging dir renamed onto ``out_dir`` only when complete.

The toolchains (coremltools, onnx, executorch) are imported inside the target that needs them.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from edgespike import __version__
from edgespike.artifact import write_manifest, staged
from edgespike.capture import decode_step, release_trace_caches
from edgespike.errors import EdgespikeError
from edgespike.exporters.registry import EXPORTERS, PRECISIONS, ExportOptions, expected_bytes, register_exporter
from edgespike.exporters import coreml, executorch, neuronchip, nir, onnx  # noqa: F401  (register the targets)
from edgespike.models.base import SpikingLM
from edgespike.staging import check_free_space

log = logging.getLogger(__name__)

__all__ = ["EXPORTERS", "ExportOptions", "ExportResult", "export", "register_exporter"]

Validator = Callable[[Path, dict], dict]  # (staged artifact dir, manifest) -> validation record


@dataclass
class ExportResult:
    target: str
    path: Path
    manifest: dict
    seconds: dict[str, float] = field(default_factory=dict)  # per stage


def export(
    model: SpikingLM,
    target: str,
    out: Path,
    options: ExportOptions | None = None,
    force: bool = False,
    source: str | None = None,
    validate: Validator | None = None,
    on_stage: Callable[[str], None] | None = None,
) -> ExportResult:
    """Export ``model`` to ``target`` at ``out``; ``source`` is how to load the model again (for bench)."""
    if target not in EXPORTERS:
        raise EdgespikeError(f"unknown target {target!r}; choose one of {', '.join(EXPORTERS)} (or all)")
    exporter = EXPORTERS[target]
    options = options or ExportOptions()
    precision = options.precision or exporter.default_precision
    if precision not in PRECISIONS:
        raise EdgespikeError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    options = dataclasses.replace(options, precision=precision)
    seconds: dict[str, float] = {}

    def stage(name: str):
        if on_stage:
            on_stage(name)
        seconds[name] = time.perf_counter()

    def done(name: str):
        seconds[name] = time.perf_counter() - seconds[name]

    stage("capture")
    step = decode_step(model, options.timesteps, options.batch, options.weights)
    done("capture")
    if step.weights == "ternary" and model.config.weights != "ternary":
        log.warning(
            "this %s model was trained with dense weights: ternarizing it after training changes what it computes "
            "(see `edgespike quantize-report`); pass --weights int8, fp16 or fp32 to keep it closer", model.config.family
        )
    check_free_space(out, expected_bytes(step, exporter.stored_weight_bits), f"the {target} artifact")
    with staged(out, force) as staging:
        stage("lower")
        try:
            fields = exporter.lower(step, options, staging)
        except (ImportError, ValueError, NotImplementedError, RuntimeError) as err:  # a missing toolchain, an op it cannot take
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise EdgespikeError(f"export to {target} failed while lowering: {first}") from err
        release_trace_caches()  # the programs traced while lowering: validation does not need them
        done("lower")
        stage("write")
        if model.tokenizer is not None:
            model.tokenizer.save(str(staging / "tokenizer.json"))
            # swift-transformers (the iOS app) refuses a folder without a tokenizer_class; the generic
            # "PreTrainedTokenizerFast" loads tokenizer.json as it is there and in HF transformers alike.
            # Its decode would otherwise rewrite " ." to "." (clean_up_tokenization_spaces defaults to true).
            special = [t.content for _, t in sorted(model.tokenizer.get_added_tokens_decoder().items()) if t.special]
            tokenizer_config = {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "clean_up_tokenization_spaces": False,
                "eos_token": special[0] if special else None,
            }
            (staging / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2) + "\n")
        config = step.model.config
        manifest = {
            "edgespike_version": __version__,
            "family": config.family,
            "config": config.to_dict(),
            "source_model": source,
            "target": target,
            "runtime": exporter.runtime,
            "model_file": exporter.model_file,
            "precision": precision,
            "weights": step.weights,
            "timesteps": config.spike.timesteps,
            "batch": options.batch,
            "vocab_size": config.vocab_size,
            "states": [spec.to_dict() for spec in step.specs],
            "prefill": None,  # no prefill entry: the target's ``prefill`` field says otherwise
            **fields,
        }
        manifest = write_manifest(staging, manifest)
        done("write")
        del step  # the frozen copy of the model: validation builds its own reference
        if validate is not None:
            stage("validate")
            manifest["validation"] = validate(staging, manifest)
            manifest = write_manifest(staging, manifest)
            done("validate")
            if not manifest["validation"]["passed"]:
                raise EdgespikeError(f"{target} artifact failed validation: {manifest['validation']['reason']}; nothing written")
    return ExportResult(target, Path(out), manifest, seconds)
