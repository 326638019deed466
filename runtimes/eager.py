"""Eager PyTorch: the reference every artifact is compared with. Runs the ternarized decode
step of a model (a model dir, ``demo`` or FAMILY:PRESET), exactly what the exporters capture."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from edgespike.capture import PREFILL_TOKENS, DecodeStep, decode_step
from edgespike.models import load as load_model
from edgespike.models.base import SpikingLM
from edgespike.runtimes.registry import check_token, register_runtime


class EagerSession:
    """The decode step in eager PyTorch; ``prefill_chunk`` runs ``prefill_tokens`` tokens in one forward."""

    def __init__(self, model: SpikingLM, timesteps: int | None = None, weights: str | None = None,
                 prefill_tokens: int = PREFILL_TOKENS):
        self.step_module: DecodeStep = decode_step(model, timesteps, weights=weights)
        config = self.step_module.model.config
        self.manifest = {"family": config.family, "vocab_size": config.vocab_size, "timesteps": config.spike.timesteps,
                         "prefill": {"tokens": prefill_tokens}}
        self.runtime = f"PyTorch {torch.__version__} eager"

    def reset(self) -> None:
        self.step_module.reset()

    @torch.no_grad()
    def step(self, token: int) -> np.ndarray:
        check_token(token, self.manifest["vocab_size"])
        return self.step_module.advance(token)[0].numpy()

    @torch.no_grad()
    def prefill_chunk(self, tokens: list[int]) -> np.ndarray:
        return self.step_module.advance(list(tokens))[0].numpy()


def open_artifact(directory: Path, manifest: dict) -> EagerSession:
    """An eager session of the model an artifact was exported from (its ``source_model``)."""
    return EagerSession(load_model(manifest["source_model"]), manifest["timesteps"], manifest.get("weights"))


register_runtime("eager", open_artifact)
