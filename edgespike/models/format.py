"""The model dir: config.json (with ``family``) + model.safetensors + tokenizer.json.

tokenizer.json is absent for an untrained preset. Weights are safetensors only: nothing in
a model dir is unpickled or executed. Saving writes a temporary dir and renames it into
place (``edgespike.staging``), so an interrupted save leaves the previous dir (or nothing) behind.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from edgespike.config import ConfigError
from edgespike.errors import EdgespikeError
from edgespike.models.base import SpikingLM
from edgespike.models.registry import build, create, get_family
from edgespike.nn.ternary_linear import TernaryLinear
from edgespike.staging import commit, new_staging

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
    staging = new_staging(directory)
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
    """Rename ``staging`` (from ``edgespike.staging.new_staging``) onto ``directory``, replacing it."""
    commit(staging, directory, force=True)


def load(spec: str | Path = "demo") -> SpikingLM:
    """A model from ``demo`` (the bundled model), ``FAMILY:PRESET`` (fresh, untrained), a dir, or a
    user's ``FILE.py:FACTORY[@CHECKPOINT]`` (which runs FILE.py: ``edgespike.models.module``)."""
    from edgespike.models.module import is_factory_spec, load_factory

    spec_str = str(spec)
    if is_factory_spec(spec_str):
        return load_factory(spec_str)
    if spec_str == "demo":
        if not (DEMO_DIR / CONFIG_FILE).exists():
            raise EdgespikeError(f"the bundled demo model is missing from {DEMO_DIR}; reinstall edgespike")
        return load_dir(DEMO_DIR)
    if is_preset_spec(spec_str):
        family, preset = spec_str.split(":", 1)
        return create(family, preset)
    return load_dir(Path(spec_str))


def is_preset_spec(spec: str) -> bool:
    """``spec`` names FAMILY:PRESET (not a path, not a user's FILE.py:FACTORY)."""
    from edgespike.models.module import is_factory_spec

    return ":" in spec and not Path(spec).exists() and not is_factory_spec(spec)


def read_config(directory: Path):
    """The config of a model dir's config.json, every key, type and range checked."""
    config_path = directory / CONFIG_FILE
    if not config_path.is_file():
        raise EdgespikeError(
            f"{directory} has no {CONFIG_FILE}; a model dir holds {CONFIG_FILE} + {WEIGHTS_FILE} (+ {TOKENIZER_FILE})"
        )
    try:
        data = json.loads(config_path.read_bytes())
    except (ValueError, RecursionError) as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise EdgespikeError(f"{config_path} is not valid JSON: {str(err).splitlines()[0][:200]}") from None
    if not isinstance(data, dict) or not isinstance(data.get("family"), str):
        raise EdgespikeError(f"{config_path} has no 'family' key; add the model family, e.g. \"family\": \"pulse\"")
    try:
        return get_family(data["family"]).model_class.config_class.from_dict(data)
    except ConfigError as err:
        raise EdgespikeError(f"{config_path}: {err}") from None


def read_header(path: Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    """name -> (dtype, shape) of a safetensors file, from its header alone (no tensor read)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return {name: (f.get_slice(name).get_dtype(), tuple(f.get_slice(name).get_shape())) for name in f.keys()}
    except (SafetensorError, OSError) as err:  # safetensors echoes the bad value, newlines included
        raise EdgespikeError(f"{path} is not a readable safetensors file: {' '.join(str(err).split())[:300]}") from None


def check_header(config, header: dict[str, tuple[str, tuple[int, ...]]], path: Path) -> None:
    """The tensors ``config`` implies (built on the meta device: nothing allocated) against ``header``."""
    try:
        expected = {name: tuple(t.shape) for name, t in build(config, "meta").state_dict().items()}
    except (RuntimeError, ValueError, TypeError, ArithmeticError) as err:
        raise EdgespikeError(f"{path.parent / CONFIG_FILE} describes no buildable {config.family} model: {str(err).splitlines()[0][:200]}") from None
    missing = sorted(set(expected) - set(header))
    unexpected = sorted(set(header) - set(expected))
    if missing:
        raise EdgespikeError(f"{path} lacks {len(missing)} tensor(s) the {config.family} config needs, e.g. {missing[:3]}")
    if unexpected:
        raise EdgespikeError(f"{path} has {len(unexpected)} tensor(s) the {config.family} config does not use, e.g. {unexpected[:3]}")
    for name, shape in expected.items():
        dtype, got = header[name]
        if got != shape:
            raise EdgespikeError(f"{path}: tensor {name!r} has shape {got}, the config needs {shape}; is config.json the weights' own?")
        if dtype not in WEIGHT_DTYPES:
            raise EdgespikeError(f"{path}: tensor {name!r} is {dtype}; model dirs hold {', '.join(WEIGHT_DTYPES)} tensors")


WEIGHT_DTYPES = ("F32", "F16", "BF16", "F64", "I64", "I32", "I16", "I8", "U8", "BOOL")


def load_dir(directory: str | Path) -> SpikingLM:
    """A model dir's model: config, then the weights' header against it, then the weights."""
    directory = Path(directory)
    if not directory.is_dir():
        raise EdgespikeError(f"model {str(directory)!r} is neither a model dir, 'demo', nor FAMILY:PRESET (e.g. pulse:tiny)")
    config = read_config(directory)
    weights_path = directory / WEIGHTS_FILE
    if not weights_path.is_file():
        raise EdgespikeError(f"{directory} has no {WEIGHTS_FILE}; save the model with edgespike.models.save()")
    check_header(config, read_header(weights_path), weights_path)
    try:
        tensors = load_file(str(weights_path))
    except (SafetensorError, OSError) as err:
        raise EdgespikeError(f"{weights_path} is not a readable safetensors file: {str(err).splitlines()[0][:200]}") from None
    for name, value in tensors.items():
        if value.is_floating_point() and not torch.isfinite(value).all():
            raise EdgespikeError(f"{weights_path}: tensor {name!r} holds NaN or infinite values; retrain or restore the checkpoint")
    model = build(config)
    model.load_state_dict(tensors)
    tokenizer_path = directory / TOKENIZER_FILE
    if tokenizer_path.is_file():
        model.tokenizer = load_tokenizer(tokenizer_path, config.vocab_size)
    return model


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
