"""The command line as a user runs it: output, JSON, exit codes, one-line errors."""

import json
import subprocess
import sys

import pytest


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "edgespike.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=600)


def test_models_json_lists_every_family_and_the_evospikenet_table():
    result = run("models", "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)["models"]
    assert {r["family"] for r in rows} == {"pulse", "slms_pulse", "spikingbrain", "spikingbrain_hf", "evospikenet", "neurogen", "ultimate", "nir_graph"}
    origins = {r["family"]: r["origin"] for r in rows}
    assert origins["slms_pulse"] == origins["spikingbrain_hf"] == "as published"  # their real checkpoints import
    assert origins["pulse"] == "edgespike's design after seed 003" and origins["nir_graph"] == "built from a NIR graph"
    assert all(o.startswith("edgespike's design after seed") for f, o in origins.items() if f in {"spikingbrain", "evospikenet", "neurogen", "ultimate"})
    evo = {r["preset"]: r for r in rows if r["family"] == "evospikenet"}
    for preset, billions in {"3b-balanced": 2.7, "3b-wider": 3.2, "3b-deeper": 3.3, "7b-llama": 6.7, "7b-larger": 8.3}.items():
        row = evo[preset]
        formula = 2 * row["vocab_size"] * row["d_model"] + 12 * row["n_layers"] * row["d_model"] ** 2
        assert abs(row["parameters"] - formula) <= (2 * row["n_layers"] + 1) * row["d_model"]  # norm weights only
        assert round(row["parameters"] / 1e9, 1) == billions


@pytest.mark.parametrize(
    "args,message",
    [
        (["export", "nosuch:tiny"], "unknown model family 'nosuch'"),
        (["export", "pulse:tiny", "--target", "tpu"], "unknown target 'tpu'"),
        (["train", "pulse", "--steps", "0"], "--steps must be > 0"),
        (["train", "evospikenet", "--dropout", "0.1"], "the evospikenet family has no dropout"),
        (["train", "pulse", "--dropout", "1.5"], "dropout must be in [0, 1), got 1.5"),
        (["generate", "/no/such/model", "--prompt", "hi"], "neither a model dir"),
        (["generate", "pulse:tiny", "--prompt", "hi"], "has no tokenizer"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, message):
    result = run(*args)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") <= 1 or "error:" in result.stderr.strip().splitlines()[-1]


def test_train_then_generate(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the spiking model reads the text and the text reads the model.\n" * 300)
    out = tmp_path / "run"
    result = run("train", "pulse", "--corpus", str(corpus), "--tokenizer", "char", "--steps", "4", "--seq-len", "16",
                 "--batch-size", "2", "--eval-every", "2", "--out", str(out), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["vocab_size"] == len(set(corpus.read_text())) + 1
    assert report["val_ppl"] > 1 and set(report["spike_rates"]) and report["command"].startswith("edgespike train pulse")
    assert (out / "model" / "tokenizer.json").is_file() and (out / "metrics.json").is_file()
    again = run("train", "pulse", "--corpus", str(corpus), "--tokenizer", "char", "--steps", "4", "--out", str(out))
    assert again.returncode == 2 and "already holds a run" in again.stderr
    generated = run("generate", str(out / "model"), "--prompt", "the ", "--max-new-tokens", "8", "--temperature", "0")
    assert generated.returncode == 0, generated.stderr
    assert generated.stdout.startswith("the ") and len(generated.stdout) == len("the ") + 8 + 1  # 8 chars + newline


def test_export_demo_to_onnx_validates_numerically(tmp_path):
    """The bundled demo (trained, ternary) exports and matches eager on held-out text."""
    result = run("export", "--target", "onnx", "--out", str(tmp_path / "onnx"), "--json")
    assert result.returncode == 0, result.stderr
    (manifest,) = json.loads(result.stdout)
    v = manifest["validation"]
    assert manifest["source_model"] == "demo" and manifest["family"] == "pulse" and manifest["timesteps"] == 4
    assert v["passed"] and v["tokens"] == 64 and v["top1_agreement"] >= 0.99 and v["max_abs_logit_diff"] <= 1e-3
    assert v["spike_flip_rate"] is not None and v["spike_flip_rate"] <= 0.01
    assert (tmp_path / "onnx" / "tokenizer.json").is_file()
    from edgespike.models import load

    fp32_bytes = 4 * load("demo").num_parameters()
    assert (tmp_path / "onnx" / "model.onnx").stat().st_size < 0.3 * fp32_bytes  # INT2 codes, fp32 embedding
    greedy = ["--prompt", "The assert statement", "--max-new-tokens", "12", "--temperature", "0"]
    from_artifact = run("generate", str(tmp_path / "onnx"), *greedy)
    from_eager = run("generate", "demo", *greedy)
    assert from_artifact.returncode == 0 and from_artifact.stdout == from_eager.stdout


def test_every_help_text_survives_rich_markup():
    """`--help` renders help through rich markup, which drops a lowercase [tag] as a style: each must be
    escaped (\\[default]) to reach the user."""
    import typer
    from rich.text import Text

    from edgespike.cli import app

    def walk(command):
        yield command
        for sub in getattr(command, "commands", {}).values():
            yield from walk(sub)

    helps = [param.help for command in walk(typer.main.get_command(app)) for param in command.params if getattr(param, "help", None)]
    assert len(helps) > 50
    for text in helps:
        assert Text.from_markup(text).plain == text.replace("\\[", "["), text


def test_train_init_starts_from_a_model_dirs_weights(tmp_path):
    """--init: ternary training that starts from a float run's weights and tokenizer (at a vanishing
    learning rate its latent weights stay the float model's, where a fresh start draws new ones)."""
    import torch

    from edgespike import models

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the spiking model reads the text and the text reads the model.\n" * 300)
    common = ("--corpus", str(corpus), "--tokenizer", "char", "--steps", "2", "--seq-len", "16", "--batch-size", "2", "--json")
    assert run("train", "pulse", "--float", "--seed", "1", "--out", str(tmp_path / "float"), *common).returncode == 0
    result = run("train", "pulse", "--ternary", "--lr", "1e-12", "--init", str(tmp_path / "float" / "model"),
                 "--out", str(tmp_path / "ternary"), *common)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["weights"] == "ternary" and report["init"] == str(tmp_path / "float" / "model")
    start, trained = models.load(tmp_path / "float" / "model"), models.load(tmp_path / "ternary" / "model")
    assert trained.config.weights == "ternary"
    for (name, before), after in zip(start.state_dict().items(), trained.state_dict().values()):
        assert torch.allclose(before, after, atol=1e-6), name
    assert (tmp_path / "float" / "model" / "tokenizer.json").read_text() == (tmp_path / "ternary" / "model" / "tokenizer.json").read_text()
    wrong = run("train", "evospikenet", "--init", str(tmp_path / "float" / "model"), "--out", str(tmp_path / "evo"), *common)
    assert wrong.returncode == 2 and "--init:" in wrong.stderr and "holds a pulse model" in wrong.stderr
