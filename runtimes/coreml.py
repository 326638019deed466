"""Core ML: coremltools' own predict on macOS; elsewhere the numpy MIL reference interpreter
(``mil_interpreter``), which says so in its ``runtime`` name."""

from __future__ import annotations

import platform
from pathlib import Path

import numpy as np

from edgespike.runtimes.registry import check_token, missing_runtime, register_runtime


class MILInterpreterSession:
    def __init__(self, directory: Path, manifest: dict):
        from edgespike.runtimes.mil_interpreter import MILProgram

        self.manifest = manifest
        self.runtime = f"mil-interpreter (numpy reference of the ML Program; Core ML cannot run on {platform.system()})"
        self.program = MILProgram(directory / manifest["model_file"])
        self.reset()

    def reset(self) -> None:
        self.state = self.program.initial_state()

    def step(self, token: int) -> np.ndarray:
        check_token(token, self.manifest["vocab_size"])
        outputs = self.program.run({"tokens": np.array([[token]], dtype=np.int32)}, self.state)
        return np.asarray(next(iter(outputs.values())), dtype=np.float32)[0]


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

    def step(self, token: int) -> np.ndarray:
        check_token(token, self.manifest["vocab_size"])
        out = self.model.predict({"tokens": np.array([[token]], dtype=np.int32)}, state=self.state)
        return np.asarray(out[self.output], dtype=np.float32)[0]


def open_coreml(directory: Path, manifest: dict):
    try:
        import coremltools  # noqa: F401  (both sessions read the package with it)
    except ImportError:
        raise missing_runtime("coreml", "coremltools") from None
    session = CoreMLSession if platform.system() == "Darwin" else MILInterpreterSession
    return session(directory, manifest)


register_runtime("coreml", open_coreml)
