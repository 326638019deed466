"""Streamed export (edgespike.models.streaming): a model filled tensor by tensor, each linear frozen
as it is read, exports byte for byte what the in-memory path exports; its peak memory does not
grow with the fp32 model (a 25M-parameter model, measured in a subprocess); bad model dirs are
refused before any export work."""

import json
import subprocess
import sys

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from edgespike import models
from edgespike.capture import decode_step
from edgespike.errors import EdgespikeError
from edgespike.exporters import ExportOptions, export
from edgespike.models.streaming import large_parameters_on_meta, load_frozen, random_tensor

FAMILIES = ["pulse", "neurogen", "slms_pulse"]  # TernaryLinear + tied embeddings, persistent buffers, nn.Linear


@pytest.mark.parametrize("family", FAMILIES)
def test_streamed_and_in_memory_onnx_exports_are_byte_identical(family, tmp_path):
    models.save(models.create(family, "tiny"), tmp_path / "model")
    in_memory = export(models.load(str(tmp_path / "model")), "onnx", tmp_path / "a")
    streamed = export(load_frozen(tmp_path / "model"), "onnx", tmp_path / "b")
    assert (in_memory.path / "model.onnx").read_bytes() == (streamed.path / "model.onnx").read_bytes()


def test_streamed_and_in_memory_coreml_exports_are_identical(tmp_path):
    from edgespike.runtimes.coreml.interpreter import MILProgram

    models.save(models.create("pulse", "tiny"), tmp_path / "model")
    results = [export(model, "coreml", tmp_path / how) for how, model in
               (("in-memory", models.load(str(tmp_path / "model"))), ("streamed", load_frozen(tmp_path / "model")))]
    # the weights byte for byte, the program op for op (coremltools numbers its op names per process)
    weights = [(r.path / "model.mlpackage/Data/com.apple.CoreML/weights/weight.bin").read_bytes() for r in results]
    programs = [MILProgram.load(r.path / "model.mlpackage").function.operations for r in results]
    assert weights[0] == weights[1] and len(weights[0]) > 1000
    assert [op.op_type for op in programs[0]] == [op.op_type for op in programs[1]]


def test_streamed_int8_and_retimed_equal_in_memory(tmp_path):
    models.save(models.create("pulse", "tiny"), tmp_path / "model")
    streamed = decode_step(load_frozen(tmp_path / "model", weights="int8", timesteps=6))
    in_memory = decode_step(models.load(str(tmp_path / "model")), timesteps=6, weights="int8")
    assert streamed.model.config.spike.timesteps == 6
    for token in (3, 1, 4):
        assert torch.equal(streamed.advance(token), in_memory.advance(token))


def test_large_parameters_are_never_allocated_while_building():
    with large_parameters_on_meta(min_elements=1000):
        model = models.create("pulse", "tiny")
    assert model.embed.weight.is_meta and model.layers[0].up.weight.is_meta  # 256 x 64 and 128 x 64
    assert not model.norm.weight.is_meta  # 64 elements: built as the family builds it


def test_preset_weights_are_seeded_per_tensor():
    first, second = load_frozen("pulse:tiny"), load_frozen("pulse:tiny")
    for (name, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items()):
        assert torch.equal(a, b), name
    like = torch.empty(128, 64, device="meta")
    assert torch.equal(random_tensor("layers.0.up.weight", like), random_tensor("layers.0.up.weight", like))
    assert not torch.equal(random_tensor("layers.0.up.weight", like), random_tensor("layers.1.up.weight", like))
    assert random_tensor("x", like).std().item() == pytest.approx(64**-0.5, rel=0.05)


def test_streamed_w8aspike_gets_its_group_scales_from_the_weight_or_the_model_dir(tmp_path, monkeypatch):
    """A preset's streamed QuantLinear computes its int8 group scales from its own (streamed) weight,
    as a fresh model does; a model dir's scales are its own. (Every parameter streamed: the tiny
    preset's are under STREAMED_MIN_ELEMENTS.)"""
    from edgespike.models import streaming

    monkeypatch.setattr(streaming, "STREAMED_MIN_ELEMENTS", 1)
    model = load_frozen("spikingbrain_hf:tiny", weights="fp32")
    quantized = {path: m for path, m in model.named_modules() if hasattr(m, "weight_quantizer")}
    assert quantized
    for path, linear in quantized.items():
        weight = random_tensor(f"{path}.weight", linear.weight)
        grouped = weight.reshape(linear.out_features, -1, linear.weight_quantizer.group)
        assert torch.equal(linear.weight_quantizer.scales, grouped.abs().amax(-1, keepdim=True).clamp_min(1e-8) / 127), path
    saved = models.create("spikingbrain_hf", "tiny")
    for module in saved.modules():
        if hasattr(module, "weight_quantizer"):
            module.weight_quantizer.scales.mul_(2.0)
    models.save(saved, tmp_path / "model")
    streamed = load_frozen(tmp_path / "model")
    for path, module in saved.named_modules():
        if hasattr(module, "weight_quantizer"):
            assert torch.equal(streamed.get_submodule(path).weight_quantizer.scales, module.weight_quantizer.scales), path


