"""Validation at scale: the spike-following conversion record tells rounding ties from faults,
the rollout's flips are reported per LIF population, and large models validate on fewer tokens.
Independent reference: the LIF law written out here per timestep (float64), not edgespike's op."""

import itertools

import numpy as np
import pytest
import torch

from edgespike import models
from edgespike.artifact import read_manifest
from edgespike.exporters import ExportOptions, export
from edgespike.ops.lif import lif_following
from edgespike.runtimes.onnxruntime import OnnxSession
from edgespike import validate


def _law(current, v0, beta, threshold, reset, delayed, strict, given):
    """The LIF recurrence with its spikes imposed (``given``), written out step by step."""
    fire = (lambda x: x > threshold) if strict else (lambda x: x >= threshold)
    v, previous, potentials = v0.double(), None, []
    for t in range(current.shape[0]):
        i = current[t].double()
        if delayed:
            r = fire(v).double() if previous is None else previous
            v = beta * v + i - r * threshold if reset == "subtract" else beta * v * (1 - r) + i if reset == "zero" else beta * v + i
            u = v
        else:
            u = beta * v + i
        s = given[t].double()
        if not delayed:
            v = u - s * threshold if reset == "subtract" else u * (1 - s) if reset == "zero" else u
        potentials.append(u)
        previous = s
    return v, torch.stack(potentials)


@pytest.mark.parametrize("reset,delayed,strict", list(itertools.product(["subtract", "zero", "none"], [False, True], [False, True])))
def test_lif_following_imposes_the_given_spikes_on_every_law(reset, delayed, strict):
    current, v0 = torch.randn(6, 3, 17) * 0.8 + 0.4, torch.randn(3, 17) * 0.3
    beta, threshold, graded = torch.tensor(0.8), torch.tensor(0.9), torch.tensor(1.0)
    own, own_v = torch.ops.edgespike.lif(current, v0, beta, threshold, graded, reset, delayed, strict, 5.0)
    spikes, v, _ = lif_following(current, v0, beta, threshold, graded, reset, delayed, strict, own)
    assert torch.equal(spikes, own) and torch.allclose(v, own_v, atol=1e-6)  # its own spikes: the op itself
    given = (torch.rand(6, 3, 17) < 0.3).float()  # anything else: the law driven by them
    spikes, v, potentials = lif_following(current, v0, beta, threshold, graded, reset, delayed, strict, given)
    expected_v, expected_potentials = _law(current, v0, 0.8, 0.9, reset, delayed, strict, given)
    assert torch.equal(spikes, given)
    assert torch.allclose(v.double(), expected_v, atol=1e-5) and torch.allclose(potentials.double(), expected_potentials, atol=1e-5)


@pytest.fixture(scope="module")
def onnx_export(tmp_path_factory):
    torch.manual_seed(0)
    model = models.create("pulse", "tiny")
    path = tmp_path_factory.mktemp("validation") / "onnx"
    export(model, "onnx", path, source="pulse:tiny")
    return model, path


def test_onnx_conversion_follows_spikes_and_passes_at_fp32(onnx_export):
    model, path = onnx_export
    record = validate.validate_artifact(path, read_manifest(path), model)
    conversion = record["conversion"]
    assert record["passed"] and record["tolerance"]["applies_to"] == "conversion"
    assert conversion["max_abs_logit_diff"] <= 1e-4 and conversion["top1_agreement"] == 1.0
    assert conversion["flips_beyond_tie_margin"] == 0
    assert record["spike_flip_rate_by_layer"] == {} or max(record["spike_flip_rate_by_layer"].values()) <= record["spike_flip_rate"] * 10


class FlippingSession(OnnxSession):
    """An artifact with a fault: one spike that fired reported as silent, every step."""

    def step(self, token):
        logits = super().step(token)
        spikes = np.array(self.last_spikes[-1], copy=True)
        spikes.reshape(-1)[np.flatnonzero(spikes.reshape(-1))[0]] = 0.0
        self.last_spikes = [*self.last_spikes[:-1], spikes]
        return logits


def test_a_flip_far_from_the_threshold_fails_validation_whatever_the_logits(onnx_export, monkeypatch):
    model, path = onnx_export
    manifest = read_manifest(path)
    monkeypatch.setattr(validate, "_open", lambda d, m: FlippingSession(d, m, validate._onnx_lif_spike_outputs(d, m)))
    record = validate.validate_artifact(path, manifest, model, tokens=list(range(16)))
    assert not record["passed"]
    assert record["conversion"]["flips_beyond_tie_margin"] >= 16 and record["conversion"]["max_flip_margin"] > validate.TIE_MARGIN
    assert "spike flip(s) farther than" in record["reason"]
    last = list(record["spike_flip_rate_by_layer"])[-1]
    assert last.endswith("hidden_lif")  # the rollout's flips, named by population


