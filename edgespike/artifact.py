"""The artifact dir both exporters (writing) and runtimes (reading) agree on.

    <artifact>/
      model.mlpackage | model.onnx | model.pte     the target's model file(s)
      tokenizer.json                               when the model has one
      tokenizer_config.json                        with it: tokenizer_class etc. (swift-transformers needs it)
      manifest.json                                this module's schema, FORMAT_VERSION

The manifest records what a runtime needs to drive the model without the source model
(I/O and state names, shapes, dtypes, timesteps), the sha256 of every other file, and the
validation result. ``staged`` writes into a temporary sibling dir that is renamed into
place only when complete, so an interrupted export leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from edgespike.errors import EdgespikeError

FORMAT_VERSION = 1
MANIFEST = "manifest.json"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def checksums(directory: Path) -> dict[str, str]:
    """sha256 of every file under ``directory`` except the manifest, by relative path."""
    return {
        str(path.relative_to(directory)): sha256_file(path)
        for path in sorted(directory.rglob("*"))
        if path.is_file() and path.name != MANIFEST
    }


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


def model_bytes(directory: Path, manifest: dict[str, Any]) -> int:
    """Bytes of the model itself: every file the manifest lists but the tokenizer's."""
    return sum((Path(directory) / name).stat().st_size for name in manifest["files"] if name not in TOKENIZER_FILES)


def write_manifest(directory: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Write ``manifest`` with the format version and every file's sha256; the manifest written."""
    manifest = {"format_version": FORMAT_VERSION, **manifest, "files": checksums(directory)}
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def read_manifest(directory: str | Path, verify: bool = True) -> dict[str, Any]:
    """The manifest of an artifact dir, its format version and (``verify``) checksums checked."""
    directory = Path(directory)
    path = directory / MANIFEST
    if not path.is_file():
        raise EdgespikeError(f"{directory} is not an edgespike artifact (no {MANIFEST}); export one with `edgespike export`")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise EdgespikeError(f"{path} is not valid JSON: {err}") from None
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise EdgespikeError(
            f"{path} has format_version {version!r}; this edgespike reads version {FORMAT_VERSION}: re-export the model"
        )
    if verify:
        expected = manifest.get("files", {})
        actual = checksums(directory)
        for name, digest in expected.items():
            if name not in actual:
                raise EdgespikeError(f"artifact file {directory / name} is missing; re-export the model")
            if actual[name] != digest:
                raise EdgespikeError(f"artifact file {directory / name} does not match its sha256 in the manifest; re-export the model")
    return manifest


@contextlib.contextmanager
def staged(destination: Path, force: bool) -> Iterator[Path]:
    """A temporary dir beside ``destination``, renamed onto it when the block succeeds."""
    destination = Path(destination)
    if destination.exists() and not force:
        raise EdgespikeError(f"{destination} already exists; pass --force to replace it or choose another --out")
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}.partial-", dir=destination.parent))
    try:
        yield staging
        if destination.exists():
            shutil.rmtree(destination)
        staging.rename(destination)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