def test_a_streamed_model_is_used_as_frozen_and_refuses_another_format():
    model = load_frozen("pulse:tiny")
    assert decode_step(model).model is model  # no copy
    with pytest.raises(EdgespikeError, match="streamed frozen to ternary"):
        decode_step(model, weights="int8")


def test_a_missing_tensor_is_named_before_any_export_work(tmp_path):
    models.save(models.create("pulse", "tiny"), tmp_path / "model")
    weights = tmp_path / "model" / "model.safetensors"
    tensors = load_file(str(weights))
    del tensors["layers.1.down.weight"]
    save_file(tensors, str(weights))
    with pytest.raises(EdgespikeError, match=r"lacks 1 tensor.*layers\.1\.down\.weight"):
        load_frozen(tmp_path / "model")


PEAK = """
import json, sys, threading, time
from pathlib import Path
from edgespike.exporters import export
from edgespike import models
from edgespike.models.streaming import load_frozen
import onnx, onnxruntime  # noqa: F401  (the toolchain's own memory is not the model's)

def resident():
    return int(open("/proc/self/statm").read().split()[1]) * 4096

peak = [0]
def sample():
    while True:
        peak[0] = max(peak[0], resident())
        time.sleep(0.001)

before = resident()
threading.Thread(target=sample, daemon=True).start()
model = load_frozen(sys.argv[1]) if sys.argv[2] == "streamed" else models.load(sys.argv[1])
export(model, "onnx", Path(sys.argv[3]))
print(json.dumps({"growth": peak[0] - before}))
"""


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="resident memory is read from /proc (Linux)")
def test_streamed_export_memory_does_not_scale_with_the_fp32_model(tmp_path):
    """4-layer pulse models of width 512 and 1024 (the same graph; 141 MB of fp32 weights apart),
    exported in a subprocess each: peak RSS grows with the weights by well under their fp32 size
    when streamed (int8 codes are a quarter of it), and by more than it in memory (the control:
    the measurement can fail). The slope, not the total: torch.export and the ONNX builder cost
    ~200 MB whatever the weights."""
    growth, fp32_bytes = {}, {}
    for width in (512, 1024):
        model = models.create("pulse", "tiny", d_model=width, n_layers=4, n_heads=8, n_kv_heads=4, ffn_dim=4 * width, vocab_size=1024)
        models.save(model, tmp_path / f"model{width}")
        fp32_bytes[width] = 4 * model.num_parameters()
        for how in ("streamed", "in-memory"):
            run = subprocess.run([sys.executable, "-c", PEAK, str(tmp_path / f"model{width}"), how, str(tmp_path / f"{how}{width}")],
                                 capture_output=True, text=True, check=True)
            growth[how, width] = json.loads(run.stdout.strip().splitlines()[-1])["growth"]
    slope = {how: (growth[how, 1024] - growth[how, 512]) / (fp32_bytes[1024] - fp32_bytes[512]) for how in ("streamed", "in-memory")}
    print(f"peak RSS growth per fp32 byte: streamed {slope['streamed']:.2f}, in memory {slope['in-memory']:.2f} ({growth})")
    assert slope["streamed"] < 0.6 and slope["in-memory"] > 1.0, (slope, growth)


def test_not_enough_disk_is_refused_before_any_work(tmp_path, monkeypatch):
    import shutil as real_shutil

    from edgespike import staging

    usage = real_shutil.disk_usage(tmp_path)
    monkeypatch.setattr(staging.shutil, "disk_usage", lambda path: usage._replace(free=10_000))
    with pytest.raises(EdgespikeError, match=r"not enough disk space for the onnx artifact: about 0\.\d\d MB needed .* 0\.01 MB free"):
        export(models.create("pulse", "tiny"), "onnx", tmp_path / "out")
    assert list(tmp_path.iterdir()) == []  # nothing staged, nothing half-written


def test_a_model_too_large_for_executorch_names_the_numbers(tmp_path, monkeypatch):
    from edgespike.exporters import executorch

    monkeypatch.setattr(executorch.os, "sysconf", lambda name: {"SC_PAGE_SIZE": 4096, "SC_PHYS_PAGES": 10}[name])
    model = models.create("pulse", "tiny")
    needed = executorch.LOWERING_BYTES_PER_PARAMETER * model.num_parameters() / 1e6
    with pytest.raises(EdgespikeError, match=rf"a 0\.00B-parameter model needs about {needed:.2f} MB of memory to lower to "
                                             r"executorch .*, this machine has 0\.04 MB; export it to onnx or coreml"):
        export(model, "executorch", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_no_traced_program_outlives_an_executorch_export(tmp_path):
    """Caches of torch (fake-tensor dispatch) and executorch (the partitioner's is_same_node) kept every program
    traced while lowering alive, constants and all: on an 8-layer d2048 pulse 0.74 GB after its ExecuTorch export."""
    import gc

    def traced_programs() -> int:
        gc.collect()
        return sum(type(o) is torch.export.ExportedProgram for o in gc.get_objects())  # (isinstance would warn on proxies)

    model, before = models.create("pulse", "tiny"), traced_programs()
    export(model, "executorch", tmp_path / "executorch", ExportOptions(prefill_tokens=2))
    assert traced_programs() == before
