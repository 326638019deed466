"""Does swift-transformers load this tokenizer folder, and tokenize it as HF ``tokenizers`` does?

    swift_transformers_compatible(folder) -> list of problems ([] = it loads and agrees)
    python apps/ios_demo/scripts/swift_compat.py FOLDER      (exit 1 and one line per problem)

The rules mirror huggingface/swift-transformers at the tag the app pins (SWIFT_TRANSFORMERS,
also in project.yml); every rule names the file:line it comes from. Many failures there are
``fatalError`` (the app dies, nothing to catch), which is why the folder is checked before it
ships. Folders are judged as ``AutoTokenizer.from(modelFolder:)`` reads them: tokenizer.json +
tokenizer_config.json (an edgespike artifact has no config.json, so no model-type fallback).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

SWIFT_TRANSFORMERS = "1.3.3"
SRC = f"swift-transformers@{SWIFT_TRANSFORMERS} Sources/"

# Tokenizers/Tokenizer.swift:158 TokenizerModel.knownTokenizers -> the model class it builds
KNOWN_TOKENIZERS = {
    **dict.fromkeys(["BertTokenizer", "DistilbertTokenizer", "DistilBertTokenizer"], "WordPiece"),
    **dict.fromkeys(["T5Tokenizer", "XLMRobertaTokenizer", "Xlm-RobertaTokenizer"], "Unigram"),
    **dict.fromkeys(
        ["CodeGenTokenizer", "CodeLlamaTokenizer", "CohereTokenizer", "FalconTokenizer", "GemmaTokenizer", "GPT2Tokenizer",
         "LlamaTokenizer", "RobertaTokenizer", "TokenizersBackend", "PreTrainedTokenizer", "Qwen2Tokenizer", "WhisperTokenizer"],
        "BPE",
    ),
}
# Tokenizers/PreTokenizer.swift:128, Decoder.swift:41, Normalizer.swift:41, PostProcessor.swift:47:
# the `type`s each factory builds; any other is fatalError (PreTokenizer.swift:156, Decoder.swift:68,
# Normalizer.swift:76, PostProcessor.swift:66). Sequence's list key (fatalError when absent) in the value.
COMPONENTS = {
    "pre_tokenizer": ("PreTokenizer.swift:156", "pretokenizers", {
        "Sequence", "ByteLevel", "Punctuation", "Digits", "Split", "Whitespace", "WhitespaceSplit", "Metaspace",
        "BertPreTokenizer"}),
    "decoder": ("Decoder.swift:68", "decoders", {
        "Sequence", "WordPiece", "ByteLevel", "Replace", "ByteFallback", "Fuse", "Strip", "Metaspace"}),
    "normalizer": ("Normalizer.swift:76", "normalizers", {
        "Sequence", "Prepend", "Replace", "Lowercase", "NFD", "NFC", "NFKD", "NFKC", "Bert", "BertNormalizer",
        "Precompiled", "StripAccents", "Strip"}),
    "post_processor": ("PostProcessor.swift:66", "processors", {
        "TemplateProcessing", "ByteLevel", "RobertaProcessing", "BertProcessing", "Sequence"}),
}


def byte_level_alphabet() -> set[str]:
    """GPT-2's bytes_to_unicode: the 256 characters a byte-level vocabulary is written in."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = [b for b in range(256) if b not in printable]
    return {chr(b) for b in printable} | {chr(256 + i) for i in range(len(extra))}


def _load(path: Path, problems: list[str]) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        problems.append(f"{path.name} is not readable JSON ({err}); Hub/Hub.swift:271 throws")
        return None


def _components(kind: str, node, problems: list[str]) -> list[dict]:
    """Every component of ``kind`` under ``node`` (Sequences flattened), with unsupported types reported."""
    if node is None:
        return []
    where, list_key, supported = COMPONENTS[kind]
    kind_type = node.get("type") if isinstance(node, dict) else None
    if kind_type is None:
        return []  # the factory returns nil for a config without a type
    if kind_type not in supported:
        problems.append(f"{kind} type {kind_type!r} is not supported: fatalError in {SRC}Tokenizers/{where}")
        return []
    if kind_type != "Sequence":
        return [node]
    if not isinstance(node.get(list_key), list):
        problems.append(f"{kind} Sequence without a {list_key!r} list: fatalError in {SRC}Tokenizers/{where.split(':')[0]}")
        return []
    return [leaf for child in node[list_key] for leaf in _components(kind, child, problems)]


