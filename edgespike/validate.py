"""Parity of an exported artifact with the eager reference, on held-out text.

Both run the same tokens one at a time with their state carried (a rollout, never a single
step: a dropped state update only shows from the second token on), then each continues
greedily from its own predictions. Recorded (manifest ``validation``):

    max_abs_logit_diff   over every teacher-forced step
    top1_agreement       fraction of steps whose argmax agrees
    greedy_match         the GREEDY_TOKENS greedy continuations are identical
    spike_flip_rate      fraction of LIF spikes that differ, where the runtime exposes them
                         (None, with a note, where it does not)

Core ML cannot execute on Linux: there the package is checked structurally (states, 2-bit
LUT weights, expected ops) and ``runtime`` says "structural"; no numeric claim is made.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from edgespike import data
from edgespike.models.base import SpikingLM
from edgespike.nn import LIF
from edgespike.runtimes import load as load_session
from edgespike.runtimes.eager import EagerSession

PROMPT_TOKENS = 64
GREEDY_TOKENS = 32


@dataclass(frozen=True)
class Tolerance:
    """What a target must meet; fp32 runtimes reproduce eager up to float reassociation."""

    max_abs_logit_diff: float = 1e-3
    min_top1_agreement: float = 0.99


TOLERANCES = {"onnx": Tolerance(), "executorch": Tolerance(), "coreml": Tolerance(max_abs_logit_diff=0.5, min_top1_agreement=0.9)}


def held_out_tokens(model: SpikingLM, count: int = PROMPT_TOKENS) -> list[int]:
    """The first ``count`` tokens of the default corpus's held-out split (random ids, seeded, without a tokenizer)."""
    if model.tokenizer is None:
        generator = torch.Generator().manual_seed(0)
        return torch.randint(0, model.config.vocab_size, (count,), generator=generator).tolist()
    _, held_out = data.split_corpus(data.read_corpus())
    return data.encode(model.tokenizer, held_out[: 20 * count])[:count].tolist()


def validate_artifact(directory: Path, manifest: dict, model: SpikingLM, tokens: list[int] | None = None) -> dict:
    """The validation record of the artifact in ``directory`` against ``model`` (eager)."""
    tokens = tokens or held_out_tokens(model)
    tolerance = TOLERANCES[manifest["target"]]
    if manifest["target"] == "coreml" and platform.system() != "Darwin":
        return validate_coreml_structure(directory, manifest)
    spike_names = _onnx_lif_spike_outputs(directory, manifest) if manifest["target"] == "onnx" else ()
    session = _open(directory, manifest, spike_names)
    reference = EagerSession(model, manifest["timesteps"])
    recorder = _SpikeRecorder(reference.step_module)

    max_diff, agree, flips, spikes_compared = 0.0, 0, 0, 0
    for token in tokens:
        ours, theirs = session.step(token), reference.step(token)
        max_diff = max(max_diff, float(np.abs(ours - theirs).max()))
        agree += int(ours.argmax() == theirs.argmax())
        if spike_names:
            for artifact_spikes, eager_spikes in zip(session.extra, recorder.take()):
                flips += int((artifact_spikes != eager_spikes).sum())
                spikes_compared += eager_spikes.size
    greedy_ours, greedy_theirs = _greedy(session, ours), _greedy(reference, theirs)
    recorder.remove()

    top1 = agree / len(tokens)
    passed = max_diff <= tolerance.max_abs_logit_diff and top1 >= tolerance.min_top1_agreement
    record = {
        "passed": passed,
        "runtime": session.runtime,
        "max_abs_logit_diff": max_diff,
        "top1_agreement": top1,
        "greedy_match": greedy_ours == greedy_theirs,
        "greedy_tokens": GREEDY_TOKENS,
        "spike_flip_rate": flips / spikes_compared if spikes_compared else None,
        "tokens": len(tokens),
        "tolerance": tolerance.__dict__,
    }
    if not spikes_compared:
        record["spike_flip_rate_note"] = f"{session.runtime} does not expose the spikes inside the graph"
    if not passed:
        record["reason"] = (
            f"max |logit diff| {max_diff:.3g} (tolerance {tolerance.max_abs_logit_diff}), "
            f"top-1 agreement {top1:.3f} (tolerance {tolerance.min_top1_agreement})"
        )
    return record


def _open(directory: Path, manifest: dict, spike_names: tuple[str, ...]):
    if spike_names:
        from edgespike.runtimes.onnxruntime import OnnxSession

        return OnnxSession(directory, manifest, extra_outputs=spike_names)
    return load_session(directory)


def _greedy(session, logits: np.ndarray) -> list[int]:
    out = []
    for _ in range(GREEDY_TOKENS):
        token = int(logits.argmax())
        out.append(token)
        logits = session.step(token)
    return out


class _SpikeRecorder:
    """The spikes of every LIF call of the eager step, in call order (= the graph's order)."""

    def __init__(self, module: torch.nn.Module):
        self.calls: list[np.ndarray] = []
        self.handles = [
            m.register_forward_hook(lambda _m, _i, out: self.calls.append(out[0].numpy().copy()))
            for m in module.modules()
            if isinstance(m, LIF)
        ]

    def take(self) -> list[np.ndarray]:
        calls, self.calls = self.calls, []
        return calls

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def _onnx_lif_spike_outputs(directory: Path, manifest: dict) -> tuple[str, ...]:
    import onnx

    model = onnx.load(str(directory / manifest["model_file"]), load_external_data=False)
    return tuple(node.output[0] for node in model.graph.node if node.domain == manifest["custom_domain"] and node.op_type == "LIF")


def validate_coreml_structure(directory: Path, manifest: dict) -> dict:
    """Structural check of a saved .mlpackage: iOS 18 states, LUT weights, expected ops."""
    import coremltools as ct
    from coremltools.converters.mil.frontend.milproto.load import load as load_mil

    mlmodel = ct.models.MLModel(str(directory / manifest["model_file"]), skip_model_load=True)
    spec = mlmodel.get_spec()
    program = load_mil(model_spec=spec, specification_version=spec.specificationVersion, file_weights_dir=mlmodel.weights_dir)
    ops = [op.op_type for op in program.functions["main"].operations]
    state_names = {state.name for state in spec.description.state}
    expected_states = {s["buffer"] for s in manifest["states"]}
    checks = {
        "states_present": state_names == expected_states,
        "state_reads_and_updates": ops.count("read_state") == len(expected_states) == ops.count("coreml_update_state"),
        "lut_weights": ops.count("constexpr_lut_to_dense") == manifest["palettized_weights"] > 0,
        "spike_ops": "greater_equal" in ops and "linear" in ops,
        "ios18": spec.specificationVersion >= 9,
    }
    failed = [name for name, ok in checks.items() if not ok]
    record = {
        "passed": not failed,
        "runtime": "structural",
        "checks": checks,
        "max_abs_logit_diff": None,
        "top1_agreement": None,
        "greedy_match": None,
        "spike_flip_rate": None,
        "tokens": 0,
        "note": "Core ML cannot execute on this host; the program was checked structurally, not numerically",
    }
    if failed:
        record["reason"] = f"structural checks failed: {', '.join(failed)}"
    return record
