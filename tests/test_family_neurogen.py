"""neurogen: the seed's module sizes and fan-in, the fixed sparse wiring, the recurrent state."""

import pytest
import torch

from edgespike.config import ConfigError
from edgespike.models import neurogen  # noqa: F401  (registers the family)
from edgespike.models.neurogen import NeuroGenConfig, Synapses
from edgespike.models.registry import create

SEED_TABLE = {  # seed 001, "Module-by-Module Scaling", column "New"
    "thalamus": 1024,
    "wernicke": 10240,
    "broca": 10240,
    "hippocampus": 5120,
    "pfc": 10240,
    "basal_ganglia": 2560,
}


@pytest.fixture(scope="module")
def full():
    return create("neurogen", "neurogen-2.0", device="meta")


def test_full_preset_population_sizes_match_the_seed(full):
    state = full.init_state(1)
    assert {name: state[f"{name}.v"].shape[1] for name in SEED_TABLE} == SEED_TABLE
    assert sum(SEED_TABLE.values()) == 39424
    assert full.config.vocab_size == 50257
    assert full.readout.in_features == SEED_TABLE["broca"]


def test_full_preset_fan_in_is_within_48_to_96_per_post_neuron(full):
    for name, population in full.populations.items():
        indices = [synapses.idx for synapses in population.synapses.values()]
        assert all(idx.shape[0] == SEED_TABLE[name] for idx in indices), name
        assert 48 <= sum(idx.shape[1] for idx in indices) <= 96, name
    assert 1.5e6 <= full.num_synapses() <= 2.0e6  # the seed's "~1.5-2.0 million synapses"


def test_wiring_is_in_range_distinct_and_deterministic():
    torch.manual_seed(1)
    first = create("neurogen", "tiny")
    torch.manual_seed(2)  # the wiring has its own generator: the global seed must not matter
    second = create("neurogen", "tiny")
    rewired = create("neurogen", "tiny", wiring_seed=1)
    for name, population in first.populations.items():
        for pre, synapses in population.synapses.items():
            idx = synapses.idx
            assert idx.dtype == torch.int64
            assert 0 <= idx.min() and idx.max() < first.config.size(pre)
            assert (idx[:, 1:] > idx[:, :-1]).all(), f"{pre} -> {name}: repeated pre neuron in a row"
            assert torch.equal(idx, second.populations[name].synapses[pre].idx)
    assert not torch.equal(first.populations["pfc"].synapses["pfc"].idx, rewired.populations["pfc"].synapses["pfc"].idx)


def test_gather_equals_the_dense_matmul():
    synapses = Synapses(n_pre=20, n_post=7, k=5, std=1.0, generator=torch.Generator().manual_seed(0))
    dense = torch.zeros(7, 20).index_put_((torch.arange(7)[:, None].expand(7, 5), synapses.idx), synapses.weight.detach())
    spikes = (torch.rand(3, 2, 20) < 0.3).float()
    torch.testing.assert_close(synapses(spikes), spikes @ dense.T)


@torch.no_grad()
def test_recurrent_state_changes_the_output():
    model = create("neurogen", "tiny").eval()
    token = torch.tensor([[5]])
    _, after_a = model(torch.randint(0, 256, (1, 6)))
    _, after_b = model(torch.randint(0, 256, (1, 6)))
    assert not torch.equal(model(token, after_a)[0], model(token, after_b)[0])

    recurrent = ("hippocampus.s", "pfc.s")
    assert all(after_a[name].sum() > 0 for name in recurrent), "no carried spikes: the check below would be vacuous"
    forgotten = {name: torch.zeros_like(value) if name in recurrent else value for name, value in after_a.items()}
    assert not torch.equal(model(token, after_a)[0], model(token, forgotten)[0])


@pytest.mark.parametrize(
    "change,message",
    [({"n_layers": 2}, "n_layers is the number of populations"), ({"fan_in": 2}, "choose fan_in")],
)
def test_config_rejects_what_it_cannot_build(change, message):
    with pytest.raises(ConfigError, match=message):
        NeuroGenConfig(**change)