def swift_transformers_compatible(folder: str | Path) -> list[str]:
    """The problems swift-transformers would have with ``folder`` (empty when it loads and agrees with HF)."""
    folder = Path(folder)
    problems: list[str] = []
    if not (folder / "tokenizer.json").is_file():
        return [f"no tokenizer.json in {folder}: Hub.HubClientError.configurationMissing ({SRC}Hub/Hub.swift:262)"]
    if not (folder / "tokenizer_config.json").is_file():
        return [f"no tokenizer_config.json in {folder}: TokenizerError.missingConfig ({SRC}Tokenizers/Tokenizer.swift:922); re-export"]
    data = _load(folder / "tokenizer.json", problems)
    config = _load(folder / "tokenizer_config.json", problems)
    if data is None or config is None:
        return problems

    tokenizer_class = config.get("tokenizer_class")
    if not isinstance(tokenizer_class, str):
        return problems + [f"tokenizer_config.json has no tokenizer_class: TokenizerError.missingTokenizerClassInConfig ({SRC}Tokenizers/Tokenizer.swift:185)"]
    name = tokenizer_class.replace("Fast", "")  # Tokenizer.swift:189
    if name not in KNOWN_TOKENIZERS:
        return problems + [f"tokenizer_class {tokenizer_class!r} is not one swift-transformers knows: TokenizerError.unsupportedTokenizer ({SRC}Tokenizers/Tokenizer.swift:194)"]
    if config.get("clean_up_tokenization_spaces", True):
        problems.append(f"clean_up_tokenization_spaces is not false: decode rewrites ' .' to '.' unlike HF tokenizers ({SRC}Tokenizers/Tokenizer.swift:532)")

    model = data.get("model") or {}
    expected = KNOWN_TOKENIZERS[name]
    if model.get("type") != expected:
        problems.append(f"tokenizer_class {tokenizer_class!r} builds a {expected} model but tokenizer.json holds {model.get('type')!r}")
    vocab = model.get("vocab")
    if expected == "BPE":
        problems += _bpe_problems(model, vocab)

    pre = _components("pre_tokenizer", data.get("pre_tokenizer"), problems)
    decoders = _components("decoder", data.get("decoder"), problems)
    _components("normalizer", data.get("normalizer"), problems)
    _components("post_processor", data.get("post_processor"), problems)
    for node in pre:
        if node["type"] == "ByteLevel" and node.get("add_prefix_space"):
            problems.append(f"ByteLevel add_prefix_space=true prefixes every regex piece, not the text once ({SRC}Tokenizers/PreTokenizer.swift:325)")
        if node["type"] == "Split" and (node.get("behavior", "Isolated") != "Isolated" or node.get("invert")):
            problems.append(f"Split behavior {node.get('behavior')!r}/invert is ignored: a regex split always isolates ({SRC}Tokenizers/String+PreTokenization.swift:12)")
    added = {t.get("content") for t in data.get("added_tokens") or []}
    if isinstance(vocab, dict) and any(node["type"] == "ByteLevel" for node in decoders):
        alphabet = byte_level_alphabet()
        stray = sorted(tok for tok in vocab if tok not in added and not set(tok) <= alphabet)
        if stray:
            problems.append(f"{len(stray)} vocab tokens (first {stray[0]!r}) are not byte-level text: the ByteLevel decoder force-unwraps ({SRC}Tokenizers/Decoder.swift:136)")
        if not model.get("unk_token") and not alphabet <= set(vocab):
            problems.append(f"the vocab lacks {len(alphabet - set(vocab))} byte characters and has no unk_token: encode force-unwraps a missing id ({SRC}Tokenizers/Tokenizer.swift:643)")
    return problems


def _bpe_problems(model: dict, vocab) -> list[str]:
    merges = model.get("merges")
    if not isinstance(merges, list):
        return [f"BPE model without a merges list: fatalError(\"BPETokenizer requires merges\") ({SRC}Tokenizers/BPETokenizer.swift:152)"]
    if not isinstance(vocab, dict):
        return [f"BPE model without a vocab object: TokenizerError.missingVocab ({SRC}Tokenizers/BPETokenizer.swift:154)"]
    pairs = [m if isinstance(m, list) else m.split(" ") for m in merges]
    bad = [p for p in pairs if len(p) != 2 or "".join(p) not in vocab]
    if bad:
        return [f"{len(bad)} merges (first {bad[0]!r}) are not pairs whose result is in the vocab: their pieces hex-encode to ids that do not exist ({SRC}Tokenizers/BPETokenizer.swift:334)"]
    return []


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: swift_compat.py ARTIFACT_OR_TOKENIZER_FOLDER")
    found = swift_transformers_compatible(sys.argv[1])
    for line in found:
        print(line)
    sys.exit(1 if found else 0)
