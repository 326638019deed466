"""Runtimes, one module per runtime, behind the ``RUNTIMES`` registry.

    load(artifact_dir, runtime=None) -> Session   the runtime the manifest names, or ``runtime`` (one of
                                                  ``pick``: the manifest's or one of its ``ALTERNATIVES``),
                                                  after checking the manifest's format version and every file's
                                                  sha256; ``edgespike generate|bench --runtime NAME`` passes it.
                                                  EDGESPIKE_<NAME>_RUNTIME=<other> picks it where a command has no
                                                  --runtime (validate), e.g. EDGESPIKE_NEURONCHIP_RUNTIME=sanafe
"""

from __future__ import annotations

import os
from pathlib import Path

from edgespike.artifact import read_manifest
from edgespike.errors import EdgespikeError
from edgespike.runtimes import coreml, eager, executorch, neuronchip, nir, onnxruntime  # noqa: F401  (register the runtimes)
from edgespike.runtimes.registry import RUNTIMES, Session, register_runtime

__all__ = ["ALTERNATIVES", "RUNTIMES", "Session", "load", "pick", "register_runtime"]

ALTERNATIVES: dict[str, tuple[str, ...]] = {  # runtime -> others that run its artifacts
    "neuronchip": ("sanafe",),
    "onnxruntime": ("onnxruntime-standard",),  # the file as written, without the MatMulNBits specialisation
}


def pick(directory: Path, manifest: dict, runtime: str | None = None) -> str:
    """The runtime that runs an artifact: ``runtime``, else EDGESPIKE_<NAME>_RUNTIME, else the manifest's NAME;
    one of NAME and its ``ALTERNATIVES`` (a one-line error listing them otherwise)."""
    own = str(manifest.get("runtime"))
    allowed = (own, *ALTERNATIVES.get(own, ()))
    name = runtime or os.environ.get(f"EDGESPIKE_{own.upper()}_RUNTIME") or own
    if name not in allowed:
        raise EdgespikeError(f"runtime {name!r} cannot run {directory} (a {manifest.get('target')} artifact); "
                             f"choose one of {', '.join(allowed)}")  # fmt: skip
    return name


def load(artifact_dir: str | Path, verify: bool = True, runtime: str | None = None) -> Session:
    directory = Path(artifact_dir)
    manifest = read_manifest(directory, verify=verify)
    name = pick(directory, manifest, runtime)
    if name not in RUNTIMES:
        raise EdgespikeError(f"{directory} needs the runtime {name!r}, which this edgespike does not know; upgrade edgespike")
    return RUNTIMES[name](directory, manifest)
