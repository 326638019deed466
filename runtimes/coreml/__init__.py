"""Core ML: coremltools' own predict on macOS; elsewhere the numpy MIL reference interpreter
(``interpreter``), which says so in its ``runtime`` name and in the log."""

from __future__ import annotations

import logging
import platform
from pathlib import Path

import numpy as np

from edgespike.quant.state import split_state
from edgespike.runtimes.registry import check_token, missing_runtime, position_inputs, register_runtime

log = logging.getLogger(__name__)


def state_buffers(manifest: dict, values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The fp16 Core ML states holding ``values`` (by state name): one each, or an fp16x2 pair's
    hi and lo halves (``edgespike.quant.state``)."""
    buffers = {}
    for spec in manifest["states"]:
        value = np.asarray(values[spec["name"]], dtype=np.float32)
        if spec.get("lo_buffer"):
            buffers[spec["buffer"]], buffers[spec["lo_buffer"]] = split_state(value)
        else:
            buffers[spec["buffer"]] = value.astype(np.float16)
    return buffers


class MILInterpreterSession:
    """Runs the package's ML Program with numpy; ``last_spikes`` holds the LIF spikes of the
    last step (the values the manifest's ``spike_values`` names, in graph order)."""

    runtime = "mil-interpreter"

    def __init__(self, directory: Path, manifest: dict):
        from edgespike.runtimes.coreml.interpreter import MILProgram, read

        self.manifest = manifest
        program = read(directory / manifest["model_file"])
        prefill = (manifest.get("prefill") or {}).get("function")
        self.program = MILProgram(program)
        self.prefill_program = MILProgram(program, prefill) if prefill else None
        self.output = manifest["outputs"][0]["name"]
        self.spike_values = tuple(manifest.get("spike_values", ()))
        self.last_spikes: list[np.ndarray] = []
        self.reset()

    def reset(self) -> None:
        self.state = self.program.initial_state()
        self.position = 0

    def set_state(self, values: dict[str, np.ndarray]) -> None:
        """Overwrite the carried state (by the manifest's state names), rounded as the states hold it."""
        for buffer, value in state_buffers(self.manifest, values).items():
            self.state[buffer] = value.astype(self.state[buffer].dtype)

    def step(self, token: int) -> np.ndarray:
        check_token(token, self.manifest["vocab_size"])
        inputs = {"tokens": np.array([[token]], dtype=np.int32), **position_inputs(self.manifest, self.position)}
        values = self.program.run(inputs, self.state, keep=self.spike_values)
        self.position += 1
        self.last_spikes = [values[name] for name in self.spike_values]
        return np.asarray(values[self.output], dtype=np.float32)[0]

    def prefill_chunk(self, tokens: list[int]) -> np.ndarray:
        inputs = {"tokens": np.array([tokens], dtype=np.int32), **position_inputs(self.manifest, self.position, len(tokens))}
        values = self.prefill_program.run(inputs, self.state)
        self.position += len(tokens)
        return np.asarray(values[self.output], dtype=np.float32)[0]


class CoreMLSession:
    def __init__(self, directory: Path, manifest: dict):
        import coremltools as ct

        self.manifest = manifest
        self.runtime = f"Core ML via coremltools {ct.__version__}"
        path, units = str(directory / manifest["model_file"]), ct.ComputeUnit.CPU_AND_GPU
        self.model = ct.models.MLModel(path, compute_units=units)
        prefill = (manifest.get("prefill") or {}).get("function")
        self.prefill_model = ct.models.MLModel(path, compute_units=units, function_name=prefill) if prefill else None
        self.output = manifest["outputs"][0]["name"]
        self.reset()

    def reset(self) -> None:
        self.state = self.model.make_state()
        self.position = 0

    def set_state(self, values: dict[str, np.ndarray]) -> None:
        """Overwrite the carried state (by the manifest's state names); Core ML states are fp16."""
        for buffer, value in state_buffers(self.manifest, values).items():
            self.state.write_state(buffer, value)

    def step(self, token: int) -> np.ndarray:
        check_token(token, self.manifest["vocab_size"])
        inputs = {"tokens": np.array([[token]], dtype=np.int32), **position_inputs(self.manifest, self.position)}
        out = self.model.predict(inputs, state=self.state)
        self.position += 1
        return np.asarray(out[self.output], dtype=np.float32)[0]

    def prefill_chunk(self, tokens: list[int]) -> np.ndarray:
        """The prefill function over the decode function's MLState (one state serves both functions)."""
        inputs = {"tokens": np.array([tokens], dtype=np.int32), **position_inputs(self.manifest, self.position, len(tokens))}
        out = self.prefill_model.predict(inputs, state=self.state)
        self.position += len(tokens)
        return np.asarray(out[self.output], dtype=np.float32)[0]


def open_coreml(directory: Path, manifest: dict):
    try:
        import coremltools  # noqa: F401  (both sessions read the package with it)
    except ImportError:
        raise missing_runtime("coreml", "coremltools") from None
    if platform.system() == "Darwin":
        return CoreMLSession(directory, manifest)
    log.info("Core ML cannot run on %s: running %s with the numpy MIL reference interpreter", platform.system(), directory)
    return MILInterpreterSession(directory, manifest)


register_runtime("coreml", open_coreml)
