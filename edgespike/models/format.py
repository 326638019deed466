"""The model dir: config.json (with ``family``) + model.safetensors + tokenizer.json.

tokenizer.json is absent for an untrained preset. Weights are safetensors only: nothing in
a model dir is unpickled or executed. Saving writes a temporary dir and renames it into
place, so an interrupted save leaves the previous dir (or nothing) behind.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from edgespike.config import ConfigError
from edgespike.errors import EdgespikeError
from edgespike.models.base import SpikingLM
from edgespike.models.registry import build, create, get_family
from edgespike.nn.ternary_linear import TernaryLinear

CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_FILE = "config.json", "model.safetensors", "tokenizer.json"
DEMO_DIR = Path(__file__).resolve().parent.parent / "zoo" / "demo"


def save(model: SpikingLM, directory: str | Path, tokenizer=None) -> Path:
    """Write ``model`` (and its tokenizer) to ``directory``, replacing what was there."""
    if any(isinstance(m, TernaryLinear) and m.mode == "frozen" for m in model.modules()):
        raise EdgespikeError("cannot save a frozen (ternarized) model: save it before edgespike.quant.ternarize()")
    tokenizer = tokenizer if tokenizer is not None else model.tokenizer
    tensors = {name: t.detach().contiguous().cpu() for name, t in model.state_dict().items()}
    return write_dir(directory, model.config.to_dict(), tensors, tokenizer)


def write_dir(directory: str | Path, config: dict, tensors: dict[str, torch.Tensor], tokenizer=None,
              extra_files: dict[str, bytes] | None = None) -> Path:
    """A model dir from its parts, written to a staging dir and renamed into place."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        (staging / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
        save_file(tensors, str(staging / WEIGHTS_FILE), metadata={"format": "pt", "family": config["family"]})
        if tokenizer is not None:
            tokenizer.save(str(staging / TOKENIZER_FILE))
        for name, data in (extra_files or {}).items():
            (staging / name).write_bytes(data)
        replace_dir(staging, directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return directory


def replace_dir(staging: Path, directory: Path) -> None:
    if directory.exists():
        old = directory.with_name(f".{directory.name}.old-{os.getpid()}")
        directory.rename(old)
        staging.rename(directory)
        shutil.rmtree(old)
    else:
        staging.rename(directory)


def load(spec: str | Path = "demo") -> SpikingLM:
    """A model from ``demo`` (the bundled model), ``FAMILY:PRESET`` (fresh, untrained) or a dir."""
    spec_str = str(spec)
    if spec_str == "demo":
        if not (DEMO_DIR / CONFIG_FILE).exists():
            raise EdgespikeError(f"the bundled demo model is missing from {DEMO_DIR}; reinstall edgespike")
        return load_dir(DEMO_DIR)
    path = Path(spec_str)
    if ":" in spec_str and not path.exists():
        family, preset = spec_str.split(":", 1)
        return create(family, preset)
    return load_dir(path)


def read_config(directory: Path):
    config_path = directory / CONFIG_FILE
    if not config_path.is_file():
        raise EdgespikeError(
            f"{directory} has no {CONFIG_FILE}; a model dir holds {CONFIG_FILE} + {WEIGHTS_FILE} (+ {TOKENIZER_FILE})"
        )
    try:
        data = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise EdgespikeError(f"{config_path} is not valid JSON: {err}") from None
    if not isinstance(data, dict) or "family" not in data:
        raise EdgespikeError(f"{config_path} has no 'family' key; add the model family, e.g. \"family\": \"pulse\"")
    try:
        return get_family(data["family"]).model_class.config_class.from_dict(data)
    except ConfigError as err:
        raise EdgespikeError(f"{config_path}: {err}") from None


def load_dir(directory: str | Path) -> SpikingLM:
    directory = Path(directory)
    if not directory.is_dir():
        raise EdgespikeError(f"model {str(directory)!r} is neither a model dir, 'demo', nor FAMILY:PRESET (e.g. pulse:tiny)")
    config = read_config(directory)
    weights_path = directory / WEIGHTS_FILE
    if not weights_path.is_file():
        raise EdgespikeError(f"{directory} has no {WEIGHTS_FILE}; save the model with edgespike.models.save()")
    try:
        tensors = load_file(str(weights_path))
    except (SafetensorError, OSError) as err:
        raise EdgespikeError(f"{weights_path} is not a readable safetensors file: {err}") from None
    model = build(config)
    _check_tensors(model, tensors, weights_path)
    model.load_state_dict(tensors)
    tokenizer_path = directory / TOKENIZER_FILE
    if tokenizer_path.is_file():
        model.tokenizer = load_tokenizer(tokenizer_path, config.vocab_size)
    return model


def _check_tensors(model: SpikingLM, tensors: dict[str, torch.Tensor], path: Path) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing:
        raise EdgespikeError(f"{path} lacks {len(missing)} tensor(s) the {model.family} config needs, e.g. {missing[:3]}")
    if unexpected:
        raise EdgespikeError(f"{path} has {len(unexpected)} tensor(s) the {model.family} config does not use, e.g. {unexpected[:3]}")
    for name, value in tensors.items():
        if value.shape != expected[name].shape:
            raise EdgespikeError(
                f"{path}: tensor {name!r} has shape {tuple(value.shape)}, the config needs {tuple(expected[name].shape)}"
            )
        if value.is_floating_point() and not torch.isfinite(value).all():
            raise EdgespikeError(f"{path}: tensor {name!r} holds NaN or infinite values; retrain or restore the checkpoint")


def load_tokenizer(path: Path, vocab_size: int):
    from tokenizers import Tokenizer

    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as err:  # tokenizers raises a bare Exception on malformed files
        raise EdgespikeError(f"{path} is not a readable tokenizers file: {err}") from None
    if tokenizer.get_vocab_size() > vocab_size:
        raise EdgespikeError(
            f"{path} has {tokenizer.get_vocab_size()} tokens but the model's vocab_size is {vocab_size}"
        )
    return tokenizer
