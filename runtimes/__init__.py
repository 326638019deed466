"""Runtimes, one module per runtime, behind the ``RUNTIMES`` registry.

    load(artifact_dir) -> Session   picks the runtime the manifest names, after checking the
                                    manifest's format version and every file's sha256;
                                    EDGESPIKE_<NAME>_RUNTIME=<other> (or ``runtime=``) runs the artifacts
                                    of runtime NAME on another, e.g. EDGESPIKE_NEURONCHIP_RUNTIME=sanafe
"""

from __future__ import annotations

import os
from pathlib import Path

from edgespike.artifact import read_manifest
from edgespike.errors import EdgespikeError
from edgespike.runtimes import coreml, eager, executorch, neuronchip, nir, onnxruntime  # noqa: F401  (register the runtimes)
from edgespike.runtimes.registry import RUNTIMES, Session, register_runtime

__all__ = ["RUNTIMES", "Session", "load", "register_runtime"]


def load(artifact_dir: str | Path, verify: bool = True, runtime: str | None = None) -> Session:
    directory = Path(artifact_dir)
    manifest = read_manifest(directory, verify=verify)
    name = runtime or os.environ.get(f"EDGESPIKE_{str(manifest.get('runtime')).upper()}_RUNTIME") or manifest.get("runtime")
    if name not in RUNTIMES:
        raise EdgespikeError(f"{directory} needs the runtime {name!r}, which this edgespike does not know; upgrade edgespike")
    return RUNTIMES[name](directory, manifest)
