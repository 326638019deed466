"""SLMS Pulse checkpoints (g-hano/slms): ``torch.save(model.state_dict())`` of ``SpikingLLM``.

The file is a torch pickle; it is read with ``torch.load(weights_only=True)`` only (plain
tensors and containers, never arbitrary objects) and memory-mapped. The published names are
edgespike's ``slms_pulse`` names, except that the tied ``lm_head.weight`` (the same tensor as
``token_emb.weight``) is dropped, and snntorch's ``reset_mechanism_val`` buffers (0: subtract)
are checked and dropped (the reset is in the config). Dtypes stay as published.
"""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path

import torch

from edgespike.config import ConfigError
from edgespike.errors import EdgespikeError
from edgespike.importers import ImportOptions, read_json, register_importer
from edgespike.models.format import TOKENIZER_FILE, load_tokenizer, write_dir
from edgespike.models.registry import build, preset_config
from edgespike.models.slms_pulse import ROPE_DTYPES, SlmsPulseConfig, published_spike
from edgespike.nn import LIF

TIED_HEAD, RESET_KEY = "lm_head.weight", "reset_mechanism_val"
SUBTRACT = 0  # snntorch's reset_mechanism_val of reset by subtraction
REQUIRED_ARCH = ("vocab_size", "d_model", "n_heads", "n_kv_heads", "num_layers")
# SpikingLLM's constructor defaults (models/transformer/transformer.py)
ARCH_DEFAULTS = {
    "max_seq_len": 2048, "window_size": 128, "num_steps": 3, "beta": 0.95, "rope_theta_local": 1e4,
    "rope_theta_global": 1e6, "intermediate_size": None, "dropout": 0.0,
}


def config_from_arch(path: Path) -> SlmsPulseConfig:
    """SpikingLLM's constructor arguments (inference.py's MODEL_ARCH and the defaults) as a config."""
    arch = read_json(path, "SpikingLLM's constructor arguments")
    if not isinstance(arch, dict):
        raise EdgespikeError(f"{path} must hold a JSON object of SpikingLLM's constructor arguments")
    known = (*REQUIRED_ARCH, *ARCH_DEFAULTS)
    unknown = sorted(set(arch) - set(known))
    missing = [key for key in REQUIRED_ARCH if key not in arch]
    if unknown:
        raise EdgespikeError(f"{path}: unknown key(s) {unknown}; SpikingLLM takes {', '.join(known)}")
    if missing:
        raise EdgespikeError(f"{path}: missing key(s) {missing}; {', '.join(REQUIRED_ARCH)} have no default")
    arch = {**ARCH_DEFAULTS, **arch}
    if arch["dropout"] not in (0, 0.0):
        raise EdgespikeError(f"{path}: dropout {arch['dropout']!r} has no meaning at inference; set it to 0")
    try:
        return SlmsPulseConfig(
            vocab_size=arch["vocab_size"], d_model=arch["d_model"], n_layers=arch["num_layers"],
            n_heads=arch["n_heads"], n_kv_heads=arch["n_kv_heads"],
            ffn_dim=arch["intermediate_size"] or 4 * arch["d_model"], max_seq_len=arch["max_seq_len"],
            window=arch["window_size"], rope_theta_local=float(arch["rope_theta_local"]),
            rope_theta_global=float(arch["rope_theta_global"]),
            spike=dataclasses.replace(published_spike(), timesteps=arch["num_steps"], beta=arch["beta"]),
        )
    except (ConfigError, TypeError, ValueError, ArithmeticError, AttributeError) as err:  # a wrong type or zero size
        raise EdgespikeError(f"{path}: {str(err).splitlines()[0][:200]}; check SpikingLLM's arguments") from None


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        data = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[0]
        raise EdgespikeError(
            f"{path} is not a plain state_dict: torch.load(weights_only=True) refused it ({first}); "
            "re-save it with torch.save(model.state_dict())"
        ) from None
    except Exception as err:  # a damaged pickle or zip makes the unpickler raise anything (KeyError, TypeError, ...)
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise EdgespikeError(f"{path} is not a readable torch checkpoint ({first}); is it complete?") from None
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in data.items()):
        raise EdgespikeError(f"{path} does not hold a state_dict (a dict of name -> tensor); save model.state_dict()")
    return data


