"""Faults found by a hostile-input probe (issue 19), each pinned: a manifest that is JSON but not an
object, a config.json whose sizes disagree with its weights, a SIGKILLed export's staging dir, the
ambient device; and two exports racing into one dir."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from edgespike import models
from edgespike.artifact import read_manifest, staged, write_manifest
from edgespike.errors import EdgespikeError
from edgespike.models import format as model_format
from edgespike.staging import remove_stale

ROOT = Path(__file__).resolve().parent.parent


def _one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message and message
    return message


def test_manifest_that_is_not_an_object_is_a_one_line_error(tmp_path):
    (tmp_path / "manifest.json").write_text("[1, 2, 3]")
    with pytest.raises(EdgespikeError) as err:
        read_manifest(tmp_path)
    assert "must hold a JSON object, not list" in _one_line(err)


@pytest.mark.parametrize("name", ["../outside.bin", "/etc/passwd", "a/../../b"])
def test_manifest_file_names_stay_inside_the_artifact(tmp_path, name):
    artifact = tmp_path / "artifact"
    artifact.mkdir()
    manifest = {"format_version": 1, "target": "onnx", "runtime": "onnxruntime", "model_file": "model.onnx",
                "timesteps": 4, "vocab_size": 8, "states": [], "files": {name: "0" * 64}}
    (artifact / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(EdgespikeError) as err:
        read_manifest(artifact)
    assert "outside" in _one_line(err)


def test_config_sizes_are_checked_against_the_weights_header_before_building(tmp_path, monkeypatch):
    directory = tmp_path / "model"
    models.save(models.create("pulse", "tiny"), directory)
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**config, "d_model": 65536}))  # 17 GB of attention weights
    devices = []
    real_build = model_format.build
    monkeypatch.setattr(model_format, "build", lambda cfg, device=None: devices.append(str(device)) or real_build(cfg, device))
    with pytest.raises(EdgespikeError) as err:
        models.load(directory)
    assert "the config needs" in _one_line(err) and "d_model" not in err.value.args[0].split(":")[0]
    assert devices == ["meta"]  # nothing built for real


def test_config_sizes_past_any_published_model_are_refused(tmp_path):
    directory = tmp_path / "model"
    models.save(models.create("pulse", "tiny"), directory)
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**config, "d_model": 6_000_000}))
    with pytest.raises(EdgespikeError) as err:
        models.load(directory)
    assert "d_model must be an integer in [1, 131,072]" in _one_line(err)


def test_build_honours_the_ambient_device():
    with torch.device("meta"):
        model = models.create("pulse", "tiny")
    assert {p.device.type for p in model.parameters()} == {"meta"}
    assert {p.device.type for p in models.create("pulse", "tiny").parameters()} == {"cpu"}
    with torch.device("meta"):
        assert next(models.build(models.preset_config("pulse", "tiny"), "cpu").parameters()).device.type == "cpu"


WRITER = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from edgespike.artifact import staged, write_manifest
    from edgespike.errors import EdgespikeError

    destination, who, mode = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    try:
        with staged(destination, force=mode == "force") as staging:
            (staging / "model.bin").write_bytes(who.encode() * 100_000)
            write_manifest(staging, {"target": "onnx", "runtime": "onnxruntime", "model_file": "model.bin",
                                     "timesteps": 4, "vocab_size": 8, "states": [], "writer": who})
            print("staged", flush=True)
            if mode == "hang":
                time.sleep(600)
            (destination.parent / f"ready-{who}").touch()  # both writers staged before either commits
            deadline = time.time() + 30
            while len(list(destination.parent.glob("ready-*"))) < 2 and time.time() < deadline:
                time.sleep(0.01)
    except EdgespikeError as err:
        print(f"error: {err}")
        sys.exit(2)
    """
)


def _writer(destination: Path, who: str, mode: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", WRITER, str(destination), who, mode], stdout=subprocess.PIPE, text=True, cwd=ROOT)


def _leftovers(destination: Path) -> list[str]:
    return sorted(p.name for p in destination.parent.iterdir() if p.name.startswith(f".{destination.name}."))


def test_a_sigkilled_export_leaves_nothing_the_next_export_keeps(tmp_path):
    destination = tmp_path / "onnx"
    killed = _writer(destination, "killed", "hang")
    assert killed.stdout.readline().strip() == "staged"
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait()
    assert [name.split("-")[0] for name in _leftovers(destination)] == [".onnx.partial"]

    live = _writer(destination, "live", "hang")  # a running export's staging dir is never touched
    try:
        assert live.stdout.readline().strip() == "staged"
        with staged(destination, force=False) as staging:
            (staging / "model.bin").write_bytes(b"new")
            write_manifest(staging, {"target": "onnx", "runtime": "onnxruntime", "model_file": "model.bin",
                                     "timesteps": 4, "vocab_size": 8, "states": []})
        left = _leftovers(destination)
        assert len(left) == 1 and left[0].startswith(f".onnx.partial-{live.pid}-")
    finally:
        live.kill()
        live.wait()
    read_manifest(destination)
    assert (destination / "model.bin").read_bytes() == b"new"
    assert remove_stale(destination) and _leftovers(destination) == []


def test_a_dead_processes_set_aside_model_dir_is_removed_by_the_next_save(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".model.old-{int(dead.stdout)}-0000"
    (stale / "inner").mkdir(parents=True)
    models.save(models.create("pulse", "tiny"), tmp_path / "model")
    assert _leftovers(tmp_path / "model") == [] and models.load(tmp_path / "model").config.family == "pulse"


@pytest.mark.parametrize("mode", ["keep", "force"])
def test_two_concurrent_exports_into_one_dir(tmp_path, mode):
    destination = tmp_path / "onnx"
    writers = [_writer(destination, who, mode) for who in ("a", "b")]
    outputs = [w.communicate(timeout=60)[0] for w in writers]
    codes = sorted(w.returncode for w in writers)
    if mode == "keep":  # one wins, the other stops with a one-line error
        assert codes == [0, 2], outputs
        assert any("was written by another process while this one ran" in out for out in outputs)
    else:  # both succeed, one after the other
        assert codes == [0, 0], outputs
    manifest = read_manifest(destination)  # complete: every file matches its sha256
    assert (destination / "model.bin").read_bytes() == manifest["writer"].encode() * 100_000
    assert _leftovers(destination) == []


def test_a_crashed_save_keeps_the_previous_model_dir(tmp_path):
    directory = tmp_path / "model"
    models.save(models.create("pulse", "tiny"), directory)
    before = (directory / "model.safetensors").read_bytes()
    with pytest.raises(KeyError):
        model_format.write_dir(directory, {}, {})  # no "family": fails while writing
    assert (directory / "model.safetensors").read_bytes() == before and _leftovers(directory) == []
