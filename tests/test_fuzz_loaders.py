"""Hypothesis fuzzing of every loader (issue 19). Inputs are structured mutations of a valid file
(a value replaced by an arbitrary or boundary one, a key dropped or added, a value wrapped in a list,
for checkpoints a tensor reshaped, retyped, poisoned with NaN or replaced), then serialized, and
sometimes mangled as bytes (truncated, a byte flipped, bytes inserted, nested past the parser's
recursion limit). Every input must load or fail with a one-line EdgespikeError; any other exception
fails the test with its traceback.

The normal run tries ``QUICK_EXAMPLES`` inputs per loader (derandomized: the same ones every run);
``pytest -m fuzz --fuzz tests/test_fuzz_loaders.py`` tries ``FUZZ_EXAMPLES`` (tests/conftest.py).
"""

from __future__ import annotations

import copy
import io
import json
import sys
import tomllib
from importlib import resources
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from edgespike import models
from edgespike.artifact import read_manifest, write_manifest
from edgespike.check import load_budgets
from edgespike.chip import load_chip
from edgespike.errors import EdgespikeError
from edgespike.importers.slms_pulse import RESET_KEY, TIED_HEAD, config_from_arch, read_state_dict, to_edgespike
from edgespike.importers.spikingbrain import inspect_checkpoint
from edgespike.models.format import DEMO_DIR, load_dir, load_tokenizer
from edgespike.models.registry import FAMILIES
from edgespike.nn import LIF
from edgespike.profile.targets import load_target

sys.path.insert(0, str(Path(__file__).parent))
from synthetic_checkpoints import write_sharded  # noqa: E402

pytestmark = pytest.mark.fuzz
FUZZ = settings(parent=settings.get_profile("edgespike-fuzz"))

# --- mutations ------------------------------------------------------------------------------------

BOUNDARY = [0, -1, 1, 2, 2**31, 2**63, -(2**63), 10**100, 1e308, -0.0, 0.5, 1e-300, float("nan"), float("inf"),
            float("-inf"), True, False, None, "", "x" * 5000, "../../etc/passwd", "/abs", "F32", "F16", "BF16", "I8",
            "BOOL", "F8_E4M3", "subtract", "pulse", [], {}, [1, 2, 3], [-1], {"a": 1}]
values = st.one_of(
    st.sampled_from(BOUNDARY),
    st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
                 lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                 max_leaves=8),
)


def _slots(doc, path=()):
    yield path
    children = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else ()
    for key, child in children:
        yield from _slots(child, (*path, key))


@st.composite
def mutated_doc(draw, base):
    """``base`` (a JSON/TOML document) with one to three structural edits."""
    doc = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(list(_slots(doc))))
        op = draw(st.sampled_from(("replace", "replace", "delete", "insert", "wrap")))
        value = copy.deepcopy(draw(values))  # BOUNDARY's lists and dicts are shared
        if not path:
            doc = [doc] if op == "wrap" else value if op in ("replace", "delete") else doc
            continue
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        last = path[-1]
        if op == "replace":
            parent[last] = value
        elif op == "delete":
            del parent[last]
        elif op == "wrap":
            parent[last] = [parent[last]]
        elif isinstance(parent, dict):
            parent[draw(st.text(max_size=10))] = value
        else:
            parent.insert(last, value)
    return doc


@st.composite
def mangled(draw, data: bytes, nest: bytes = b"["):
    """``data`` truncated, with a byte flipped or bytes inserted; or deep nesting; or random bytes."""
    op = draw(st.sampled_from(("truncate", "flip", "insert", "nest", "random")))
    if op == "truncate":
        return data[: draw(st.integers(0, max(0, len(data) - 1)))]
    if op == "flip" and data:
        i = draw(st.integers(0, len(data) - 1))
        return data[:i] + bytes([data[i] ^ draw(st.integers(1, 255))]) + data[i + 1 :]
    if op == "insert":
        i = draw(st.integers(0, len(data)))
        return data[:i] + draw(st.binary(min_size=1, max_size=16)) + data[i:]
    if op == "nest":
        depth = draw(st.sampled_from((1000, 100_000)))
        closing = {b"[": b"]", b"a = [": b"]"}[nest]
        return nest + b"[" * depth + b"]" * depth + closing
    return draw(st.binary(max_size=256))


def documents(base, dumps, nest: bytes = b"["):
    """Serialized structural mutations of ``base``, a quarter of them mangled as bytes."""
    docs = mutated_doc(base).map(dumps)
    return st.one_of(docs, docs, docs, docs.flatmap(lambda data: mangled(data, nest)))


def json_bytes(doc) -> bytes:
    return json.dumps(doc).encode()


