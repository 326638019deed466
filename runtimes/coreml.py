"""Core ML: coremltools' own predict, which only macOS can run. On Linux a Core ML artifact
cannot execute here yet (the MIL reference interpreter is the planned runtime for it), and
opening one says so instead of pretending."""

from __future__ import annotations

import platform
from pathlib import Path

import numpy as np

from edgespike.errors import EdgespikeError
from edgespike.runtimes.registry import check_token, missing_runtime, register_runtime


class CoreMLSession:
    def __init__(self, directory: Path, manifest: dict):
        if platform.system() != "Darwin":
            raise EdgespikeError(
                f"Core ML models run only on macOS/iOS, and this host is {platform.system()}; "
                "validate Core ML artifacts structurally here, or run them on a Mac"
            )
        try:
            import coremltools as ct
        except ImportError:
            raise missing_runtime("coreml", "coremltools") from None
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


register_runtime("coreml", CoreMLSession)
