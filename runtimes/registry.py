"""Runtimes by name. A runtime opens an artifact dir and returns a Session that owns the
carried state: ``step(token_id) -> logits[V]`` (numpy float32), ``reset()``, and, where the
artifact has a prefill entry (the manifest's ``prefill``), ``prefill_chunk(token_ids)`` for
exactly ``prefill.tokens`` of them in one call; ``prefill(session, ids)`` drives either."""

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
NO_PREFILL_ENTRY = "exported before edgespike had prefill: its prompt runs token by token; export it again for a one-call prefill"


def prefill_chunk_tokens(session: Session) -> int:
    """How many tokens one ``prefill_chunk`` call takes (0: the session has no prefill entry)."""
    entry = session.manifest.get("prefill") or {}
    return entry.get("tokens", 0) if hasattr(session, "prefill_chunk") else 0


def prefill_note(session: Session) -> str | None:
    """Why ``session`` runs a prompt token by token, or None where it prefills in chunks."""
    if prefill_chunk_tokens(session):
        return None
    if "prefill" not in session.manifest and "target" in session.manifest:
        return NO_PREFILL_ENTRY
    return "its prompt runs token by token: the artifact has no prefill entry (a target without one, or --prefill-tokens 0)"


def prefill(session: Session, tokens: list[int]) -> np.ndarray:
    """The logits after ``tokens``, the state carried: whole chunks through the session's prefill entry,
    the rest (all of them, without one) step by step."""
    if not tokens:
        raise EdgespikeError("nothing to prefill: the prompt encodes to no tokens")
    for token in tokens:  # refused up front, nothing run: a bad id, a prompt past max_seq_len
        check_token(token, session.manifest["vocab_size"])
    position_inputs(session.manifest, getattr(session, "position", 0), len(tokens))
    chunk, done, logits = prefill_chunk_tokens(session), 0, None
    while chunk and len(tokens) - done >= chunk:
        logits = session.prefill_chunk(tokens[done : done + chunk])
        done += chunk
    for token in tokens[done:]:
        logits = session.step(token)
    return logits


def register_runtime(name: str, opener: Callable[[Path, dict], Session], override: bool = False) -> None:
    if name in RUNTIMES and not override:
        raise ValueError(f"runtime {name!r} is already registered; pass override=True to replace it")
    RUNTIMES[name] = opener


def check_token(token: int, vocab_size: int) -> None:
    if not 0 <= token < vocab_size:
        raise EdgespikeError(f"token id {token} is outside the vocabulary [0, {vocab_size})")


def position_inputs(manifest: dict, position: int, tokens: int = 1) -> dict[str, np.ndarray]:
    """The ``position`` input of a step (of ``tokens`` tokens) that takes one (see ``edgespike.capture``), else nothing."""
    spec = next((spec for spec in manifest.get("inputs", ()) if spec["name"] == "position"), None)
    if spec is None:
        return {}
    if position + tokens > manifest["max_seq_len"]:
        raise EdgespikeError(
            f"position {position + tokens - 1} is past the model's max_seq_len {manifest['max_seq_len']}; "
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
