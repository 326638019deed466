"""onnxruntime: runs model.onnx with the state fed back (``next_state.<n>`` -> ``state.<n>``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgespike.runtimes.registry import check_token, missing_runtime, position_inputs, register_runtime


class OnnxSession:
    def __init__(self, directory: Path, manifest: dict, extra_outputs: tuple[str, ...] = ()):
        try:
            import onnx
            import onnxruntime as ort
        except ImportError:
            raise missing_runtime("onnxruntime", "onnxruntime") from None
        self.manifest = manifest
        self.runtime = f"onnxruntime {ort.__version__} (CPU)"
        model = onnx.load(str(directory / manifest["model_file"]), load_external_data=False)  # large weights stay on disk
        if extra_outputs:  # intermediate values: the LIF spikes, for validation
            model.graph.output.extend(onnx.helper.make_empty_tensor_value_info(name) for name in extra_outputs)
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.add_session_config_entry("session.model_external_initializers_file_folder_path", str(directory))
        self.session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        self.names = [spec["name"] for spec in manifest["states"]]
        self.last_spikes: list[np.ndarray] = []  # the extra outputs of the last step
        self.reset()

    def reset(self) -> None:
        self.state = {f"state.{spec['name']}": np.zeros(spec["shape"], np.float32) for spec in self.manifest["states"]}
        self.position = 0

    def set_state(self, values: dict[str, np.ndarray]) -> None:
        """Overwrite the carried state (by the manifest's state names)."""
        self.state = {f"state.{name}": np.asarray(values[name], np.float32) for name in self.names}

    def step(self, token: int) -> np.ndarray:
        check_token(token, self.manifest["vocab_size"])
        feed = {"tokens": np.array([[token]], dtype=np.int64), **position_inputs(self.manifest, self.position), **self.state}
        outputs = self.session.run(None, feed)
        self.position += 1
        n = len(self.names)
        self.state = {f"state.{name}": value for name, value in zip(self.names, outputs[1 : 1 + n])}
        self.last_spikes = outputs[1 + n :]
        return outputs[0][0]


register_runtime("onnxruntime", OnnxSession)
