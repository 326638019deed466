"""The artifact dir both exporters (writing) and runtimes (reading) agree on.

    <artifact>/
      model.mlpackage | model.onnx | model.pte     the target's model file(s)
      tokenizer.json                               when the model has one
      tokenizer_config.json                        with it: tokenizer_class etc. (swift-transformers needs it)
      manifest.json                                this module's schema, FORMAT_VERSION

The manifest records what a runtime needs to drive the model without the source model
(I/O and state names, shapes, dtypes, timesteps), the sha256 of every other file, and the
validation result. ``staged`` writes into a temporary sibling dir that is renamed into
place only when complete (``edgespike.staging``: an interrupted export leaves nothing that the
next export to the same place does not remove, and two concurrent ones never mix).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any, Iterator

from edgespike.errors import EdgespikeError
from edgespike.staging import commit, new_staging

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
    """The manifest of an artifact dir, its structure and format version and (``verify``) checksums checked."""
    directory = Path(directory)
    path = directory / MANIFEST
    if not path.is_file():
        raise EdgespikeError(f"{directory} is not an edgespike artifact (no {MANIFEST}); export one with `edgespike export`")
    try:
        manifest = json.loads(path.read_bytes())
    except (ValueError, RecursionError) as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise EdgespikeError(f"{path} is not valid JSON: {str(err).splitlines()[0][:200]}; re-export the model") from None
    if not isinstance(manifest, dict):
        raise EdgespikeError(f"{path} must hold a JSON object, not {type(manifest).__name__}; re-export the model")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION or isinstance(version, bool):
        raise EdgespikeError(
            f"{path} has format_version {_short(version)}; this edgespike reads version {FORMAT_VERSION}: re-export the model"
        )
    _check_structure(manifest, directory, path)
    if verify:
        expected = manifest["files"]
        actual = checksums(directory)
        for name, digest in expected.items():
            if name not in actual:
                raise EdgespikeError(f"artifact file {directory / name} is missing; re-export the model")
            if actual[name] != digest:
                raise EdgespikeError(f"artifact file {directory / name} does not match its sha256 in the manifest; re-export the model")
    return manifest


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _tensor_specs(value: Any) -> bool:
    """A list of {name: str, shape: [int >= 0, ...], ...}, as inputs, outputs and states are."""
    return isinstance(value, list) and all(
        isinstance(spec, dict) and isinstance(spec.get("name"), str) and isinstance(spec.get("shape"), list)
        and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in spec["shape"])
        and all(isinstance(spec.get(key, ""), str) for key in ("dtype", "buffer"))
        for spec in value
    )


# field -> (required, check, what it must be); the fields every runtime reads
MANIFEST_FIELDS: dict[str, tuple[bool, Any, str]] = {
    "target": (True, lambda v: isinstance(v, str), "a string"),
    "runtime": (True, lambda v: isinstance(v, str), "a string"),
    "model_file": (True, lambda v: isinstance(v, str) and v != "", "a file name"),
    "timesteps": (True, _positive_int, "an integer >= 1"),
    "vocab_size": (True, _positive_int, "an integer >= 1"),
    "states": (True, _tensor_specs, "a list of {name, shape}"),
    "files": (True, lambda v: isinstance(v, dict) and all(isinstance(d, str) for d in v.values()), "an object of file -> sha256"),
    "batch": (False, _positive_int, "an integer >= 1"),
    "max_seq_len": (False, _positive_int, "an integer >= 1"),
    "inputs": (False, _tensor_specs, "a list of {name, shape, dtype}"),
    "outputs": (False, _tensor_specs, "a list of {name, shape, dtype}"),
    "precision": (False, lambda v: isinstance(v, str), "a string"),
    "state_precision": (False, lambda v: isinstance(v, str), "a string"),
    "weights": (False, lambda v: v is None or isinstance(v, str), "a string"),
    "source_model": (False, lambda v: v is None or isinstance(v, str), "a string"),
    "family": (False, lambda v: isinstance(v, str), "a string"),
    "config": (False, lambda v: isinstance(v, dict), "an object"),
    "validation": (False, lambda v: isinstance(v, dict), "an object"),
}


def _check_structure(manifest: dict, directory: Path, path: Path) -> None:
    for name, (required, check, what) in MANIFEST_FIELDS.items():
        if name not in manifest:
            if required:
                raise EdgespikeError(f"{path} lacks {name!r}; re-export the model")
        elif not check(manifest[name]):
            raise EdgespikeError(f"{path}: {name} must be {what}, got {_short(manifest[name])}; re-export the model")
    if "position" in {spec["name"] for spec in manifest.get("inputs", [])} and "max_seq_len" not in manifest:
        raise EdgespikeError(f"{path} has a position input but no max_seq_len; re-export the model")
    for name in (manifest["model_file"], *manifest["files"]):
        _check_confined(name, directory, path)


def _check_confined(name: str, directory: Path, path: Path) -> None:
    """An artifact's file name is relative and stays inside the artifact dir (no '..', no symlink out)."""
    relative = Path(name)
    inside = bool(relative.parts) and not relative.is_absolute() and ".." not in relative.parts and "\x00" not in name
    if inside:
        root = directory.resolve()
        inside = (root / relative).resolve().is_relative_to(root)
    if not inside:
        raise EdgespikeError(f"{path} names the file {_short(name)} outside {directory}; re-export the model")


@contextlib.contextmanager
def staged(destination: Path, force: bool) -> Iterator[Path]:
    """A temporary dir beside ``destination``, renamed onto it when the block succeeds."""
    destination = Path(destination)
    if destination.exists() and not force:
        raise EdgespikeError(f"{destination} already exists; pass --force to replace it or choose another --out")
    staging = new_staging(destination)
    try:
        yield staging
        commit(staging, destination, force)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
