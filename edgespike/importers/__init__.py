"""Importers of published checkpoints, by source name: each reads a checkpoint in its
publisher's layout without executing or fully unpickling anything, checks every tensor name
and shape against the family's config, and writes an edgespike model dir.

    edgespike import slms-pulse pulse_1b_gsm8k.bin --preset pulse-1b --out models/pulse-1b
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from edgespike.errors import EdgespikeError


@dataclass
class ImportOptions:
    out: Path
    preset: str | None = None  # a preset of the family, or
    config: Path | None = None  # the publisher's architecture file
    tokenizer: Path | None = None  # tokenizer.json to carry into the model dir
    force: bool = False
    nir: object | None = None  # edgespike.importers.nir.NirOptions: the embedding and readout around a NIR graph
    notes: list[str] = field(default_factory=list)  # what the importer decided, for the user


IMPORTERS: dict[str, Callable[[Path, ImportOptions], Path]] = {}


def read_json(path: Path, what: str):
    """A publisher's JSON file, or a one-line error naming it."""
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise EdgespikeError(f"{path} is not a readable JSON file ({what}): {err}") from None


def register_importer(name: str, run: Callable[[Path, ImportOptions], Path]) -> None:
    if name in IMPORTERS:
        raise ValueError(f"importer {name!r} is already registered")
    IMPORTERS[name] = run


def import_checkpoint(source: str, path: Path, options: ImportOptions) -> Path:
    if source not in IMPORTERS:
        raise EdgespikeError(f"unknown import source {source!r}; choose one of {', '.join(IMPORTERS)}")
    if not path.exists():
        raise EdgespikeError(f"{path} does not exist; give the path of the published checkpoint")
    if options.out.exists() and not options.force:
        raise EdgespikeError(f"{options.out} already exists; pass --force to replace it or choose another --out")
    return IMPORTERS[source](path, options)


from edgespike.importers import slms_pulse  # noqa: E402,F401  (registers)
from edgespike.importers import spikingbrain  # noqa: E402,F401  (registers)
from edgespike.importers import nir  # noqa: E402,F401  (registers)
