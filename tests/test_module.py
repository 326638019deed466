"""Users' own snntorch models (tests/user_models) through edgespike: eager parity with snntorch,
every target's greedy decode against the module run step by step in snntorch, the CLI end to end,
and one-line errors for what cannot be lowered."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from snntorch import utils
from torch import nn

from edgespike import runtimes
from edgespike.errors import EdgespikeError
from edgespike.exporters import ExportOptions, export
from edgespike.models import from_module, load
from edgespike.quant.ternary import absmean_scale, ternary_codes
from edgespike.validate import validate_artifact

USER_MODELS = Path(__file__).parent / "user_models"
sys.path.insert(0, str(USER_MODELS))

import snntorch_models  # noqa: E402

FACTORIES = {"hidden": "build_hidden", "state": "build_explicit"}
PROMPT = [3, 17, 5, 40, 22, 9, 31, 12]
GREEDY_TOKENS = 32


def reference(contract: str) -> nn.Module:
    return getattr(snntorch_models, FACTORIES[contract])().eval()


class SnntorchStepper:
    """The user's module run token by token in snntorch itself: logits[V] of each token."""

    def __init__(self, module: nn.Module, contract: str):
        self.module, self.contract = module, contract
        self.reset()

    def reset(self) -> None:
        utils.reset(self.module)
        self.state = self.module.init_state(1) if self.contract == "state" else None

    @torch.no_grad()
    def step(self, token: int) -> np.ndarray:
        tokens = torch.tensor([[token]])
        if self.contract == "state":
            logits, self.state = self.module(tokens, self.state)
            return logits[0, -1].numpy()
        return self.module(tokens[:, 0])[0].numpy()


def greedy(step, prompt: list[int], count: int) -> list[int]:
    logits = None
    for token in prompt:
        logits = step(token)
    out = []
    for _ in range(count):
        out.append(int(np.argmax(logits)))
        logits = step(out[-1])
    return out


def ternarized(module: nn.Module) -> nn.Module:
    """The module with every nn.Linear's weight replaced by its BitNet b1.58 value, absmean scale x codes."""
    module = copy.deepcopy(module)
    with torch.no_grad():
        for layer in module.modules():
            if isinstance(layer, nn.Linear):
                scale = absmean_scale(layer.weight, False)
                layer.weight.copy_(ternary_codes(layer.weight, scale) * scale)
    return module


