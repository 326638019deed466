"""snntorch's neurons on ``edgespike::lif``: the same laws, so every target keeps their meaning.

``from_snntorch(neuron, path)`` turns a ``snntorch.Leaky``, ``RLeaky``, ``Synaptic`` or ``RSynaptic``
into the module here of the same name: same call signature, same return values, tensors under the
names snntorch gives them (``beta``, ``alpha``, ``threshold``, ``graded_spikes_factor``, ``V``,
``recurrent.weight``), so a snntorch state_dict means the same thing on both. Per step, with
r = H(mem - threshold) the reset signal of the previous membrane (H strict, ``>``, as snntorch's
``mem_reset``) and c the drive (``input_``, plus ``recurrent(spk)`` for the R-neurons):

    Leaky       mem' = beta*mem + c - r*threshold          (subtract)  beta*(1-r)*mem + c  (zero)
    Synaptic    syn' = alpha*syn + c;  mem' = beta*mem + syn' - r*threshold   (subtract)
                mem' = (1 - r)*(beta*mem + syn')  (zero; syn' is not reset)
    RLeaky      mem' = beta*mem + c - r*threshold          (subtract)  (1-r)*(beta*mem + c)  (zero)
    spk = graded_spikes_factor * H(mem' - threshold); alpha, beta clamped to [0, 1].

With ``reset_delay=False`` snntorch then corrects mem' by the step's own spike s:
mem' -= (s / graded_spikes_factor - r) * threshold (subtract) or * mem' (zero). The membrane update
is one call of ``edgespike::lif`` (one timestep, delayed reset); the synaptic filter, the correction
and the R-neurons' recurrent input are plain elementwise ops and a linear (a ``TernaryLinear``, so
``--weights`` applies to it).

Hidden state: a neuron called without its state arguments (snntorch's ``init_hidden=True``, or
explicit neurons called with ``mem=None``) reads and writes ``self.hidden`` (a dict name -> tensor,
zeros when a name is missing, as snntorch starts from zeros); ``edgespike.models.module`` lifts it
into the decode state. With ``init_hidden`` a neuron returns only its spikes unless ``output=True``.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from edgespike.config import SpikeConfig
from edgespike.errors import EdgespikeError
from edgespike.nn.spiking import LIF
from edgespike.nn.ternary_linear import TernaryLinear

RESET_MECHANISMS = ("subtract", "zero", "none")  # snntorch's reset_mechanism_val 0, 1, 2


class Neuron(nn.Module):
    """The parts every snntorch neuron shares: threshold, graded spikes, reset law, hidden state."""

    state_names: ClassVar[tuple[str, ...]]  # the state arguments, in snntorch's call order
    zero_all: ClassVar[bool] = True  # the "zero" reset clears beta*mem + drive (Synaptic, R-neurons), not only mem

    def __init__(self, beta, threshold=1.0, reset_mechanism="subtract", reset_delay=True, graded_spikes_factor=1.0,
                 init_hidden=False, output=False):
        super().__init__()
        if reset_mechanism not in RESET_MECHANISMS:
            raise EdgespikeError(f"reset_mechanism must be one of {RESET_MECHANISMS}, got {reset_mechanism!r}")
        self.reset_mechanism, self.reset_delay = reset_mechanism, bool(reset_delay)
        self.init_hidden, self.output = bool(init_hidden), bool(output)
        self.register_buffer("beta", torch.as_tensor(beta, dtype=torch.float32).clone())
        self.register_buffer("threshold", torch.as_tensor(threshold, dtype=torch.float32).clone())
        self.register_buffer("graded_spikes_factor", torch.as_tensor(graded_spikes_factor, dtype=torch.float32).clone())
        # the population edgespike's tools see (spike statistics, chip mapping): snntorch's delayed,
        # strict law; its beta / threshold / graded buffers are this neuron's (shared, not in the state_dict)
        zeroed_before = self.zero_all and self.reset_mechanism == "zero"  # see membrane()
        self.lif = LIF(SpikeConfig(reset="none" if zeroed_before else self.reset_mechanism, delayed_reset=True, strict=True))
        for name in ("beta", "threshold", "graded_spikes_factor"):
            setattr(self.lif, name, getattr(self, name))
        self.hidden: dict[str, Tensor] = {}

    def extra_repr(self) -> str:
        return f"reset_mechanism={self.reset_mechanism}, reset_delay={self.reset_delay}, init_hidden={self.init_hidden}"

    def forward(self, input_: Tensor, *state: Tensor | None):
        if len(state) > len(self.state_names):
            raise TypeError(f"{type(self).__name__} takes input_ and {', '.join(self.state_names)}")
        state = state + (None,) * (len(self.state_names) - len(state))
        from_hidden = all(s is None for s in state)
        if from_hidden:
            state = tuple(self.hidden.get(name) for name in self.state_names)
        state = tuple(torch.zeros_like(input_) if s is None else s for s in state)
        spk, new_state = self.step(input_, dict(zip(self.state_names, state)))
        outputs = tuple(new_state[name] for name in self.state_names if name != "spk")
        if from_hidden:
            self.hidden = new_state
            if self.init_hidden and not self.output:
                return spk
        return (spk, *outputs)

    def step(self, input_: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        raise NotImplementedError

    def reset_signal(self, mem: Tensor) -> Tensor:
        """r: 1 where the previous membrane is above threshold (snntorch's ``mem_reset``)."""
        return (mem > self.threshold.to(mem.dtype)).to(mem.dtype)

    def membrane(self, drive: Tensor, mem: Tensor) -> tuple[Tensor, Tensor]:
        """One step of the membrane on ``edgespike::lif``: (spikes, new membrane). Where the "zero"
        reset clears the whole integrated value (``zero_all``), drive and mem are zeroed first and
        the op runs without reset. Without reset_delay, snntorch fires on the delayed-reset
        membrane and then corrects it by the step's own spike; so does this."""
        r = self.reset_signal(mem)
        if self.zero_all and self.reset_mechanism == "zero":
            drive, mem = drive * (1.0 - r), mem * (1.0 - r)
        spikes, new_mem = self.lif(drive.unsqueeze(0), mem)
        spk = spikes[0]
        if not self.reset_delay and self.reset_mechanism != "none":
            do_reset = spk / self.graded_spikes_factor.to(spk.dtype) - r
            new_mem = new_mem - do_reset * (self.threshold.to(spk.dtype) if self.reset_mechanism == "subtract" else new_mem)
        return spk, new_mem


class Leaky(Neuron):
    """``snntorch.Leaky``: forward(input_, mem) -> (spk, mem)."""

    state_names = ("mem",)
    zero_all = False

    def step(self, input_, state):
        spk, mem = self.membrane(input_, state["mem"])
        return spk, {"mem": mem}


class Synaptic(Neuron):
    """``snntorch.Synaptic``: forward(input_, syn, mem) -> (spk, syn, mem)."""

    state_names = ("syn", "mem")

    def __init__(self, alpha, beta, **kwargs):
        super().__init__(beta, **kwargs)
        self.register_buffer("alpha", torch.as_tensor(alpha, dtype=torch.float32).clone())

    def synaptic(self, input_: Tensor, state: dict[str, Tensor], feedback: Tensor | None = None):
        """(spikes, new state); ``feedback`` is added after the input, in snntorch's order."""
        syn = self.alpha.to(input_.dtype).clamp(0.0, 1.0) * state["syn"] + input_
        syn = syn if feedback is None else syn + feedback
        spk, mem = self.membrane(syn, state["mem"])
        return spk, {"syn": syn, "mem": mem}

    def step(self, input_, state):
        return self.synaptic(input_, state)


class Recurrent:
    """The R-neurons' feedback of their own previous spikes: ``recurrent`` (a linear, all_to_all)
    or the elementwise weight ``V``."""

    def init_recurrent(self, recurrent: nn.Linear | None, V) -> None:
        if recurrent is not None:
            self.recurrent = TernaryLinear(recurrent.in_features, recurrent.out_features, bias=recurrent.bias is not None,
                                           mode="float")
            self.recurrent.load_state_dict(recurrent.state_dict())
        else:
            self.recurrent = None
            self.register_buffer("V", torch.as_tensor(V, dtype=torch.float32).clone())

    def feedback(self, spk: Tensor) -> Tensor:
        return self.recurrent(spk) if self.recurrent is not None else spk * self.V.to(spk.dtype)


class RLeaky(Recurrent, Neuron):
    """``snntorch.RLeaky``: forward(input_, spk, mem) -> (spk, mem)."""

    state_names = ("spk", "mem")

    def __init__(self, beta, recurrent: nn.Linear | None = None, V=1.0, **kwargs):
        super().__init__(beta, **kwargs)
        self.init_recurrent(recurrent, V)

    def step(self, input_, state):
        spk, mem = self.membrane(input_ + self.feedback(state["spk"]), state["mem"])
        return spk, {"spk": spk, "mem": mem}


class RSynaptic(Recurrent, Synaptic):
    """``snntorch.RSynaptic``: forward(input_, spk, syn, mem) -> (spk, syn, mem)."""

    state_names = ("spk", "syn", "mem")

    def __init__(self, alpha, beta, recurrent: nn.Linear | None = None, V=1.0, **kwargs):
        super().__init__(alpha, beta, **kwargs)
        self.init_recurrent(recurrent, V)

    def step(self, input_, state):
        spk, new = self.synaptic(input_, state, self.feedback(state["spk"]))
        return spk, {"spk": spk, **new}


NEURONS: dict[str, type[Neuron]] = {"Leaky": Leaky, "Synaptic": Synaptic, "RLeaky": RLeaky, "RSynaptic": RSynaptic}


def is_snntorch(module: nn.Module) -> bool:
    return type(module).__module__.split(".")[0] == "snntorch"


def from_snntorch(neuron: nn.Module, path: str) -> Neuron:
    """The edgespike neuron computing what ``neuron`` (a snntorch neuron at ``path``) computes;
    an EdgespikeError naming the neuron and the option when it cannot."""
    kind = type(neuron).__name__
    where = f"snntorch.{kind} at {path!r}"
    if kind not in NEURONS:
        raise EdgespikeError(f"{where} is not supported; edgespike lowers snntorch {', '.join(NEURONS)}")
    for option, unsupported in (("inhibition", bool(neuron.inhibition)), ("state_quant", bool(neuron.state_quant))):
        if unsupported:
            raise EdgespikeError(f"{where} uses {option}, which edgespike does not lower; train without it")
    common = dict(
        threshold=neuron.threshold.detach(),
        reset_mechanism=RESET_MECHANISMS[int(neuron.reset_mechanism_val)],
        # snntorch 1.0.0's RSynaptic computes its reset_delay=False correction into locals and drops
        # it (and raises TypeError called without state): what it computes is the delayed law
        reset_delay=neuron.reset_delay or kind == "RSynaptic",
        graded_spikes_factor=neuron.graded_spikes_factor.detach(),
        init_hidden=neuron.init_hidden,
        output=neuron.output,
    )
    if kind in ("RLeaky", "RSynaptic"):
        if neuron.all_to_all and not isinstance(neuron.recurrent, nn.Linear):
            raise EdgespikeError(f"{where} has a convolutional recurrent connection, which edgespike does not lower; "
                                 "use linear_features (all_to_all) or all_to_all=False")
        common.update(recurrent=neuron.recurrent if neuron.all_to_all else None,
                      V=None if neuron.all_to_all else neuron.V.detach())
    if kind in ("Synaptic", "RSynaptic"):
        common["alpha"] = neuron.alpha.detach()
    lowered = NEURONS[kind](beta=neuron.beta.detach(), **common)
    return lowered.to(neuron.beta.device)
