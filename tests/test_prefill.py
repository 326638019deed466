"""The prefill entry: a prompt in chunks of ``prefill.tokens`` per call, the state carried, the same
logits as token by token (fp32 reassociation apart) on every target that has one."""

import json

import numpy as np
import pytest
import torch

from edgespike import models
from edgespike.errors import EdgespikeError
from edgespike.exporters import ExportOptions, export
from edgespike.generation import SamplingOptions, Stepper, generate_ids, session_stepper
from edgespike.runtimes import load
from edgespike.runtimes.registry import NO_PREFILL_ENTRY, prefill, prefill_chunk_tokens, prefill_note

CHUNK = 4
PROMPT = [5, 17, 99, 3, 42, 8, 61, 23, 77, 1, 30]  # two chunks, then three steps
FP32 = 1e-5  # fp32 reassociation: more rows per matmul in a chunk


@pytest.fixture(scope="module")
def positional_model():
    torch.manual_seed(0)
    return models.create("slms_pulse", "tiny")  # RoPE: the chunk's positions come from its first one


@pytest.fixture(scope="module")
def windowed_model():
    torch.manual_seed(0)
    return models.create("pulse", "tiny")  # ALiBi over a shift-buffer cache


def _export(model, target, path, chunk=CHUNK):
    return export(model, target, path, ExportOptions(prefill_tokens=chunk), source=None)


def _token_by_token(session, tokens):
    session.reset()
    for token in tokens:
        logits = session.step(token)
    return logits


def _assert_prefill_equals_token_by_token(session):
    stepped, after_stepped = _token_by_token(session, PROMPT), session.step(9)
    session.reset()
    prefilled = prefill(session, PROMPT)
    assert session.position == len(PROMPT)
    after_prefilled = session.step(9)  # the state the chunks carried out
    assert np.abs(prefilled - stepped).max() <= FP32
    assert np.abs(after_prefilled - after_stepped).max() <= FP32


@pytest.mark.parametrize("target,family", [("onnx", "positional"), ("onnx", "windowed"), ("executorch", "windowed")])
def test_prefill_equals_token_by_token(target, family, request, tmp_path):
    model = request.getfixturevalue(f"{family}_model")
    result = _export(model, target, tmp_path / target)
    assert result.manifest["prefill"]["tokens"] == CHUNK
    session = load(tmp_path / target)
    assert prefill_chunk_tokens(session) == CHUNK and prefill_note(session) is None
    _assert_prefill_equals_token_by_token(session)
    first = _token_by_token(session, PROMPT[:1])
    prefill(session, PROMPT)
    assert np.array_equal(_token_by_token(session, PROMPT[:1]), first)  # reset forgets what both entries carried


def test_coreml_prefill_is_a_second_function_over_the_same_states_and_weights(windowed_model, tmp_path):
    import coremltools as ct

    with_prefill = _export(windowed_model, "coreml", tmp_path / "with", chunk=2)
    without = _export(windowed_model, "coreml", tmp_path / "without", chunk=0)
    assert with_prefill.manifest["prefill"] == {"tokens": 2, "function": "prefill"} and without.manifest["prefill"] is None
    spec = ct.models.MLModel(str(tmp_path / "with" / "model.mlpackage"), skip_model_load=True).get_spec()
    functions = {f.name: f for f in spec.description.functions}
    assert set(functions) == {"main", "prefill"} and spec.description.defaultFunctionName == "main"
    assert [s.name for s in functions["main"].state] == [s.name for s in functions["prefill"].state]
    assert [list(i.type.multiArrayType.shape) for i in functions["prefill"].input if i.name == "tokens"] == [[1, 2]]
    weights = [sum(p.stat().st_size for p in (tmp_path / d / "model.mlpackage").rglob("weight.bin")) for d in ("with", "without")]
    # two functions, no more weight bytes than one: the functions' equal weights stored once (the ternary
    # indices shared, every other const by its bytes' hash)
    assert weights[0] <= weights[1]
    session = load(tmp_path / "with")  # the MIL interpreter off macOS: fp32 compute, fp16x2 states
    stepped = _token_by_token(session, PROMPT[:6])
    session.reset()
    prefilled = prefill(session, PROMPT[:6])
    # within a chunk the state stays fp32 in the graph, between steps it is carried as an fp16 pair
    assert np.abs(prefilled - stepped).max() <= 1e-3 and prefilled.argmax() == stepped.argmax()


def test_onnx_prefill_graph_reads_the_decode_graphs_external_weights(windowed_model, tmp_path, monkeypatch):
    import onnx

    from edgespike.exporters import onnx as onnx_exporter

    monkeypatch.setattr(onnx_exporter, "EXTERNAL_DATA_BYTES", 1)  # every weight into model.onnx.data
    _export(windowed_model, "onnx", tmp_path / "a")
    assert sorted(p.name for p in (tmp_path / "a").glob("*.onnx*")) == ["model.onnx", "model.onnx.data", "prefill.onnx"]
    graph = onnx.load(str(tmp_path / "a" / "prefill.onnx"), load_external_data=False).graph
    locations = {e.value for init in graph.initializer for e in init.external_data if e.key == "location"}
    assert locations == {"model.onnx.data"}
    _assert_prefill_equals_token_by_token(load(tmp_path / "a"))


def test_an_artifact_without_a_prefill_entry_runs_its_prompt_token_by_token(windowed_model, tmp_path):
    _export(windowed_model, "onnx", tmp_path / "old")
    manifest_path = tmp_path / "old" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    del manifest["prefill"]  # as exported before prefill existed
    manifest_path.write_text(json.dumps(manifest))
    session = load(tmp_path / "old", verify=False)
    assert prefill_chunk_tokens(session) == 0 and prefill_note(session) == NO_PREFILL_ENTRY
    calls = []
    session.prefill_chunk = lambda tokens: calls.append(tokens)
    stepped = _token_by_token(session, PROMPT)
    session.reset()
    assert np.array_equal(prefill(session, PROMPT), stepped) and not calls


def test_a_prompt_past_the_context_is_refused(positional_model, tmp_path):
    _export(positional_model, "onnx", tmp_path / "onnx")
    session = load(tmp_path / "onnx")
    context = session.manifest["max_seq_len"]
    with pytest.raises(EdgespikeError, match=f"past the model's context of {context}"):
        list(generate_ids(session_stepper(session), [1] * (context + 1), SamplingOptions(max_new_tokens=1)))
    with pytest.raises(EdgespikeError, match="max_seq_len"):  # the session itself, without generation's check
        prefill(session, [1] * (context + 1))
    assert session.position == 0  # refused before any chunk ran
    # a prompt that fits, with more new tokens than the context leaves: cut to it
    ids = list(generate_ids(session_stepper(session), [1] * (context - 3), SamplingOptions(max_new_tokens=10, temperature=0)))
    assert len(ids) == 3


def test_generation_prefills_through_the_stepper():
    seen = []
    stepper = Stepper(step=lambda token: seen.append(("step", token)) or torch.arange(4.0),
                      prefill=lambda ids: seen.append(("prefill", tuple(ids))) or torch.arange(4.0))
    assert list(generate_ids(stepper, [1, 2, 3], SamplingOptions(max_new_tokens=2, temperature=0))) == [3, 3]
    assert seen == [("prefill", (1, 2, 3)), ("step", 3)]


def test_prefill_tokens_past_the_context_is_refused(positional_model, tmp_path):
    with pytest.raises(EdgespikeError, match="--prefill-tokens must be in"):
        export(positional_model, "onnx", tmp_path / "x", ExportOptions(prefill_tokens=10_000))
    assert not (tmp_path / "x").exists()
