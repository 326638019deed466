"""Linux-side checks of the iOS demo app (apps/ios_demo), which only a Mac can build.

Each check has a twin that breaks its input on purpose (in a temporary copy) and sees it fail:
Swift syntax (tree-sitter-swift), the ast-grep rules, the Swift ``Manifest`` against a real
CoreML export's manifest, project.yml, the golden fixtures, and swift-transformers' tokenizer rules.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tree_sitter
import tree_sitter_swift
import yaml

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "apps" / "ios_demo"
MANIFEST_SWIFT = APP / "Packages/EdgespikeCore/Sources/EdgespikeCore/Manifest.swift"
AST_GREP = Path(sys.executable).parent / "ast-grep"
PARSER = tree_sitter.Parser(tree_sitter.Language(tree_sitter_swift.language()))


def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"ios_demo_{name}", APP / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


swift_compat = _script("swift_compat")
make_golden = _script("make_golden")


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory) -> Path:
    """The demo model exported to CoreML in this process as `edgespike export` does (validation off: it is
    not what is tested), its prefill function included (the app's ``Manifest.prefill``)."""
    from edgespike import models
    from edgespike.exporters import ExportOptions, export
    from edgespike.exporters.coreml import PREFILL_TOKENS

    out = tmp_path_factory.mktemp("ios") / "demo"
    export(models.load("demo"), "coreml", out, ExportOptions(prefill_tokens=PREFILL_TOKENS), source="demo")
    return out


# -- Swift syntax ------------------------------------------------------------------------------

def syntax_errors(source: bytes) -> list[str]:
    """ERROR and MISSING nodes tree-sitter-swift finds, as 'line:col type'."""
    found = []
    stack = [PARSER.parse(source).root_node]
    while stack:
        node = stack.pop()
        if node.type == "ERROR" or node.is_missing:
            found.append(f"{node.start_point[0] + 1}:{node.start_point[1]} {'MISSING ' if node.is_missing else ''}{node.type}")
        stack.extend(node.children)
    return found


def test_every_swift_file_parses():
    files = sorted(APP.rglob("*.swift"))
    assert len(files) >= 15, files
    assert {f.name: syntax_errors(f.read_bytes()) for f in files if syntax_errors(f.read_bytes())} == {}


def test_parse_check_catches_a_broken_file():
    source = (APP / "App/ChatModel.swift").read_text()
    broken = source.replace("func send() {", "func send( {", 1)
    assert broken != source and syntax_errors(broken.encode())
    assert syntax_errors(b"struct S { let x = [1, 2 }")


# -- ast-grep rules ----------------------------------------------------------------------------

def ast_grep(root: Path) -> list[tuple[str, str]]:
    """(rule id, file relative to root) for every finding of the app's rules under root."""
    result = subprocess.run([str(AST_GREP), "scan", "--json=compact"], cwd=root, capture_output=True, text=True, timeout=60)
    assert result.stdout.strip(), result.stderr
    return sorted((hit["ruleId"], hit["file"]) for hit in json.loads(result.stdout))


def test_ast_grep_rules_hold():
    assert ast_grep(APP) == []


def test_ast_grep_rules_catch_violations(tmp_path):
    copy = tmp_path / "ios_demo"
    shutil.copytree(APP, copy, ignore=shutil.ignore_patterns("Fixtures", "*.py"))
    chat = copy / "App/ChatModel.swift"
    chat.write_text("import Tokenizers\n" + chat.read_text() + "\nlet forced = try! JSONDecoder().decode(Int.self, from: Data())\n")
    core = copy / "Packages/EdgespikeCore/Sources/EdgespikeCore/CoreMLStepModel.swift"
    core.write_text(core.read_text() + "\nlet leaked: MLState? = nil\n")  # after #endif
    generator = copy / "Packages/EdgespikeCore/Sources/EdgespikeCore/Generator.swift"
    generator.write_text("import CoreML\n" + generator.read_text())
    assert ast_grep(copy) == [
        ("coreml-outside-canimport", "Packages/EdgespikeCore/Sources/EdgespikeCore/CoreMLStepModel.swift"),
        ("coreml-outside-canimport", "Packages/EdgespikeCore/Sources/EdgespikeCore/Generator.swift"),
        ("no-force-try", "App/ChatModel.swift"),
        ("tokenizers-import-outside-adapter", "App/ChatModel.swift"),
    ]


# -- Swift Manifest vs a real export ----------------------------------------------------------

def codable_structs(source: bytes) -> dict[str, dict]:
    """Every struct in ``source``: its stored properties (name -> type text) and CodingKeys (case -> key)."""
    structs = {}

    def visit(node):
        if node.type == "class_declaration" and any(c.type == "struct" for c in node.children):
            name = next(c for c in node.children if c.type == "type_identifier").text.decode()
            body = next(c for c in node.children if c.type == "class_body")
            structs[name] = {"properties": _stored_properties(body), "keys": _coding_keys(body)}
        for child in node.children:
            visit(child)

    visit(PARSER.parse(source).root_node)
    return structs


def _stored_properties(body) -> dict[str, str]:
    properties = {}
    for child in body.children:
        if child.type != "property_declaration" or any(c.type == "computed_property" for c in child.children):
            continue
        modifiers = next((c.text.decode() for c in child.children if c.type == "modifiers"), "")
        if "static" in modifiers:
            continue
        name = next(c for c in child.children if c.type == "pattern").text.decode()
        annotation = next(c for c in child.children if c.type == "type_annotation")
        properties[name] = annotation.text.decode().lstrip(":").strip()
    return properties


def _coding_keys(body) -> dict[str, str] | None:
    for child in body.children:
        if child.type == "class_declaration" and any(c.text == b"CodingKeys" for c in child.children):
            keys = {}
            for entry in next(c for c in child.children if c.type == "enum_class_body").children:
                if entry.type != "enum_entry":
                    continue
                names = [c for c in entry.children if c.type == "simple_identifier"]
                for case in names:
                    raw = case.next_named_sibling
                    has_raw = raw is not None and raw.type == "line_string_literal" and case.next_sibling.type == "="
                    keys[case.text.decode()] = raw.text.decode().strip('"') if has_raw else case.text.decode()
            return keys
    return None


def manifest_mismatches(swift_source: bytes, manifest: dict) -> list[str]:
    """Where the Swift ``Manifest`` (and the structs it holds) disagrees with an exported manifest."""
    structs = codable_structs(swift_source)
    problems = []

    def check(struct: str, objects: list, path: str):
        spec = structs[struct]
        if spec["keys"] is None or set(spec["keys"]) != set(spec["properties"]):
            problems.append(f"{struct}: CodingKeys {sorted(spec['keys'] or [])} != stored properties {sorted(spec['properties'])}")
            return
        for case, key in spec["keys"].items():
            optional = spec["properties"][case].strip().endswith("?")  # e.g. outputs' populations: spike_rates only
            present = [o for o in objects if key in o]
            if not optional and len(present) < len(objects):
                problems.append(f"{struct}.{case}: the export has no key {path}{key}")
                continue
            nested = re.sub(r"[\[\]?\s]", "", spec["properties"][case])
            if nested in structs:
                values = [v for o in present if o[key] is not None for v in (o[key] if isinstance(o[key], list) else [o[key]])]
                check(nested, values, f"{path}{key}.")

    check("Manifest", [manifest], "")
    return problems


def test_swift_manifest_matches_a_real_export(export_dir):
    manifest = json.loads((export_dir / "manifest.json").read_text())
    structs = codable_structs(MANIFEST_SWIFT.read_bytes())
    assert {"Manifest", "Config", "Spike", "Tensor", "StateSpec"} <= set(structs)
    assert structs["Manifest"]["keys"]["vocabSize"] == "vocab_size"
    assert manifest_mismatches(MANIFEST_SWIFT.read_bytes(), manifest) == []


def test_manifest_check_catches_renamed_and_missing_keys(export_dir):
    manifest = json.loads((export_dir / "manifest.json").read_text())
    source = MANIFEST_SWIFT.read_text()
    renamed = source.replace('vocabSize = "vocab_size"', 'vocabSize = "vocab"')
    assert manifest_mismatches(renamed.encode(), manifest) == ["Manifest.vocabSize: the export has no key vocab"]
    nested = source.replace("case timesteps, beta, threshold, reset", "case timesteps, beta, threshold = \"thresh\", reset")
    assert manifest_mismatches(nested.encode(), manifest) == ["Spike.threshold: the export has no key config.spike.thresh"]
    unkeyed = source.replace("public let precision: String\n", "public let precision: String\n    public let batch: Int\n")
    assert "CodingKeys" in manifest_mismatches(unkeyed.encode(), manifest)[0]
    for state in manifest["states"]:
        del state["buffer"]
    assert manifest_mismatches(source.encode(), manifest) == ["StateSpec.buffer: the export has no key states.buffer"]


# -- project.yml -------------------------------------------------------------------------------

def project_problems(spec: dict, root: Path) -> list[str]:
    """What is wrong with an XcodeGen spec for this app (empty when nothing)."""
    problems = [f"no {key}" for key in ("name", "options", "packages", "targets") if key not in spec]
    if problems:
        return problems
    if str(spec["options"].get("deploymentTarget", {}).get("iOS")) != "18.0":
        problems.append("options.deploymentTarget.iOS is not 18.0 (Core ML states need iOS 18)")
    for name, target in spec["targets"].items():
        if str(target.get("deploymentTarget")) != "18.0":
            problems.append(f"target {name} deploymentTarget is not 18.0")
        for source in target.get("sources", []):
            source = source if isinstance(source, dict) else {"path": source}
            exists = (root / source["path"]).exists()
            if not exists and not source.get("optional"):
                problems.append(f"target {name} source {source['path']} does not exist")
            if source.get("optional") and f"{source['path']}/" not in (root / ".gitignore").read_text().split():
                problems.append(f"optional source {source['path']} is not git-ignored")
    transformers = spec["packages"].get("swift-transformers", {})
    if not re.fullmatch(r"\d+\.\d+\.\d+", str(transformers.get("exactVersion", ""))):
        problems.append("swift-transformers is not pinned with exactVersion X.Y.Z")
    elif str(transformers["exactVersion"]) != swift_compat.SWIFT_TRANSFORMERS:
        problems.append(f"swift-transformers {transformers['exactVersion']} is not the {swift_compat.SWIFT_TRANSFORMERS} swift_compat mirrors")
    app = spec["targets"].get("EdgespikeDemo", {})
    products = sorted(d.get("product", d.get("package")) for d in app.get("dependencies", []) if "package" in d)
    if products != ["EdgespikeCore", "Tokenizers"]:
        problems.append(f"the app depends on packages {products}, not EdgespikeCore + Tokenizers")
    for name, package in spec["packages"].items():
        if "path" in package:
            manifest = root / package["path"] / "Package.swift"
            if not manifest.is_file():
                problems.append(f"local package {name} has no Package.swift")
            elif ".package(" in manifest.read_text():
                problems.append(f"local package {name} has external dependencies")
    return problems


def test_project_yml_is_valid():
    assert project_problems(yaml.safe_load((APP / "project.yml").read_text()), APP) == []


def test_project_check_catches_a_bad_spec():
    spec = yaml.safe_load((APP / "project.yml").read_text())
    spec["packages"]["swift-transformers"] = {"url": spec["packages"]["swift-transformers"]["url"], "from": "1.0.0"}
    spec["targets"]["EdgespikeDemo"]["sources"].append({"path": "Nowhere"})
    spec["targets"]["EdgespikeDemo"]["deploymentTarget"] = "17.0"
    assert project_problems(spec, APP) == [
        "target EdgespikeDemo deploymentTarget is not 18.0",
        "target EdgespikeDemo source Nowhere does not exist",
        "swift-transformers is not pinned with exactVersion X.Y.Z",
    ]
    with pytest.raises(yaml.YAMLError):
        yaml.safe_load((APP / "project.yml").read_text().replace("targets:", "targets: [", 1))


# -- golden fixtures ---------------------------------------------------------------------------

def test_golden_fixtures_are_current(export_dir, tmp_path):
    written = make_golden.write_fixtures(export_dir, tmp_path)
    stale = [str(p) for p in written if (tmp_path / p).read_bytes() != (APP / p).read_bytes()]
    assert stale == [], "stale fixtures; run: python apps/ios_demo/scripts/make_golden.py <coreml export of demo>"
    greedy = json.loads((tmp_path / make_golden.CORE_FIXTURES / "greedy.json").read_text())
    assert len(greedy["tokens"]) == make_golden.GREEDY_TOKENS and all(0 <= t < 1024 for t in greedy["tokens"])


def test_reference_sampler():
    logits = [0.5, 2.0, 2.0, -1.0]
    rng = make_golden.SplitMix64(0)
    assert f"{rng.next():016x}" == "e220a8397b1dcdaf"  # SplitMix64's published first output for seed 0
    greedy = make_golden.SamplingOptions(temperature=0)
    assert make_golden.sample(logits, greedy, [], rng) == 1  # ties go to the lower id
    penalized = make_golden.SamplingOptions(temperature=0, repetition_penalty=2.0)
    assert make_golden.sample(logits, penalized, [1], rng) == 2
    top2 = make_golden.SamplingOptions(temperature=1.0, top_k=2)
    draws = {make_golden.sample(logits, top2, [], rng) for _ in range(200)}
    assert draws == {1, 2}


# -- swift-transformers' tokenizer rules -------------------------------------------------------

def test_demo_export_loads_under_swift_transformers(export_dir):
    assert json.loads((export_dir / "tokenizer_config.json").read_text())["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert "tokenizer_config.json" in json.loads((export_dir / "manifest.json").read_text())["files"]
    assert swift_compat.swift_transformers_compatible(export_dir) == []


def _folder(tmp_path: Path, export_dir: Path, data=None, config=None) -> Path:
    folder = tmp_path / "tok"
    folder.mkdir()
    tokenizer = json.loads((export_dir / "tokenizer.json").read_text())
    tokenizer_config = json.loads((export_dir / "tokenizer_config.json").read_text())
    (folder / "tokenizer.json").write_text(json.dumps(data(tokenizer) if data else tokenizer))
    (folder / "tokenizer_config.json").write_text(json.dumps(config(tokenizer_config) if config else tokenizer_config))
    return folder


@pytest.mark.parametrize("data, config, expected", [
    (None, lambda c: {k: v for k, v in c.items() if k != "tokenizer_class"}, "missingTokenizerClassInConfig"),
    (None, lambda c: {**c, "tokenizer_class": "SpikeTokenizer"}, "unsupportedTokenizer"),
    (None, lambda c: {**c, "clean_up_tokenization_spaces": True}, "Tokenizer.swift:532"),
    (lambda d: {**d, "model": {k: v for k, v in d["model"].items() if k != "merges"}}, None, "BPETokenizer requires merges"),
    (lambda d: {**d, "pre_tokenizer": {"type": "UnicodeScripts"}}, None, "PreTokenizer.swift:156"),
    (lambda d: {**d, "decoder": {"type": "Sequence"}}, None, "Decoder.swift"),
    (lambda d: {**d, "normalizer": {"type": "Sequence", "normalizers": [{"type": "NFKC"}, {"type": "Nmt"}]}}, None, "Normalizer.swift:76"),
    (lambda d: {**d, "pre_tokenizer": {**d["pre_tokenizer"], "add_prefix_space": True}}, None, "PreTokenizer.swift:325"),
    (lambda d: {**d, "model": {**d["model"], "merges": d["model"]["merges"] + [["Ġ", "zz"]]}}, None, "BPETokenizer.swift:334"),
    (lambda d: {**d, "model": {**d["model"], "vocab": {**d["model"]["vocab"], "snow☃": 5000}}}, None, "Decoder.swift:136"),
])
def test_broken_tokenizer_folders_are_caught(tmp_path, export_dir, data, config, expected):
    problems = swift_compat.swift_transformers_compatible(_folder(tmp_path, export_dir, data, config))
    assert len(problems) == 1 and expected in problems[0], problems


def test_missing_tokenizer_files_are_caught(tmp_path, export_dir):
    folder = _folder(tmp_path, export_dir)
    (folder / "tokenizer_config.json").unlink()
    assert "missingConfig" in swift_compat.swift_transformers_compatible(folder)[0]
    (folder / "tokenizer.json").unlink()
    assert "configurationMissing" in swift_compat.swift_transformers_compatible(folder)[0]


def test_char_tokenizer_is_not_swift_transformers_compatible(tmp_path):
    """edgespike's char tokenizer (WordLevel model) has no BPE merges: swift-transformers would crash on it."""
    from edgespike import data

    folder = tmp_path / "char"
    folder.mkdir()
    data.train_tokenizer("hello spiking world", "char", 64).save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "PreTrainedTokenizerFast", "clean_up_tokenization_spaces": False}))
    problems = swift_compat.swift_transformers_compatible(folder)
    assert any("'WordLevel'" in p for p in problems) and any("BPETokenizer requires merges" in p for p in problems)