def toml_bytes(doc) -> bytes:
    """A minimal TOML writer for the mutated documents (top-level keys, then tables; inline below)."""

    def value(v):
        if v is None:
            return '"None"'
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, float):
            return "nan" if v != v else ("inf" if v > 0 else "-inf") if v in (float("inf"), float("-inf")) else repr(v)
        if isinstance(v, int):
            return str(v)
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return "{" + ", ".join(f"{json.dumps(str(k))} = {value(x)}" for k, x in v.items()) + "}"

    if not isinstance(doc, dict):
        return f"value = {value(doc)}\n".encode()
    lines = [f"{json.dumps(k)} = {value(v)}" for k, v in doc.items() if not isinstance(v, dict)]
    for k, table in ((k, v) for k, v in doc.items() if isinstance(v, dict)):
        lines.append(f"[{json.dumps(k)}]")
        lines += [f"{json.dumps(str(kk))} = {value(vv)}" for kk, vv in table.items()]
    return ("\n".join(lines) + "\n").encode("utf-8", "surrogatepass")


def loads_or_explains(load, *args) -> None:
    """``load(*args)`` succeeds or raises a one-line EdgespikeError; anything else propagates."""
    try:
        load(*args)
    except EdgespikeError as err:
        message = str(err)
        assert message.strip() and "\n" not in message, repr(message)


# --- manifest.json --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    directory = tmp_path_factory.mktemp("artifact")
    (directory / "model.onnx").write_bytes(b"not really onnx" * 100)
    (directory / "tokenizer.json").write_text("{}")
    manifest = write_manifest(directory, {
        "edgespike_version": "0.1.0", "family": "pulse", "config": models.preset_config("pulse", "tiny").to_dict(),
        "source_model": "pulse:tiny", "target": "onnx", "runtime": "onnxruntime", "model_file": "model.onnx",
        "precision": "fp32", "weights": "ternary", "timesteps": 4, "batch": 1, "vocab_size": 256,
        "states": [{"name": "layers.0.v", "buffer": "state_layers__0__v", "shape": [1, 64]}],
        "inputs": [{"name": "tokens", "dtype": "int64", "shape": [1, 1]}, {"name": "position", "dtype": "int64", "shape": [1]}],
        "outputs": [{"name": "logits", "dtype": "float32", "shape": [1, 256]}], "max_seq_len": 64,
        "validation": {"passed": True},
    })
    read_manifest(directory)
    return directory, manifest


@FUZZ
@given(data=st.data())
def test_fuzz_manifest(artifact, data):
    directory, manifest = artifact
    (directory / "manifest.json").write_bytes(data.draw(documents(manifest, json_bytes)))
    loads_or_explains(read_manifest, directory)


# --- config.json and the safetensors header of a model dir ----------------------------------------

@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    dirs = {}
    for family in sorted(FAMILIES):
        if "tiny" in FAMILIES[family].presets:
            dirs[family] = models.save(models.create(family, "tiny"), root / family)
    return dirs


@FUZZ
@given(data=st.data())
def test_fuzz_config_json(model_dirs, data):
    family = data.draw(st.sampled_from(sorted(model_dirs)))
    directory = model_dirs[family]
    valid = (directory / "config.json").read_bytes()
    try:
        (directory / "config.json").write_bytes(data.draw(documents(json.loads(valid), json_bytes)))
        loads_or_explains(load_dir, directory)
    finally:
        (directory / "config.json").write_bytes(valid)


def _split_safetensors(blob: bytes) -> tuple[dict, bytes]:
    size = int.from_bytes(blob[:8], "little")
    return json.loads(blob[8 : 8 + size]), blob[8 + size :]


def _join_safetensors(header, body: bytes) -> bytes:
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    return len(encoded).to_bytes(8, "little") + encoded + body


@FUZZ
@given(data=st.data())
def test_fuzz_safetensors_header(model_dirs, data):
    directory = model_dirs["pulse"]
    valid = (directory / "model.safetensors").read_bytes()
    header, body = _split_safetensors(valid)
    blob = data.draw(st.one_of(
        mutated_doc(header).map(lambda h: _join_safetensors(h, body)),
        st.integers(0, 2**64 - 1).map(lambda n: n.to_bytes(8, "little") + valid[8:]),  # the header length
        mangled(valid),
    ))
    try:
        (directory / "model.safetensors").write_bytes(blob)
        loads_or_explains(load_dir, directory)
    finally:
        (directory / "model.safetensors").write_bytes(valid)


# --- tokenizer.json -------------------------------------------------------------------------------

@FUZZ
@given(data=st.data())
def test_fuzz_tokenizer_json(tmp_path_factory, data):
    path = tmp_path_factory.getbasetemp() / "tokenizer.json"
    base = json.loads((DEMO_DIR / "tokenizer.json").read_text())
    path.write_bytes(data.draw(documents(base, json_bytes)))
    loads_or_explains(load_tokenizer, path, 1024)


# --- TOML: budgets, chips, profile targets --------------------------------------------------------

TARGETS = ("coreml", "onnx", "executorch", "neuronchip")
BUDGETS = tomllib.loads(resources.files("edgespike").joinpath("budgets.toml").read_text())
CHIP = tomllib.loads(resources.files("edgespike").joinpath("chips", "loihi.toml").read_text())
PROFILE_TARGETS = [tomllib.loads(resources.files("edgespike.profile").joinpath("targets", f"{name}.toml").read_text())
                   for name in ("cmos45", "neuronchip")]


