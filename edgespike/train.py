"""A small trainer for every family: float or ternary quantization-aware training.

AdamW, linear warm-up then cosine decay to 10% of the peak learning rate, gradient
clipping, periodic held-out perplexity, checkpoints to resume from, a metrics record.
Ternary training keeps latent float weights and ternarizes them in every forward
(absmean + straight-through estimator, see ``edgespike.nn.ternary_linear``).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor

from edgespike.errors import EdgespikeError
from edgespike.models.base import SpikingLM
from edgespike.models.format import load_dir, read_config, save

TRAINER_FILE = "trainer.pt"


@dataclass
class TrainOptions:
    steps: int = 1000
    seq_len: int = 128  # tokens per training sequence
    batch_size: int = 16
    lr: float = 3e-3  # peak learning rate
    warmup: int = 50  # steps of linear warm-up
    weight_decay: float = 0.01
    clip: float = 1.0  # max global gradient norm
    eval_every: int = 100  # steps between validation passes (and checkpoints)
    eval_batches: int = 8  # held-out batches per validation pass
    seed: int = 0

    def __post_init__(self):
        if self.steps <= 0:
            raise EdgespikeError(f"--steps must be > 0, got {self.steps}")
        if self.seq_len < 2 or self.batch_size < 1:
            raise EdgespikeError(f"--seq-len must be >= 2 and the batch size >= 1, got {self.seq_len} and {self.batch_size}")


@dataclass
class Progress:
    step: int
    loss: float
    lr: float
    tokens_per_s: float
    val_ppl: float | None = None


@dataclass
class TrainResult:
    steps: int
    seconds: float
    final_val_ppl: float
    history: list[dict] = field(default_factory=list)


def lr_at(step: int, options: TrainOptions) -> float:
    if step < options.warmup:
        return options.lr * (step + 1) / options.warmup
    progress = (step - options.warmup) / max(1, options.steps - options.warmup)
    return options.lr * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress))))


def batches_available(ids: Tensor, seq_len: int) -> int:
    return (len(ids) - 1) // seq_len


def check_corpus(ids: Tensor, seq_len: int, name: str) -> None:
    if batches_available(ids, seq_len) < 1:
        raise EdgespikeError(
            f"the {name} text has {len(ids)} tokens, fewer than one sequence of --seq-len {seq_len} + 1; "
            "use a larger corpus or a shorter --seq-len"
        )


def random_batch(ids: Tensor, seq_len: int, batch_size: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    starts = torch.randint(0, len(ids) - seq_len, (batch_size,), generator=generator)  # windows of seq_len + 1
    windows = torch.stack([ids[s : s + seq_len + 1] for s in starts.tolist()])
    return windows[:, :-1], windows[:, 1:]


@torch.no_grad()
def perplexity(model: SpikingLM, ids: Tensor, seq_len: int, max_batches: int | None = None, batch_size: int = 8) -> float:
    """exp(mean next-token cross-entropy) over consecutive held-out windows, each from a fresh state."""
    was_training = model.training
    model.eval()
    count = batches_available(ids, seq_len)
    windows = ids[: count * seq_len + 1]
    inputs = windows[:-1].reshape(count, seq_len)
    targets = windows[1:].reshape(count, seq_len)
    if max_batches is not None:
        inputs, targets = inputs[: max_batches * batch_size], targets[: max_batches * batch_size]
    total, n = 0.0, 0
    for start in range(0, len(inputs), batch_size):
        logits, _ = model(inputs[start : start + batch_size])
        total += torch.nn.functional.cross_entropy(
            logits.flatten(0, 1), targets[start : start + batch_size].flatten(), reduction="sum"
        ).item()
        n += targets[start : start + batch_size].numel()
    model.train(was_training)
    return math.exp(total / n)


def unigram_perplexity(train_ids: Tensor, valid_ids: Tensor, vocab_size: int) -> float:
    """The baseline a model must beat: token frequencies of the training text (add-one smoothed)."""
    counts = torch.bincount(train_ids, minlength=vocab_size).double() + 1.0
    log_probs = torch.log(counts / counts.sum())
    return math.exp(-log_probs[valid_ids].mean().item())


def train(
    model: SpikingLM,
    train_ids: Tensor,
    valid_ids: Tensor,
    options: TrainOptions,
    out: Path,
    resume: bool = False,
    on_progress: Callable[[Progress], None] | None = None,
) -> TrainResult:
    """Train ``model`` in place; checkpoints go to ``out/checkpoint`` every ``eval_every`` steps."""
    check_corpus(train_ids, options.seq_len, "training")
    check_corpus(valid_ids, options.seq_len, "held-out")
    torch.manual_seed(options.seed)
    generator = torch.Generator().manual_seed(options.seed)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": options.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=options.lr,
        betas=(0.9, 0.95),
    )
    start_step, history, seconds = 0, [], 0.0
    checkpoint = out / "checkpoint"
    if resume:
        start_step, history, seconds = _restore(model, optimizer, generator, checkpoint)

    model.train()
    val_ppl = float("nan")
    tick = time.perf_counter()
    for step in range(start_step, options.steps):
        lr = lr_at(step, options)
        for group in optimizer.param_groups:
            group["lr"] = lr
        inputs, targets = random_batch(train_ids, options.seq_len, options.batch_size, generator)
        logits, _ = model(inputs)
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten())
        if not torch.isfinite(loss):
            raise EdgespikeError(f"training diverged at step {step} (loss {loss.item()}); lower --lr")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), options.clip)
        optimizer.step()

        now = time.perf_counter()
        seconds += now - tick
        record = Progress(step + 1, loss.item(), lr, inputs.numel() / max(now - tick, 1e-9))
        done = step + 1 == options.steps
        if (step + 1) % options.eval_every == 0 or done:
            val_ppl = perplexity(model, valid_ids, options.seq_len, options.eval_batches)
            record.val_ppl = val_ppl
            _checkpoint(model, optimizer, generator, checkpoint, step + 1, history + [asdict(record)], seconds)
        history.append(asdict(record))
        if on_progress:
            on_progress(record)
        tick = time.perf_counter()
    return TrainResult(options.steps, seconds, val_ppl, history)


def _checkpoint(model, optimizer, generator, directory: Path, step: int, history: list[dict], seconds: float) -> None:
    save(model, directory)
    trainer_state = {
        "step": step,
        "optimizer": optimizer.state_dict(),
        "generator": generator.get_state(),
        "history": history,
        "seconds": seconds,
    }
    staging = directory / f".{TRAINER_FILE}.tmp"
    torch.save(trainer_state, staging)
    staging.replace(directory / TRAINER_FILE)


def _restore(model: SpikingLM, optimizer, generator, directory: Path) -> tuple[int, list[dict], float]:
    if not (directory / TRAINER_FILE).is_file():
        raise EdgespikeError(f"no checkpoint to resume in {directory}; train without --resume first")
    saved_config = read_config(directory)
    if saved_config.to_dict() != model.config.to_dict():
        raise EdgespikeError(
            f"the checkpoint in {directory} is a {saved_config.family} model with another config than the one "
            f"being trained ({model.family}); resume with the same family, preset and options, or use a new --out"
        )
    model.load_state_dict(load_dir(directory).state_dict())
    state = torch.load(directory / TRAINER_FILE, weights_only=True)
    optimizer.load_state_dict(state["optimizer"])
    generator.set_state(state["generator"])
    return state["step"], state["history"], state["seconds"]
