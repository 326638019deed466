"""Train char_snn.CharSNN with snntorch on the default corpus and write a user's project folder:

    python tests/user_models/train_char_snn.py OUT [--steps 300]

OUT gets model.py (a copy of char_snn.py), tokenizer.json and weights.safetensors; then
`edgespike export OUT/model.py:build --checkpoint OUT/weights.safetensors --target onnx`.
Prints the held-out loss before and after training (nats per character) as JSON."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file
from snntorch import utils

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from char_snn import CharSNN  # noqa: E402

from edgespike.data import encode, read_corpus, split_corpus, train_tokenizer  # noqa: E402


def loss_over(model: CharSNN, ids: torch.Tensor) -> torch.Tensor:
    """Mean next-character cross-entropy over ids [B, S], the neurons reset first."""
    utils.reset(model)
    losses = [torch.nn.functional.cross_entropy(model(ids[:, s]), ids[:, s + 1]) for s in range(ids.shape[1] - 1)]
    return torch.stack(losses).mean()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seq-len", type=int, default=24)
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()
    torch.manual_seed(0)
    train_text, held_out_text = split_corpus(read_corpus())
    tokenizer = train_tokenizer(train_text, kind="char", vocab_size=128)
    train_ids, held_ids = encode(tokenizer, train_text[:200_000]), encode(tokenizer, held_out_text[:20_000])
    model = CharSNN(tokenizer.get_vocab_size())
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)

    def batch(ids: torch.Tensor, generator=None) -> torch.Tensor:
        starts = torch.randint(0, len(ids) - args.seq_len - 1, (args.batch,), generator=generator)
        return torch.stack([ids[s : s + args.seq_len + 1] for s in starts])

    held = batch(held_ids, torch.Generator().manual_seed(1))
    with torch.no_grad():
        before = loss_over(model, held).item()
    for _ in range(args.steps):
        optimizer.zero_grad()
        loss_over(model, batch(train_ids)).backward()
        optimizer.step()
    with torch.no_grad():
        after = loss_over(model, held).item()
    args.out.mkdir(parents=True, exist_ok=True)
    shutil.copy(HERE / "char_snn.py", args.out / "model.py")
    tokenizer.save(str(args.out / "tokenizer.json"))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(args.out / "weights.safetensors"))
    print(json.dumps({"steps": args.steps, "held_out_loss_before": before, "held_out_loss_after": after}))


if __name__ == "__main__":
    main()
