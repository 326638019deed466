"""Runtimes by name. A runtime opens an artifact dir and returns a Session that owns the
carried state: ``step(token_id) -> logits[V]`` (numpy float32), ``reset()``."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from pathlib import Path
from typing import Callable, Iterator, Protocol

import numpy as np

from edgespike.errors import EdgespikeError


class Session(Protocol):
    manifest: dict
    runtime: str  # what actually runs the model, in words (e.g. "onnxruntime 1.32.0 (CPU)")

    def step(self, token: int) -> np.ndarray: ...

    def reset(self) -> None: ...


RUNTIMES: dict[str, Callable[[Path, dict], Session]] = {}


def register_runtime(name: str, opener: Callable[[Path, dict], Session], override: bool = False) -> None:
    if name in RUNTIMES and not override:
        raise ValueError(f"runtime {name!r} is already registered; pass override=True to replace it")
    RUNTIMES[name] = opener


def check_token(token: int, vocab_size: int) -> None:
    if not 0 <= token < vocab_size:
        raise EdgespikeError(f"token id {token} is outside the vocabulary [0, {vocab_size})")


def position_inputs(manifest: dict, position: int) -> dict[str, np.ndarray]:
    """The ``position`` input of a decode step that takes one (see ``edgespike.capture``), else nothing."""
    spec = next((spec for spec in manifest["inputs"] if spec["name"] == "position"), None)
    if spec is None:
        return {}
    if position >= manifest["max_seq_len"]:
        raise EdgespikeError(
            f"position {position} is past the model's max_seq_len {manifest['max_seq_len']}; "
            "reset the session (a new sequence) or use a shorter prompt"
        )
    return {"position": np.full(spec["shape"], position, dtype=spec["dtype"])}


def missing_runtime(name: str, package: str) -> EdgespikeError:
    return EdgespikeError(f"the {name} runtime is not installed; pip install {package} (or 'edgespike[export]')")


@contextlib.contextmanager
def native_output_silenced(fd: int) -> Iterator[None]:
    """Keep a native library's own prints on ``fd`` (1 stdout, 2 stderr) off the user's terminal
    (ExecuTorch's cpuinfo probe, SANA-FE's step counter) unless edgespike logs at INFO (--verbose).
    Python exceptions still propagate."""
    if logging.getLogger("edgespike").isEnabledFor(logging.INFO):
        yield
        return
    (sys.stdout if fd == 1 else sys.stderr).flush()
    saved = os.dup(fd)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), fd)
            yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)
