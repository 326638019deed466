"""Frozen models that never exist in fp32: built with their large parameters on the meta
device, then filled tensor by tensor, each linear frozen to its codes as soon as its weight
is read. A 1 B ternary model then holds ~1 GB of int8 codes, not 4 GB of floats (and no
second copy: ``edgespike.capture.decode_step`` uses a streamed model as it is).

    load_frozen(spec, weights, timesteps)   a model dir's (safetensors, read tensor by tensor) or a
                                            FAMILY:PRESET's seeded random weights, frozen
    frozen_skeleton(config, weights)        the frozen model with its large tensors left on meta, for a
                                            frozen state_dict loaded with ``assign=True`` (an artifact's)
    should_stream(spec)                     whether a spec is large enough that export streams it
    load_for_export(spec, ..., stream)      streamed when asked (or, stream=None, when large), else ``load``

A preset's streamed weights are seeded per tensor (``random_tensor``: the tensor's name and
``seed``), normal with std fan_in ** -0.5 (TernaryLinear's own init), so they are the same
whatever the order they are made in; they are not the weights ``create()`` draws. The small
ones the family draws itself, from torch's generator seeded with ``seed``.
Parameters under ``STREAMED_MIN_ELEMENTS`` (norms, decays, biases) are built by the family
as usual and, for a model dir, overwritten from the file like every tensor. A module's buffers
derived from its weight (``init_from_weight``: W8ASpike's group scales) are computed as soon as
the weight is filled, before a model dir's file overwrites them.
"""

from __future__ import annotations

import ctypes
import dataclasses
import json
import zlib
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from edgespike.errors import EdgespikeError
from edgespike.models.base import SpikingLM
from edgespike.models.format import (
    TOKENIZER_FILE, WEIGHTS_FILE, check_header, is_preset_spec, load_tokenizer, read_config, read_header,
)
from edgespike.models.registry import build, preset_config
from edgespike.nn.ternary_linear import TernaryLinear
from edgespike.quant.weights import check_format, default_format, quantize_linear

STREAM_PARAMETERS = 200_000_000  # export streams models larger than this (``should_stream``)
STREAMED_MIN_ELEMENTS = 1 << 16  # parameters this large are created on the meta device and streamed in
M_MMAP_THRESHOLD = -3  # glibc's malloc.h (``_release_large_frees``)

Source = Callable[[str, torch.Tensor], torch.Tensor]  # (state_dict name, the meta or built tensor) -> its value


@contextmanager
def large_parameters_on_meta(min_elements: int = STREAMED_MIN_ELEMENTS):
    """Every parameter of at least ``min_elements`` registered inside is moved to the meta device
    (allocated, untouched, then dropped: no page is written); buffers and small parameters are real."""
    register = nn.Module.register_parameter

    def on_meta(module, name, param):
        if param is not None and not param.is_meta and param.numel() >= min_elements:
            param = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        register(module, name, param)

    nn.Module.register_parameter = on_meta
    try:
        yield
    finally:
        nn.Module.register_parameter = register


def frozen_skeleton(config, weights: str) -> SpikingLM:
    """``config``'s model frozen to ``weights`` with its large tensors (the codes too) on the meta
    device: nothing is allocated for them until ``load_state_dict(state, assign=True)`` gives them values."""
    model = _filled(config, lambda name, like: like, check_format(weights))
    model.frozen_weights = weights
    return model.eval()


