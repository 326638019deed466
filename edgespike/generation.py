"""Text generation: prefill the prompt with the carried state, then sample.

The loop drives a ``Stepper``: ``step(token_id) -> logits[V]`` and, where there is one, a
``prefill(token_ids)`` that takes the prompt in as few calls as it can (a runtime session's
prefill entry, ``edgespike.runtimes.registry.prefill``; an eager model's one forward), so an
eager model and any runtime session drive the same code.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from torch import Tensor

from edgespike.errors import EdgespikeError
from edgespike.models.base import SpikingLM

log = logging.getLogger(__name__)


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


@dataclass
class Stepper:
    """What generation drives: ``step(token) -> logits[V]``, and ``prefill(tokens) -> logits[V]`` after the
    last of them (None: the prompt is stepped token by token); both carry the same state."""

    step: Callable[[int], Tensor]
    prefill: Callable[[list[int]], Tensor] | None = None
    context: int | None = None  # the most tokens a sequence holds (a positional model's max_seq_len); None: no limit


def generate_ids(stepper: Stepper, prompt_ids: list[int], options: SamplingOptions) -> Iterator[int]:
    """Yield new token ids after the prompt ``prompt_ids``."""
    if not prompt_ids:
        raise EdgespikeError("the prompt encodes to no tokens; give a non-empty --prompt")
    if stepper.context and len(prompt_ids) > stepper.context:
        raise EdgespikeError(f"the prompt is {len(prompt_ids)} tokens, past the model's context of {stepper.context} "
                             "(max_seq_len); shorten the prompt")
    new_tokens = options.max_new_tokens
    if stepper.context and len(prompt_ids) + new_tokens > stepper.context:
        new_tokens = stepper.context - len(prompt_ids)
        log.warning("generating %d new tokens, not %d: the model's context holds %d tokens", new_tokens,
                    options.max_new_tokens, stepper.context)
    generator = torch.Generator().manual_seed(options.seed)
    if stepper.prefill is not None:
        logits = stepper.prefill(prompt_ids)
    else:
        for token in prompt_ids:
            logits = stepper.step(token)
    for i in range(new_tokens):
        token = sample(logits, options, generator)
        yield token
        if i + 1 < new_tokens:
            logits = stepper.step(token)


def session_stepper(session) -> Stepper:
    """A runtime session (``edgespike.runtimes.load``): its prefill entry for the prompt, where it has one."""
    from edgespike.runtimes.registry import prefill

    return Stepper(lambda token: torch.from_numpy(session.step(token)), lambda ids: torch.from_numpy(prefill(session, ids)),
                   session.manifest.get("max_seq_len"))


def eager_stepper(model: SpikingLM) -> Stepper:
    """An eager model that owns its carried state; the prompt in one forward."""
    from edgespike.runtimes.registry import check_token

    state = model.init_state(1)
    vocab = model.config.vocab_size

    @torch.no_grad()
    def run(tokens: list[int]) -> Tensor:
        nonlocal state
        for token in tokens:
            check_token(token, vocab)
        logits, state = model(torch.tensor([tokens]), state)
        return logits[0, -1]

    return Stepper(lambda token: run([token]), run, model.config.max_seq_len if model.positional else None)


def generate_text(stepper: Stepper, tokenizer, prompt: str, options: SamplingOptions) -> Iterator[str]:
    """Stream the decoded text pieces of the continuation of ``prompt``."""
    ids: list[int] = []
    shown = ""
    for token in generate_ids(stepper, tokenizer.encode(prompt).ids, options):
        ids.append(token)
        text = tokenizer.decode(ids)
        if not text.endswith("\ufffd"):  # hold back a partial UTF-8 character
            yield text[len(shown) :]
            shown = text
