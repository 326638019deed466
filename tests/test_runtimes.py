"""Runtimes: sessions over artifacts, integrity checks, generation and the benchmark."""

import io
import json
import sys

import pytest
import torch

from edgespike import models
from edgespike.errors import EdgespikeError
from edgespike.exporters import export
from edgespike.generation import SamplingOptions, eager_stepper, generate_ids, session_stepper
from edgespike.runtimes import load


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return models.create("pulse", "tiny")


@pytest.fixture(scope="module")
def onnx_artifact(tmp_path_factory, tiny_model):
    path = tmp_path_factory.mktemp("artifacts") / "onnx"
    export(tiny_model, "onnx", path, source="pulse:tiny")
    return path


def test_greedy_generation_from_the_artifact_equals_eager(onnx_artifact, tiny_model):
    greedy = SamplingOptions(max_new_tokens=16, temperature=0)
    prompt = [5, 17, 99, 3]
    from_artifact = list(generate_ids(session_stepper(load(onnx_artifact)), prompt, greedy))
    from_eager = list(generate_ids(eager_stepper(tiny_model), prompt, greedy))
    assert from_artifact == from_eager


def test_reset_restarts_the_state(onnx_artifact):
    session = load(onnx_artifact)
    first = session.step(7)
    session.step(8)
    session.reset()
    assert (session.step(7) == first).all()


@pytest.mark.parametrize("target", ["onnx", "executorch", "nir"])
def test_set_state_overwrites_the_carried_state(target, tiny_model, tmp_path):
    """A fresh session given eager's state after a prompt continues as eager does (validation's
    state-synced conversion records rest on it), and differs from a fresh session's step.
    (ExecuTorch: the .pte's set_state method; NIR: the host loop's state.) The session keeps a
    copy: eager stepping first, in place, must not change what the session starts from."""
    from edgespike.runtimes.eager import EagerSession

    result = export(tiny_model, target, tmp_path / target)
    session, reference = load(result.path), EagerSession(tiny_model, result.manifest["timesteps"], result.manifest["weights"])
    for token in (5, 17, 3, 99, 42):
        reference.step(token)
    session.set_state({name: value.numpy() for name, value in reference.step_module.state().items()})
    theirs, ours = reference.step(7), session.step(7)
    assert abs(ours - theirs).max() <= 1e-4
    session.reset()
    assert abs(session.step(7) - theirs).max() > 1e-2


def test_token_outside_the_vocab(onnx_artifact):
    with pytest.raises(EdgespikeError, match="outside the vocabulary"):
        load(onnx_artifact).step(256)


def _copy(artifact, tmp_path):
    import shutil

    return shutil.copytree(artifact, tmp_path / "copy")


def test_modified_file_fails_the_checksum(onnx_artifact, tmp_path):
    copy = _copy(onnx_artifact, tmp_path)
    with open(copy / "model.onnx", "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(EdgespikeError, match="does not match its sha256"):
        load(copy)


def test_unknown_manifest_version(onnx_artifact, tmp_path):
    copy = _copy(onnx_artifact, tmp_path)
    manifest = json.loads((copy / "manifest.json").read_text())
    (copy / "manifest.json").write_text(json.dumps({**manifest, "format_version": 99}))
    with pytest.raises(EdgespikeError, match="format_version 99; this edgespike reads version 1"):
        load(copy)


def test_runtime_not_installed(onnx_artifact, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if absent
    with pytest.raises(EdgespikeError, match="onnxruntime runtime is not installed"):
        load(onnx_artifact)


def test_bench_reports_every_entry_against_eager(onnx_artifact):
    from edgespike.bench import BenchOptions, bench

    report = bench([str(onnx_artifact)], BenchOptions(prompt_tokens=4, new_tokens=8, repeats=1))
    eager, onnx = report["results"]
    assert eager["name"] == "eager" and eager["speedup_vs_baseline"] == 1.0
    assert onnx["runtime"].startswith("onnxruntime") and onnx["artifact_bytes"] > 0
    for row in (eager, onnx):
        assert 0 < row["p50_ms"] <= row["p90_ms"] <= row["p99_ms"] and row["peak_rss_mb"] > 50
        assert row["tokens_per_s"] > 0 and row["ttft_s"] > 0 and row["prompt_token_by_token_s"] > 0 and row["prompt_tokens"] == 4
        assert row["bytes_per_s"] == pytest.approx(row["bytes_per_token"] * row["tokens_per_s"])
    assert onnx["bytes_per_token"] == onnx["artifact_bytes"] and onnx["prefill_tokens"] == 0  # exported without a prefill entry
    assert eager["prefill_tokens"] == 64 and eager["bytes_per_token"] > 0
    assert report["host"]["cores"] >= 1 and report["host"]["versions"]["torch"].startswith("2.13")
    roof = report["roofline"]  # the host's decode limit: no runtime beats it
    assert roof["bytes_per_token"] > 0 and roof["roofline_tokens_per_s"] > 0
    assert all(0 < row["fraction_of_roofline"] <= 1 for row in (eager, onnx))
    assert onnx["fraction_of_roofline"] == pytest.approx(onnx["tokens_per_s"] / roof["roofline_tokens_per_s"])
    from rich.console import Console

    from edgespike.cli import bench_tables

    screen = Console(width=80, record=True, file=io.StringIO())
    for table in bench_tables(report):
        screen.print(table)
    text = screen.export_text()
    assert "…" not in text and "vs eager" in text and "peak MB" in text and "onnx" in text  # 80 columns, no cell cut