def test_large_models_validate_on_fewer_tokens():
    small, large = models.create("pulse", "tiny"), models.create("pulse", "pulse-1b", device="meta")
    assert validate.validation_tokens(small) == validate.PROMPT_TOKENS
    assert validate.validation_tokens(large) == validate.MIN_TOKENS  # 1.0B parameters: 64 x 0.1 / 1.0 -> at least 8


def test_top1_agreement_counts_logit_ties_either_way():
    from edgespike.validate import LOGIT_TIE, top1_agrees

    eager = np.array([0.1, 0.5, 0.5, -2.0], np.float32)  # an exact tie at the top (a spike-count readout)
    assert top1_agrees(np.array([0.1, 0.5, 0.5 + 1e-7, -2.0]), eager) and top1_agrees(np.array([0.1, 0.5 + 1e-7, 0.5, -2.0]), eager)
    apart = np.array([0.1, 0.5, 0.5 - 20 * LOGIT_TIE, -2.0], np.float32)
    assert not top1_agrees(np.array([0.1, 0.5, 0.6, -2.0]), apart)


class PrefillOffsetSession(OnnxSession):
    """A prefill entry whose logits differ from eager's by ``offset`` at the token ``at`` (none: everywhere)."""

    offset, at = 0.0, None

    def prefill_chunk(self, tokens):
        logits = np.array(super().prefill_chunk(tokens), copy=True)
        logits[slice(None) if self.at is None else self.at] += self.offset
        return logits


@pytest.fixture(scope="module")
def onnx_prefill_export(onnx_export, tmp_path_factory):
    model, _ = onnx_export
    path = tmp_path_factory.mktemp("validation") / "onnx-prefill"
    export(model, "onnx", path, ExportOptions(prefill_tokens=8), source="pulse:tiny")
    return model, path


@pytest.mark.parametrize("offset,at,passes", [(0.05, None, True), (100.0, 0, False)])
def test_prefill_is_held_to_top1_where_the_conversion_is_checked(onnx_prefill_export, monkeypatch, offset, at, passes):
    """A prefill call carries its chunk's divergence, as the rollout does (a 1B model's ties: 0.96 logits
    after 64 tokens, top-1 kept): beside a conversion record its logits are reported, its top-1 checked."""
    model, path = onnx_prefill_export
    session = type("Offset", (PrefillOffsetSession,), {"offset": offset, "at": at})
    monkeypatch.setattr(validate, "_open", lambda d, m: session(d, m, validate._onnx_lif_spike_outputs(d, m)))
    record = validate.validate_artifact(path, read_manifest(path), model)
    assert record["tolerance"]["applies_to"] == "conversion" and record["prefill"].get("held_to") == "top-1", record["prefill"]
    assert record["prefill"]["max_abs_logit_diff"] >= min(offset, 1.0)
    assert record["passed"] is passes
    assert passes or "prefill: max |logit diff|" in record["reason"]


class CarriedDriftSession(PrefillOffsetSession):
    """Its steps drift from eager by 0.01 per step since the state was last given (a carried divergence, as
    threshold ties give a random-weight 1B model): the free rollout diverges, the conversion is exact."""

    def reset(self):
        super().reset()
        self.since_given = 0

    def set_state(self, values):
        super().set_state(values)
        self.since_given = 0

    def step(self, token):
        logits, self.since_given = super().step(token) + 0.01 * self.since_given, self.since_given + 1
        return logits


def test_prefill_is_reported_not_held_where_the_rollout_carries_a_divergence(onnx_prefill_export, monkeypatch):
    model, path = onnx_prefill_export
    session = type("Drift", (CarriedDriftSession,), {"offset": 100.0, "at": 0})  # a prefill whose argmax moves
    monkeypatch.setattr(validate, "_open", lambda d, m: session(d, m, validate._onnx_lif_spike_outputs(d, m)))
    record = validate.validate_artifact(path, read_manifest(path), model)
    assert record["max_abs_logit_diff"] > record["tolerance"]["max_abs_logit_diff"]  # the free rollout diverged
    assert record["conversion"]["max_abs_logit_diff"] < 1e-4 and record["prefill"]["top1_agreement"] < 1.0
    assert record["passed"] and record["prefill"]["held_to"].startswith("nothing (reported)"), record["prefill"]