def to_edgespike(state: dict[str, torch.Tensor], config: SlmsPulseConfig, path: Path, where: str) -> dict[str, torch.Tensor]:
    """The published tensors under edgespike's names, every name and shape checked."""
    try:  # on the meta device: nothing allocated, whatever the sizes
        model = build(config, "meta")
    except (RuntimeError, ValueError, TypeError, ArithmeticError) as err:
        raise EdgespikeError(f"{where} describes no buildable model: {str(err).splitlines()[0][:200]}") from None
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    lif_paths = [name for name, module in model.named_modules() if isinstance(module, LIF)]
    published = {**expected, TIED_HEAD: expected["token_emb.weight"], **{f"{p}.{RESET_KEY}": () for p in lif_paths}}
    missing = [name for name in published if name not in state]
    unexpected = [name for name in state if name not in published]
    if missing:
        raise EdgespikeError(f"{path} lacks {len(missing)} tensor(s) {where} needs, the first {missing[0]!r}")
    if unexpected:
        raise EdgespikeError(f"{path} has {len(unexpected)} tensor(s) {where} does not have, the first {unexpected[0]!r}")
    for name, shape in published.items():
        if tuple(state[name].shape) != shape:
            raise EdgespikeError(
                f"{path}: tensor {name!r} has shape {tuple(state[name].shape)}, {where} needs {shape}; "
                "give the checkpoint's own sizes (--config ARCH.json)"
            )
    for name in published:
        if name.endswith(RESET_KEY) and state[name].double().item() != SUBTRACT:  # NaN included
            raise EdgespikeError(f"{path}: {name} is {state[name].double().item()}; SLMS Pulse resets by subtraction (0)")
        elif state[name].is_floating_point() and not torch.isfinite(state[name]).all():
            raise EdgespikeError(f"{path}: tensor {name!r} holds NaN or infinite values; restore the checkpoint")
    if not torch.equal(state[TIED_HEAD], state["token_emb.weight"]):
        raise EdgespikeError(f"{path}: {TIED_HEAD} differs from token_emb.weight, but SLMS Pulse ties them")
    return {name: state[name].contiguous() for name in expected}


def import_slms_pulse(path: Path, options: ImportOptions) -> Path:
    if (options.preset is None) == (options.config is None):
        raise EdgespikeError("give exactly one of --preset (e.g. pulse-1b) or --config ARCH.json")
    config = preset_config("slms_pulse", options.preset) if options.preset else config_from_arch(options.config)
    where = f"preset {options.preset!r}" if options.preset else f"the config {options.config}"
    state = read_state_dict(path)
    inv_freq = state.get("layers.0.attn.local_rope.inv_freq")
    dtype = str(inv_freq.dtype).removeprefix("torch.") if inv_freq is not None else config.rope_dtype
    if dtype not in ROPE_DTYPES:
        raise EdgespikeError(f"{path}: tensors of dtype {dtype}; SLMS Pulse checkpoints are one of {ROPE_DTYPES}")
    config = config.replace(rope_dtype=dtype)  # the RoPE tables as the checkpoint's dtype computes them
    options.notes.append(f"RoPE tables computed in {dtype}, the checkpoint's dtype, as the published code does")
    tensors = to_edgespike(state, config, path, where)
    tokenizer, extra = None, {}
    if options.tokenizer is not None:
        tokenizer = load_tokenizer(options.tokenizer, config.vocab_size)
        sidecar = options.tokenizer.with_name("tokenizer_config.json")  # carries the chat template
        if options.tokenizer.name == TOKENIZER_FILE and sidecar.is_file():
            extra[sidecar.name] = sidecar.read_bytes()
    return write_dir(options.out, config.to_dict(), tensors, tokenizer, extra)


register_importer("slms-pulse", import_slms_pulse)