@pytest.mark.parametrize("contract", list(FACTORIES))
def test_eager_equals_snntorch_full_sequence_and_token_by_token(contract):
    torch.manual_seed(2)
    tokens = torch.randint(0, 48, (2, 12))
    ref, model = reference(contract), from_module(reference(contract))
    with torch.no_grad():
        if contract == "state":
            expected, _ = ref(tokens)
        else:
            utils.reset(ref)
            expected = torch.stack([ref(tokens[:, s]) for s in range(tokens.shape[1])], dim=1)
        whole, _ = model(tokens)
        state, pieces = None, []
        for s in range(tokens.shape[1]):
            logits, state = model(tokens[:, s : s + 1], state)
            pieces.append(logits)
    assert model.config.contract == contract and model.config.vocab_size == 48
    torch.testing.assert_close(whole, expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(torch.cat(pieces, dim=1), expected, rtol=0, atol=1e-5)


def test_hidden_state_is_lifted_per_neuron_and_starts_at_zero():
    model = from_module(reference("hidden"))
    state = model.init_state(3)
    assert list(state) == ["lif1.mem", "lif2.spk", "lif2.mem", "lif3.syn", "lif3.mem"]
    assert all(v.shape == (3, 32) and not v.any() for v in state.values())


def _export(model, spec, target, weights, directory):
    precision = "fp32" if weights == "fp32" else None
    result = export(model, target, directory, ExportOptions(weights=weights, precision=precision), source=spec,
                    validate=lambda d, m: validate_artifact(d, m, model))
    return result.manifest["validation"]


@pytest.mark.parametrize("contract", list(FACTORIES))
def test_fp32_artifacts_decode_as_snntorch_and_ternary_as_the_ternarized_module(contract, tmp_path, capsys):
    spec = f"{USER_MODELS / 'snntorch_models.py'}:{FACTORIES[contract]}"
    model = load(spec)
    cases = {
        "fp32": SnntorchStepper(reference(contract), contract),
        "ternary": SnntorchStepper(ternarized(reference(contract)), contract),
    }
    for weights, stepper in cases.items():
        expected = greedy(stepper.step, PROMPT, GREEDY_TOKENS)
        for target in ("onnx", "executorch", "neuronchip", "coreml"):
            validation = _export(model, spec, target, weights, tmp_path / weights / target)
            assert validation["passed"], validation
            session = runtimes.load(tmp_path / weights / target)
            got = greedy(session.step, PROMPT, GREEDY_TOKENS)
            with capsys.disabled():
                print(f"\n{contract} {weights} {target}: greedy {'equal' if got == expected else 'differs'}, "
                      f"spike flips {validation.get('spike_flip_rate')}, max|Δ| {validation['max_abs_logit_diff']:.2e}")
            assert got == expected, (target, weights)  # Core ML included: its fp16x2 states keep the dynamics


def test_trained_snntorch_model_through_the_cli_end_to_end(tmp_path):
    project = tmp_path / "project"
    trained = subprocess.run([sys.executable, str(USER_MODELS / "train_char_snn.py"), str(project), "--steps", "200"],
                             capture_output=True, text=True, timeout=600)
    assert trained.returncode == 0, trained.stderr
    losses = json.loads(trained.stdout)
    assert losses["held_out_loss_after"] < losses["held_out_loss_before"] - 1.0
    artifact = tmp_path / "artifact"
    exported = subprocess.run(
        [sys.executable, "-m", "edgespike.cli", "export", f"{project / 'model.py'}:build", "--checkpoint",
         str(project / "weights.safetensors"), "--target", "onnx", "--out", str(artifact), "--json",
         "--prefill-tokens", "8"],  # this family's prefill graph is the step unrolled per token: 8, not 64, keeps it quick
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )
    assert exported.returncode == 0, exported.stderr
    manifest = json.loads(exported.stdout)[0]
    assert manifest["family"] == "module" and manifest["validation"]["passed"]
    assert manifest["source_model"] == f"{project / 'model.py'}:build@{project / 'weights.safetensors'}"
    assert (artifact / "tokenizer.json").is_file()
    session = runtimes.load(artifact)  # the trained model's greedy continuation, as `edgespike generate` runs it
    tokenizer = load(manifest["source_model"]).tokenizer
    continuation = greedy(session.step, tokenizer.encode("The ").ids, 8)
    assert len(tokenizer.decode(continuation)) > 0


BAD_MODEL = '''
import snntorch as snn
import torch
from torch import nn

class WithGRU(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(8, 4)
        self.rnn = nn.GRU(4, 4)
        self.lif = snn.Leaky(beta=0.9, init_hidden=True)

    def forward(self, token):
        return self.lif(self.embed(token))

class Inhibited(nn.Module):
    def __init__(self):
        super().__init__()
        self.lif = snn.Leaky(beta=0.9, init_hidden=True, inhibition=True)

class NotZero(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(8, 4)

    def init_state(self, batch):
        return {"v": torch.ones(batch, 4)}

    def forward(self, tokens, state):
        return self.embed(tokens), state

def gru():
    return WithGRU()

def inhibited():
    return Inhibited()

def not_zero():
    return NotZero()

def broken():
    raise ValueError("the weights dir is not configured")

def not_a_module():
    return 42

NUMBER = 3
'''


@pytest.mark.parametrize(
    "factory, message",
    [
        ("nosuch.py:build", "nosuch.py does not exist; pass FILE.py:FACTORY"),
        ("bad.py:missing", "bad.py has no 'missing'; its functions and classes: Inhibited, NotZero, WithGRU, broken"),
        ("bad.py:NUMBER", "bad.py:NUMBER is a int, not callable"),
        ("bad.py:not_a_module", "returned a int, not a torch.nn.Module"),
        ("bad.py:gru", "module 'module.rnn' of type torch.nn.modules.rnn.GRU cannot be lowered"),
        ("bad.py:inhibited", "snntorch.Leaky at 'lif' uses inhibition"),
        ("bad.py:not_zero", "state 'v' of module does not start at zero"),
    ],
)
def test_bad_user_models_are_named(factory, message, tmp_path, monkeypatch):
    (tmp_path / "bad.py").write_text(BAD_MODEL)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(EdgespikeError, match=re.escape(message)):
        export(load(factory), "onnx", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_factory_that_raises_is_one_line_exit_2(tmp_path):
    (tmp_path / "bad.py").write_text(BAD_MODEL)
    result = subprocess.run([sys.executable, "-m", "edgespike.cli", "export", "bad.py:broken", "--target", "onnx"],
                            capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 2
    assert "bad.py:broken() raised ValueError: the weights dir is not configured" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_checkpoint_errors_name_the_problem(tmp_path):
    spec = f"{USER_MODELS / 'snntorch_models.py'}:build_hidden"
    torch.save({"fc1.weight": torch.zeros(3, 3)}, tmp_path / "wrong.pt")
    with pytest.raises(EdgespikeError, match=r"does not fit the module: missing \['embed.weight'"):
        load(f"{spec}@{tmp_path / 'wrong.pt'}")
    torch.save({"model": nn.Linear(2, 2)}, tmp_path / "pickled.pt")  # not a plain state_dict: weights_only refuses it
    with pytest.raises(EdgespikeError, match="is not readable as safetensors or a torch state_dict"):
        load(f"{spec}@{tmp_path / 'pickled.pt'}")
    good = reference("hidden").state_dict()
    torch.save(good, tmp_path / "good.pt")
    loaded = load(f"{spec}@{tmp_path / 'good.pt'}")
    torch.testing.assert_close(loaded.module.fc1.weight, good["fc1.weight"])


def test_checkpoint_option_needs_a_factory_spec():
    from edgespike.cli import _model_spec

    with pytest.raises(EdgespikeError, match="--checkpoint goes with a FILE.py:FACTORY model"):
        _model_spec("demo", Path("w.pt"))


def test_timesteps_run_a_hidden_module_several_times_per_token_and_set_num_steps():
    hidden = from_module(reference("hidden"), timesteps=3)
    tokens = torch.tensor([[1, 2, 3]])
    ref = reference("hidden")
    with torch.no_grad():
        utils.reset(ref)
        expected = torch.stack([torch.stack([ref(tokens[:, s]) for _ in range(3)]).mean(0) for s in range(3)], dim=1)
        got, _ = hidden(tokens)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    state_model = from_module(reference("state")).retimed(5)
    assert state_model.module.num_steps == 5 and state_model.config.spike.timesteps == 5
