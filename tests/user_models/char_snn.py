"""A user's char-level spiking LM in plain snntorch, as a project folder holds it: this file (the
model and its factory), tokenizer.json and the trained weights beside it. edgespike runs it as
`edgespike export model.py:build --checkpoint weights.safetensors`."""

from __future__ import annotations

from pathlib import Path

import snntorch as snn
import torch
from torch import nn

HERE = Path(__file__).resolve().parent


class CharSNN(nn.Module):
    """One character in, next-character logits out; Leaky -> RLeaky -> Synaptic neurons keep their
    own state (init_hidden=True), the readout is the last membrane."""

    def __init__(self, vocab_size: int, width: int = 64):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, width)
        self.fc1 = nn.Linear(width, width)
        self.lif1 = snn.Leaky(beta=0.9, init_hidden=True)
        self.fc2 = nn.Linear(width, width)
        self.lif2 = snn.RLeaky(beta=0.9, linear_features=width, init_hidden=True)
        self.fc3 = nn.Linear(width, width)
        self.lif3 = snn.Synaptic(alpha=0.8, beta=0.9, init_hidden=True, output=True)
        self.readout = nn.Linear(width, vocab_size)

    def forward(self, token: torch.Tensor) -> torch.Tensor:
        spk1 = self.lif1(self.fc1(self.embed(token)))
        spk2 = self.lif2(self.fc2(spk1))
        _, _, mem3 = self.lif3(self.fc3(spk2))
        return self.readout(mem3)


def build() -> nn.Module:
    """The factory edgespike calls: the model sized by the tokenizer beside this file."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(HERE / "tokenizer.json"))
    model = CharSNN(tokenizer.get_vocab_size())
    model.tokenizer = tokenizer
    return model
