"""ExecuTorch: runs model.pte through ``executorch.runtime``; the state lives in the
program's mutable buffers, so a reset reloads the method."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from edgespike.runtimes.registry import check_token, missing_runtime, native_output_silenced, position_inputs, register_runtime


class ExecuTorchSession:
    def __init__(self, directory: Path, manifest: dict):
        try:
            from executorch.runtime import Runtime
        except ImportError:
            raise missing_runtime("executorch", "executorch") from None
        import executorch

        self.manifest = manifest
        self.runtime = f"executorch {getattr(executorch, '__version__', '')} (XNNPACK + portable kernels)".replace("  ", " ")
        self.program = Runtime.get().load_program(directory / manifest["model_file"])
        self.reset()

    def reset(self) -> None:
        with native_output_silenced(2):  # XNNPACK's cpuinfo probe prints to stderr while the method loads
            self.method = self.program.load_method("forward")
        self.position = 0

    def step(self, token: int) -> np.ndarray:
        check_token(token, self.manifest["vocab_size"])
        inputs = [torch.tensor([[token]], dtype=torch.long)]
        inputs += [torch.from_numpy(value) for value in position_inputs(self.manifest, self.position).values()]
        self.position += 1
        return self.method.execute(inputs)[0][0].numpy()


register_runtime("executorch", ExecuTorchSession)
