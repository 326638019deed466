"""Core ML: coremltools' own predict on macOS; elsewhere the numpy MIL reference interpreter
(``interpreter``), which says so in its ``runtime`` name and in the log."""

from __future__ import annotations

import logging
import platform
from pathlib import Path

import numpy as np

from edgespike.runtimes.registry import check_token, missing_runtime, position_inputs, register_runtime

log = logging.getLogger(__name__)


class MILInterpreterSession:
    """Runs the package's ML Program with numpy; ``last_spikes`` holds the LIF spikes of the
    last step (the values the manifest's ``spike_values`` names, in graph order)."""

    runtime = "mil-interpreter"

    def __init__(self, directory: Path, manifest: dict):
        from edgespike.runtimes.coreml.interpreter import MILProgram

        self.manifest = manifest
        self.program = MILProgram.load(directory / manifest["model_file"])
        self.output = manifest["outputs"][0]["name"]
        self.spike_values = tuple(manifest.get("spike_values", ()))
        self.last_spikes: list[np.ndarray] = []
        self.reset()

    def reset(self) -> None:
        self.state = self.program.initial_state()
        self.position = 0

    def set_state(self, values: dict[str, np.ndarray]) -> None:
        """Overwrite the carried state (by the manifest's state names), rounded to the state's dtype."""
        for spec in self.manifest["states"]:
            self.state[spec["buffer"]] = np.asarray(values[spec["name"]]).astype(self.state[spec["buffer"]].dtype)

    def step(self, token: int) -> np.ndarray:
        check_token(token, self.manifest["vocab_size"])
        inputs = {"tokens": np.array([[token]], dtype=np.int32), **position_inputs(self.manifest, self.position)}
        values = self.program.run(inputs, self.state, keep=self.spike_values)
        self.position += 1
        self.last_spikes = [values[name] for name in self.spike_values]
        return np.asarray(values[self.output], dtype=np.float32)[0]


class CoreMLSession:
    def __init__(self, directory: Path, manifest: dict):
        import coremltools as ct

        self.manifest = manifest
        self.runtime = f"Core ML via coremltools {ct.__version__}"
        self.model = ct.models.MLModel(str(directory / manifest["model_file"]), compute_units=ct.ComputeUnit.CPU_AND_GPU)
        self.output = manifest["outputs"][0]["name"]
        self.reset()

    def reset(self) -> None:
        self.state = self.model.make_state()
        self.position = 0

    def set_state(self, values: dict[str, np.ndarray]) -> None:
        """Overwrite the carried state (by the manifest's state names); Core ML states are fp16."""
        for spec in self.manifest["states"]:
            self.state.write_state(spec["buffer"], np.asarray(values[spec["name"]], np.float16))

    def step(self, token: int) -> np.ndarray:
        check_token(token, self.manifest["vocab_size"])
        inputs = {"tokens": np.array([[token]], dtype=np.int32), **position_inputs(self.manifest, self.position)}
        out = self.model.predict(inputs, state=self.state)
        self.position += 1
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