def random_tensor(name: str, like: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """The streamed random value of tensor ``name``: normal, std fan_in ** -0.5, seeded by name and ``seed``."""
    generator = torch.Generator().manual_seed(zlib.crc32(name.encode()) ^ seed)
    return torch.randn(like.shape, generator=generator) * like.shape[-1] ** -0.5


def should_stream(spec: str) -> bool:
    """Whether ``spec`` (a model dir or FAMILY:PRESET) is over ``STREAM_PARAMETERS`` (counted on the meta device)."""
    config = _config(spec)
    return config is not None and build(config, "meta").num_parameters() > STREAM_PARAMETERS


def load_for_export(spec: str, weights: str | None = None, timesteps: int | None = None, stream: bool | None = None) -> SpikingLM:
    """The model export and check use: ``load_frozen`` when ``stream`` (None: when ``should_stream``), else ``load``."""
    from edgespike.models.format import load

    if stream or (stream is None and should_stream(spec)):
        return load_frozen(spec, weights, timesteps)
    return load(spec)


def _config(spec: str):
    if is_preset_spec(spec):
        family, preset = spec.split(":", 1)
        return preset_config(family, preset)
    directory = Path(spec)
    return read_config(directory) if (directory / WEIGHTS_FILE).is_file() else None


@torch.no_grad()
def load_frozen(spec: str | Path, weights: str | None = None, timesteps: int | None = None, seed: int = 0) -> SpikingLM:
    """The model of ``spec`` (a model dir or FAMILY:PRESET) with its linears frozen to ``weights``
    (None: the family's default), unrolled over ``timesteps``, filled one tensor at a time."""
    spec = str(spec)
    config = _config(spec)
    if config is None:
        raise EdgespikeError(f"model {spec!r} cannot be streamed: stream a model dir (config.json + {WEIGHTS_FILE}) or FAMILY:PRESET")
    if timesteps is not None and timesteps != config.spike.timesteps:
        config = config.replace(spike=dataclasses.replace(config.spike, timesteps=timesteps))
    weights = check_format(weights or default_format(config))
    if is_preset_spec(spec):
        with torch.random.fork_rng():  # the small parameters the family draws itself: seeded too
            torch.manual_seed(seed)
            model = _filled(config, lambda name, like: random_tensor(name, like, seed) if like.is_meta else like, weights)
    else:
        model = _from_dir(Path(spec), config, weights)
    model.frozen_weights = weights
    return model.eval()


DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64, "I64": torch.int64,
          "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool}


class TensorFile:
    """A safetensors file read one tensor at a time with plain reads, not a memory map: a mapped
    file's pages count as the process's resident memory for as long as it stays open."""

    def __init__(self, path: Path):
        self.path, self.file = path, open(path, "rb")
        length = int.from_bytes(self.file.read(8), "little")
        self.header, self.start = json.loads(self.file.read(length)), 8 + length

    def read(self, name: str) -> torch.Tensor:
        entry = self.header[name]
        begin, end = entry["data_offsets"]
        buffer = bytearray(end - begin)
        self.file.seek(self.start + begin)
        if self.file.readinto(buffer) != len(buffer):
            raise EdgespikeError(f"{self.path} ends inside tensor {name!r}; the file is truncated: copy it again")
        if not buffer:
            return torch.empty(entry["shape"], dtype=DTYPES[entry["dtype"]])
        return torch.frombuffer(buffer, dtype=DTYPES[entry["dtype"]]).reshape(entry["shape"])

    def close(self) -> None:
        self.file.close()


def _from_dir(directory: Path, config, weights: str) -> SpikingLM:
    path = directory / WEIGHTS_FILE
    check_header(config, read_header(path), path)  # safetensors validates the header; then names and shapes
    file = TensorFile(path)

    def read(name: str, like: torch.Tensor) -> torch.Tensor:
        value = file.read(name)
        if value.is_floating_point() and not torch.isfinite(value).all():
            raise EdgespikeError(f"{path}: tensor {name!r} holds NaN or infinite values; retrain or restore the checkpoint")
        return value.to(like.dtype)

    try:
        model = _filled(config, read, weights)
    finally:
        file.close()
    if (directory / TOKENIZER_FILE).is_file():
        model.tokenizer = load_tokenizer(directory / TOKENIZER_FILE, config.vocab_size)
    return model


def _release_large_frees() -> None:
    """Have glibc map every block of 1 MiB or more on its own, so that an fp32 weight freed after
    freezing goes back to the system. By default its threshold adapts up to 32 MB, and freed
    weights below it stay in the heap, trapped under the codes allocated after them (measured:
    ~3 bytes per parameter of a streamed load). Other allocators (macOS) return large blocks themselves."""
    try:
        ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, 1 << 20)
    except (OSError, AttributeError):
        pass


def _filled(config, source: Source, weights: str) -> SpikingLM:
    """``config``'s model with every state_dict tensor taken from ``source``, module by module,
    each linear frozen to ``weights`` right after its weight is filled."""
    _release_large_frees()
    with large_parameters_on_meta(STREAMED_MIN_ELEMENTS):
        model = build(config)
    uses = Counter(id(p) for _, p in model.named_parameters(remove_duplicate=False))
    tied = {i for i, n in uses.items() if n > 1}
    made: dict[int, nn.Parameter] = {}  # a tied parameter -> its value, so tied weights stay tied (only those: a
    # frozen linear's fp32 weight must be freed as soon as its codes are made)
    parents = {f"{path}.{name}" if path else name: (module, name) for path, module in model.named_modules() for name, _ in module.named_children()}
    for path, module in list(model.named_modules()):
        prefix = f"{path}." if path else ""
        for name, param in list(module._parameters.items()):
            if param is None:
                continue
            value = made.get(id(param))
            if value is None:
                value = source(prefix + name, param)
                value = nn.Parameter(value.float() if value.is_floating_point() else value, requires_grad=False)
                if id(param) in tied:
                    made[id(param)] = value
            module._parameters[name] = value
        if hasattr(module, "init_from_weight") and not module.weight.is_meta:  # buffers derived from the weight
            module.init_from_weight()  # (a model dir's file overwrites them)
        for name, buffer in module._buffers.items():
            if buffer is not None and name not in module._non_persistent_buffers_set:
                buffer.copy_(source(prefix + name, buffer))
        if isinstance(module, (TernaryLinear, nn.Linear)):
            frozen = quantize_linear(module, weights)
            if frozen is not module:
                parent, attribute = parents[path]
                setattr(parent, attribute, frozen)
    return model