@pytest.mark.parametrize("kind", ["budgets", "chip", "profile_target"])
@FUZZ
@given(data=st.data())
def test_fuzz_toml(tmp_path_factory, kind, data):
    path = tmp_path_factory.getbasetemp() / f"{kind}.toml"
    base = data.draw(st.sampled_from(PROFILE_TARGETS)) if kind == "profile_target" else {"budgets": BUDGETS, "chip": CHIP}[kind]
    path.write_bytes(data.draw(documents(base, toml_bytes, nest=b"a = [")))
    load = {"budgets": lambda p: load_budgets(p, TARGETS), "chip": load_chip, "profile_target": lambda p: load_target(str(p))}[kind]
    loads_or_explains(load, path)


# --- importers: SLMS Pulse's architecture file and checkpoint -------------------------------------

ARCH = {"vocab_size": 256, "d_model": 64, "n_heads": 4, "n_kv_heads": 2, "num_layers": 2, "max_seq_len": 64,
        "window_size": 16, "num_steps": 3, "beta": 0.95, "intermediate_size": 128, "dropout": 0.0}


@FUZZ
@given(data=st.data())
def test_fuzz_slms_pulse_arch(tmp_path_factory, data):
    path = tmp_path_factory.getbasetemp() / "arch.json"
    path.write_bytes(data.draw(documents(ARCH, json_bytes)))
    loads_or_explains(config_from_arch, path)


@pytest.fixture(scope="module")
def slms_checkpoint():
    model = models.create("slms_pulse", "tiny")
    state = dict(model.state_dict())
    state[TIED_HEAD] = state["token_emb.weight"].clone()
    state.update({f"{name}.{RESET_KEY}": torch.tensor(0) for name, m in model.named_modules() if isinstance(m, LIF)})
    return model.config, state


@st.composite
def mutated_state(draw, state: dict):
    state = dict(state)
    for _ in range(draw(st.integers(1, 2))):
        name = draw(st.sampled_from(sorted(state, key=str)))
        op = draw(st.sampled_from(("drop", "rename", "reshape", "retype", "nan", "value", "wrap")))
        if op in ("retype", "nan") and not isinstance(state[name], torch.Tensor):
            continue
        if op == "drop":
            del state[name]
        elif op == "rename":
            state[draw(st.one_of(st.text(max_size=12), st.integers()))] = state.pop(name)
        elif op == "reshape":
            state[name] = torch.zeros(draw(st.lists(st.integers(0, 5), max_size=3)))
        elif op == "retype":
            state[name] = state[name].to(draw(st.sampled_from((torch.int8, torch.bool, torch.float16, torch.float64))))
        elif op == "nan" and state[name].is_floating_point() and state[name].numel():
            state[name] = state[name].clone().view(-1).index_fill(0, torch.tensor([0]), float("nan")).view(state[name].shape)
        elif op == "value":
            state[name] = copy.deepcopy(draw(values))
        elif op == "wrap":
            return {"state_dict": state}
    return state


def _saved(state) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


@FUZZ
@given(data=st.data())
def test_fuzz_slms_pulse_checkpoint(tmp_path_factory, slms_checkpoint, data):
    config, state = slms_checkpoint
    path = tmp_path_factory.getbasetemp() / "checkpoint.bin"
    structured = data.draw(st.booleans())
    path.write_bytes(_saved(data.draw(mutated_state(state))) if structured else data.draw(mangled(_saved(state))))
    loads_or_explains(lambda p: to_edgespike(read_state_dict(p), config, p, "preset 'tiny'"), path)


# --- importers: a SpikingBrain Hugging Face dir (config.json, index, shard headers) ---------------

@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("hf")
    write_sharded("tiny", directory, shard_bytes=64 << 10)
    inspect_checkpoint(directory, [])
    return directory


@pytest.mark.parametrize("which", ["config.json", "model.safetensors.index.json", "shard"])
@FUZZ
@given(data=st.data())
def test_fuzz_spikingbrain_dir(hf_dir, which, data):
    path = hf_dir / (which if which != "shard" else "model-00001-of-00003.safetensors")
    if which == "shard" and not path.is_file():
        path = sorted(hf_dir.glob("model-00001-of-*.safetensors"))[0]
    valid = path.read_bytes()
    if which == "shard":
        header, body = _split_safetensors(valid)
        blob = data.draw(st.one_of(mutated_doc(header).map(lambda h: _join_safetensors(h, body)), mangled(valid)))
    else:
        blob = data.draw(documents(json.loads(valid), json_bytes))
    try:
        path.write_bytes(blob)
        loads_or_explains(inspect_checkpoint, hf_dir, [])
    finally:
        path.write_bytes(valid)


def test_the_unmutated_inputs_load():
    """The serializers reproduce every base document, so each mutation is one edit away from a valid file."""
    for base in (BUDGETS, CHIP, *PROFILE_TARGETS):
        assert tomllib.loads(toml_bytes(base).decode()) == base
    assert json.loads(json_bytes(ARCH)) == ARCH
