"""Text generation: prefill the prompt one token at a time with the carried state, then sample.

The loop only needs a ``step(token_id) -> logits[V]`` function, so an eager model and any
runtime session (``session_step``) drive the same code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from torch import Tensor

from edgespike.errors import EdgespikeError
from edgespike.models.base import SpikingLM


@dataclass
class SamplingOptions:
    max_new_tokens: int = 64
    temperature: float = 0.8  # 0 = greedy
    top_k: int = 40  # 0 = no top-k cut
    seed: int = 0

    def __post_init__(self):
        if self.max_new_tokens < 0 or self.temperature < 0 or self.top_k < 0:
            raise EdgespikeError("--max-new-tokens, --temperature and --top-k must be >= 0")


def sample(logits: Tensor, options: SamplingOptions, generator: torch.Generator) -> int:
    """Greedy when temperature is 0, else softmax(logits / temperature) over the top-k."""
    if options.temperature == 0:
        return int(torch.argmax(logits))
    logits = logits.double() / options.temperature
    if options.top_k:
        cutoff = torch.topk(logits, min(options.top_k, logits.numel())).values[-1]
        logits = logits.masked_fill(logits < cutoff, float("-inf"))
    return int(torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator))


def generate_ids(step: Callable[[int], Tensor], prompt_ids: list[int], options: SamplingOptions) -> Iterator[int]:
    """Yield new token ids; ``step`` consumes one token and returns the next-token logits."""
    if not prompt_ids:
        raise EdgespikeError("the prompt encodes to no tokens; give a non-empty --prompt")
    generator = torch.Generator().manual_seed(options.seed)
    for token in prompt_ids:
        logits = step(token)
    for _ in range(options.max_new_tokens):
        token = sample(logits, options, generator)
        yield token
        logits = step(token)


def session_step(session) -> Callable[[int], Tensor]:
    """A step function over a runtime session (``edgespike.runtimes.load``)."""
    return lambda token: torch.from_numpy(session.step(token))


def eager_step(model: SpikingLM) -> Callable[[int], Tensor]:
    """A step function over an eager model that owns its carried state."""
    state = model.init_state(1)
    vocab = model.config.vocab_size

    @torch.no_grad()
    def step(token: int) -> Tensor:
        nonlocal state
        if not 0 <= token < vocab:
            raise EdgespikeError(f"token id {token} is outside the vocabulary [0, {vocab})")
        logits, state = model(torch.tensor([[token]]), state)
        return logits[0, -1]

    return step


def generate_text(step: Callable[[int], Tensor], tokenizer, prompt: str, options: SamplingOptions) -> Iterator[str]:
    """Stream the decoded text pieces of the continuation of ``prompt``."""
    ids: list[int] = []
    shown = ""
    for token in generate_ids(step, tokenizer.encode(prompt).ids, options):
        ids.append(token)
        text = tokenizer.decode(ids)
        if not text.endswith("\ufffd"):  # hold back a partial UTF-8 character
            yield text[len(shown) :]
            shown = text
