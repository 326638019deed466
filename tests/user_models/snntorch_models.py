"""Two users' spiking LMs in plain snntorch, one per contract edgespike accepts (README, "Bring your
own model"). Nothing here imports edgespike: these are the users' files."""

from __future__ import annotations

import snntorch as snn
import torch
from torch import nn


class HiddenStateCharLM(nn.Module):
    """snntorch-tutorial style: one token in, logits out; the neurons keep their own state
    (init_hidden=True). Leaky -> RLeaky -> Synaptic, read out from the Synaptic membrane."""

    def __init__(self, vocab_size: int = 48, width: int = 32):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, width)
        self.fc1 = nn.Linear(width, width)
        self.lif1 = snn.Leaky(beta=torch.linspace(0.5, 0.95, width), threshold=0.8, learn_beta=True, init_hidden=True)
        self.fc2 = nn.Linear(width, width)
        self.lif2 = snn.RLeaky(beta=0.85, linear_features=width, reset_mechanism="zero", init_hidden=True)
        self.fc3 = nn.Linear(width, width)
        self.lif3 = snn.Synaptic(alpha=0.7, beta=0.9, init_hidden=True, output=True)
        self.readout = nn.Linear(width, vocab_size)

    def forward(self, token: torch.Tensor) -> torch.Tensor:
        x = self.embed(token) * 2.0
        spk1 = self.lif1(self.fc1(x))
        spk2 = self.lif2(self.fc2(spk1))
        _, _, mem3 = self.lif3(self.fc3(spk2))
        return self.readout(mem3)


class ExplicitStateCharLM(nn.Module):
    """SpikingLM's contract: forward(tokens[B, S], state) -> (logits[B, S, V], state), init_state of
    zeros; its own loop over num_steps per token. Leaky -> RLeaky (one-to-one) -> Synaptic, rate readout."""

    num_steps = 3

    def __init__(self, vocab_size: int = 48, width: int = 32):
        super().__init__()
        self.width = width
        self.embed = nn.Embedding(vocab_size, width)
        self.fc1 = nn.Linear(width, width)
        self.lif1 = snn.Leaky(beta=0.9, threshold=0.6, reset_delay=False)
        self.fc2 = nn.Linear(width, width)
        self.lif2 = snn.RLeaky(beta=0.8, all_to_all=False, V=torch.linspace(-0.5, 0.5, width))
        self.fc3 = nn.Linear(width, width)
        self.lif3 = snn.Synaptic(alpha=0.6, beta=torch.full((width,), 0.9), learn_beta=True)
        self.readout = nn.Linear(width, vocab_size)

    def init_state(self, batch: int) -> dict[str, torch.Tensor]:
        zeros = lambda: torch.zeros(batch, self.width)  # noqa: E731
        return {"mem1": zeros(), "spk2": zeros(), "mem2": zeros(), "syn3": zeros(), "mem3": zeros()}

    def forward(self, tokens: torch.Tensor, state: dict[str, torch.Tensor] | None = None):
        state = dict(state) if state is not None else self.init_state(tokens.shape[0])
        logits = []
        for s in range(tokens.shape[1]):
            x = self.embed(tokens[:, s]) * 2.0
            rate = 0.0
            for _ in range(self.num_steps):
                spk1, state["mem1"] = self.lif1(self.fc1(x), state["mem1"])
                state["spk2"], state["mem2"] = self.lif2(self.fc2(spk1), state["spk2"], state["mem2"])
                spk3, state["syn3"], state["mem3"] = self.lif3(self.fc3(state["spk2"]), state["syn3"], state["mem3"])
                rate = rate + spk3
            logits.append(self.readout(rate / self.num_steps))
        return torch.stack(logits, dim=1), state


def build_hidden() -> nn.Module:
    torch.manual_seed(0)
    return HiddenStateCharLM()


def build_explicit() -> nn.Module:
    torch.manual_seed(0)
    return ExplicitStateCharLM()
