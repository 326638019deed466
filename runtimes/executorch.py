"""ExecuTorch: runs model.pte through ``executorch.runtime``; the state lives in the
program's mutable buffers, shared by its methods (``forward``, ``prefill`` and ``set_state``), so
a reset reloads the program (a loaded method is cached: loading it again keeps its state)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from edgespike.errors import EdgespikeError
from edgespike.runtimes.registry import check_token, missing_runtime, native_output_silenced, position_inputs, register_runtime


class ExecuTorchSession:
    def __init__(self, directory: Path, manifest: dict):
        try:
            from executorch.runtime import Runtime  # noqa: F401  (installed?)
        except ImportError:
            raise missing_runtime("executorch", "executorch") from None
        import executorch

        self.manifest = manifest
        self.runtime = f"executorch {getattr(executorch, '__version__', '')} (XNNPACK + portable kernels)".replace("  ", " ")
        self.path = directory / manifest["model_file"]
        self.methods = ["forward", *([manifest["prefill"]["method"]] if (manifest.get("prefill") or {}).get("method") else []),
                        *([manifest["set_state_method"]] if "set_state_method" in manifest else [])]
        self.reset()

    def reset(self) -> None:
        from executorch.runtime import Runtime

        self.loaded = self.program = None  # the old program's packed weights freed before the new one packs its own
        with native_output_silenced(2):  # XNNPACK's cpuinfo probe prints to stderr while the methods load
            program = Runtime.get().load_program(self.path)
            # every method loaded before any runs: loading one (re)writes the shared state's initial zeros
            self.loaded = {name: program.load_method(name) for name in self.methods}
        self.program = program  # owns the methods' memory: kept alive with them
        self.position = 0
        self.spike_outputs: list[torch.Tensor] = []  # the last call's outputs after the logits (manifest spike_outputs)

    def _run(self, method: str, tokens: list[int]) -> np.ndarray:
        inputs = [torch.tensor([tokens], dtype=torch.long)]
        inputs += [torch.from_numpy(value) for value in position_inputs(self.manifest, self.position, len(tokens)).values()]
        self.position += len(tokens)
        outputs = self.loaded[method].execute(inputs)
        self.spike_outputs = outputs[1:]
        return outputs[0][0].numpy()

    @property
    def last_spikes(self) -> list[np.ndarray]:
        """The LIF spikes of the last call, copied out when asked (only validation reads them)."""
        return [spikes.numpy().copy() for spikes in self.spike_outputs]

    def set_state(self, values: dict[str, np.ndarray]) -> None:
        """Overwrite the carried state (by the manifest's state names) through the ``set_state`` method."""
        if "set_state_method" not in self.manifest:
            raise EdgespikeError(f"{self.path} was exported before its state could be set; export it again")
        states = [torch.from_numpy(np.asarray(values[spec["name"]], np.float32)) for spec in self.manifest["states"]]
        self.loaded[self.manifest["set_state_method"]].execute(states)

    def step(self, token: int) -> np.ndarray:
        check_token(token, self.manifest["vocab_size"])
        return self._run("forward", [token])

    def prefill_chunk(self, tokens: list[int]) -> np.ndarray:
        return self._run(self.manifest["prefill"]["method"], list(tokens))


register_runtime("executorch", ExecuTorchSession)
