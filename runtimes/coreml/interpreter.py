"""A numpy reference interpreter of Core ML ML Programs, for hosts where Core ML cannot run.

It loads a saved .mlpackage through coremltools' own loaders (the MIL program and its weight
blobs) and executes the main function op by op. Each op computes from its inputs promoted to
float32 and rounds its result to the dtype the program declares for it (fp16 where the program
computes in fp16, overflowing to inf like the device), the way the device rounds after every
op; matmuls accumulate in float32 (the device may accumulate fp16 in fp16: a source of small
differences, stated, not hidden). States are read and updated like Core ML states. An op
without an implementation (``ops.OPS``) raises an error naming it; nothing is skipped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Collection

import numpy as np

from edgespike.errors import EdgespikeError
from edgespike.runtimes.coreml.ops import OPS

STATE_OPS = {"const", "read_state", "coreml_update_state"}  # handled by the interpreter itself


class MILProgram:
    """A function of an ML Program (a coremltools ``Program``; ``main`` by default), runnable with numpy."""

    def __init__(self, program, function: str = "main"):
        from coremltools.converters.mil.mil import types

        self.function = program.functions[function]
        self.state_names = [name for name, var in self.function.inputs.items() if types.is_state(var.sym_type)]
        self.output_names = [var.name for var in self.function.outputs]
        self.last_uses = _last_uses(self.function)
        unknown = sorted({op.op_type for op in self.function.operations} - set(OPS) - STATE_OPS)
        if unknown:
            raise EdgespikeError(
                f"mil interpreter: no implementation of op(s) {', '.join(unknown)}; "
                "add them to edgespike.runtimes.coreml.ops.OPS or run the model with Core ML on macOS"
            )

    @classmethod
    def load(cls, package: str | Path, function: str = "main") -> "MILProgram":
        """``function`` of a saved .mlpackage (``read``)."""
        return cls(read(package), function)

    def initial_state(self) -> dict[str, np.ndarray]:
        """Zeros for every state, in the state's declared dtype (Core ML states start zeroed)."""
        from coremltools.converters.mil.mil.types import nptype_from_builtin

        inputs = self.function.inputs
        return {
            name: np.zeros(inputs[name].shape, nptype_from_builtin(inputs[name].dtype))
            for name in self.state_names
        }

    def run(self, inputs: dict[str, np.ndarray], state: dict[str, np.ndarray], keep: Collection[str] = ()) -> dict[str, np.ndarray]:
        """Execute once; ``state`` is read and updated in place, like a Core ML state.

        Returns the program's outputs and the intermediate values named in ``keep``.
        """
        from coremltools.converters.mil.mil.types import nptype_from_builtin

        env: dict[str, object] = dict(inputs)
        kept = {*self.output_names, *keep}

        def value(var):
            if isinstance(var, (list, tuple)):
                return [value(v) for v in var]
            return env[var.name] if var.name in env else var.val

        with np.errstate(over="ignore"):  # fp16 overflow rounds to inf, as on the device
            for index, op in enumerate(self.function.operations):
                for name in self.last_uses.get(index - 1, ()):  # values no later op reads: freed (a 1B program's weights)
                    if name not in kept:
                        env.pop(name, None)
                out = op.outputs[0]  # every op but split has exactly one output
                if op.op_type == "const":
                    env[out.name] = out.val
                    continue
                if op.op_type == "read_state":
                    env[out.name] = state[op.inputs["input"].name]
                    continue
                args = {name: value(var) for name, var in op.inputs.items()}
                if op.op_type == "coreml_update_state":
                    name = op.inputs["state"].name
                    state[name] = np.asarray(args["value"], state[name].dtype)
                    env[out.name] = state[name]
                    continue
                result = OPS[op.op_type](**{name: _promote(arg) for name, arg in args.items()})
                results = result if len(op.outputs) > 1 else (result,)
                for var, array in zip(op.outputs, results, strict=True):
                    env[var.name] = np.asarray(array).astype(nptype_from_builtin(var.dtype))
        return {name: env[name] for name in (*self.output_names, *keep)}


def _last_uses(function) -> dict[int, list[str]]:
    """op index -> the values (by name) that op is the last to read."""
    last: dict[str, int] = {}

    def note(var, index):
        for v in var if isinstance(var, (list, tuple)) else (var,):
            last[v.name] = index

    for index, op in enumerate(function.operations):
        for var in op.inputs.values():
            note(var, index)
    uses: dict[int, list[str]] = {}
    for name, index in last.items():
        uses.setdefault(index, []).append(name)
    return uses


def _promote(arg):
    """float16 arrays (also inside lists, e.g. concat's values) to float32; the rest as is."""
    if isinstance(arg, list):
        return [_promote(a) for a in arg]
    if isinstance(arg, np.ndarray) and arg.dtype == np.float16:
        return arg.astype(np.float32)
    return arg


def read(package: str | Path):
    """The coremltools ``Program`` of a saved .mlpackage (program and weight blobs), read with its own loaders."""
    import coremltools as ct
    from coremltools.converters.mil.frontend.milproto.load import load as load_mil

    try:
        mlmodel = ct.models.MLModel(str(package), skip_model_load=True)
        spec = mlmodel.get_spec()
        program = load_mil(model_spec=spec, specification_version=spec.specificationVersion, file_weights_dir=mlmodel.weights_dir)
    except Exception as err:  # coremltools raises bare Exception/RuntimeError/OSError for a damaged package
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise EdgespikeError(f"cannot read the Core ML package {package}: {first}; re-export the model") from None
    return program
