"""Golden fixtures the Swift tests check against, computed on the Python side.

    python apps/ios_demo/scripts/make_golden.py EXPORT_DIR
        EXPORT_DIR: `edgespike export demo --target coreml --no-validate --out EXPORT_DIR`

writes (paths under apps/ios_demo/)
    Packages/EdgespikeCore/Tests/EdgespikeCoreTests/Fixtures/
        manifest.json    the export's manifest less its host-dependent keys (files, validation)
        sampler.json     SplitMix64 draws and Sampler picks for fixed logits and options
        greedy.json      prompt ids and the first greedy tokens of the demo's decode step in eager
                         PyTorch (fp32), with each step's top-1 margin
    AppTests/Fixtures/
        tokenizer/       the export's tokenizer.json + tokenizer_config.json
        tokenizer_ids.json   HF tokenizers' ids and decoded text for a few strings

tests/test_ios_app.py regenerates them into a temporary dir and compares byte for byte, so
they cannot go stale. ``SplitMix64`` and ``sample`` here are the reference for
EdgespikeCore's ``SplitMix64`` and ``Sampler`` (same operations in the same order, in Double).
"""

from __future__ import annotations

import json
import math
import shutil
import struct
import sys
from dataclasses import dataclass
from pathlib import Path

APP = Path(__file__).resolve().parents[1]
CORE_FIXTURES = Path("Packages/EdgespikeCore/Tests/EdgespikeCoreTests/Fixtures")
APP_FIXTURES = Path("AppTests/Fixtures")
MASK64 = (1 << 64) - 1
TOKENIZER_STRINGS = [
    "Hello, world!",
    "The for statement is used to iterate over the elements of a sequence.",
    "  two spaces\nand\ttabs\n\n",
    "naïve café — 日本語 🙂",
    "a<|endoftext|>b",
    "x = [1, 2, 3]  # a list",
]
GREEDY_PROMPT = "The for statement"
GREEDY_TOKENS = 16


class SplitMix64:
    """Steele, Lea & Flood (2014), "Fast splittable pseudorandom number generators" (OOPSLA)."""

    def __init__(self, seed: int):
        self.state = seed & MASK64

    def next(self) -> int:
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK64
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        return z ^ (z >> 31)

    def next_double(self) -> float:
        """Uniform in [0, 1): the top 53 bits."""
        return (self.next() >> 11) * 2.0**-53


@dataclass(frozen=True)
class SamplingOptions:
    temperature: float = 0.8  # 0 = greedy
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1 = off
    repetition_penalty: float = 1.0  # 1 = off (CTRL: positive logits divided, negative multiplied)


def sample(logits: list[float], options: SamplingOptions, recent: list[int], rng: SplitMix64) -> int:
    """Penalty, then greedy or: scale by 1/T, sort (ties: lower id), top-k, softmax, top-p, one draw."""
    x = list(logits)
    if options.repetition_penalty != 1.0:
        for token in sorted(set(recent)):
            x[token] = x[token] / options.repetition_penalty if x[token] > 0 else x[token] * options.repetition_penalty
    if options.temperature == 0:
        return max(range(len(x)), key=lambda i: (x[i], -i))
    scaled = [v / options.temperature for v in x]
    order = sorted(range(len(x)), key=lambda i: (-scaled[i], i))
    if options.top_k > 0:
        order = order[: options.top_k]
    weights = [math.exp(scaled[i] - scaled[order[0]]) for i in order]
    if options.top_p < 1.0:
        total, cumulative = _sum(weights), 0.0
        for keep, weight in enumerate(weights, start=1):
            cumulative += weight
            if cumulative >= options.top_p * total:
                break
        order, weights = order[:keep], weights[:keep]
    threshold, cumulative = rng.next_double() * _sum(weights), 0.0
    for token, weight in zip(order, weights):
        cumulative += weight
        if threshold < cumulative:
            return token
    return order[-1]


def _sum(values: list[float]) -> float:
    total = 0.0
    for value in values:  # left to right, as Swift's reduce
        total += value
    return total


def _float32(value: float) -> float:
    return struct.unpack("<f", struct.pack("<f", value))[0]


def sampler_fixture() -> dict:
    rng = SplitMix64(2024)
    logits = [_float32(rng.next_double() * 8.0 - 4.0) for _ in range(32)]
    top = max(range(len(logits)), key=lambda i: logits[i])
    cases = [
        ("greedy", SamplingOptions(temperature=0), []),
        ("temperature", SamplingOptions(temperature=0.8), []),
        ("top_k", SamplingOptions(temperature=1.0, top_k=5), []),
        ("top_p", SamplingOptions(temperature=0.7, top_p=0.9), []),
        ("penalty", SamplingOptions(temperature=1.0, top_k=8, repetition_penalty=1.3), [top, 3, 3, 17]),
    ]
    out = []
    for index, (name, options, recent) in enumerate(cases):
        rng = SplitMix64(index + 1)
        draws = [sample(logits, options, recent, rng) for _ in range(12)]
        out.append({"name": name, "seed": index + 1, **options.__dict__, "recent": recent, "draws": draws})
    raw = SplitMix64(0)
    return {
        "splitmix64_seed0_hex": [f"{raw.next():016x}" for _ in range(4)],
        "logits": logits,
        "cases": out,
    }


def greedy_fixture(tokenizer) -> dict:
    import torch

    from edgespike import models
    from edgespike.capture import decode_step

    step = decode_step(models.load("demo"))
    prompt = tokenizer.encode(GREEDY_PROMPT).ids
    tokens, margins = [], []
    with torch.no_grad():
        for token in prompt:
            logits = step(torch.tensor([[token]]))[0]
        for _ in range(GREEDY_TOKENS):
            top2 = torch.topk(logits.double(), 2).values
            tokens.append(int(torch.argmax(logits)))
            margins.append(round(float(top2[0] - top2[1]), 4))
            logits = step(torch.tensor([[tokens[-1]]]))[0]
    return {"prompt": GREEDY_PROMPT, "prompt_ids": prompt, "tokens": tokens, "top1_margins": margins,
            "text": tokenizer.decode(tokens)}


def write_fixtures(export_dir: Path, out: Path) -> list[Path]:
    """Write every fixture under ``out`` (an apps/ios_demo-shaped root); the paths written."""
    from tokenizers import Tokenizer

    export_dir = Path(export_dir)
    manifest = json.loads((export_dir / "manifest.json").read_text())
    for host_dependent in ("files", "validation"):
        manifest.pop(host_dependent, None)
    tokenizer = Tokenizer.from_file(str(export_dir / "tokenizer.json"))
    ids = [{"text": s, "ids": tokenizer.encode(s).ids, "decoded": tokenizer.decode(tokenizer.encode(s).ids)}  # specials skipped
           for s in TOKENIZER_STRINGS]
    eos = json.loads((export_dir / "tokenizer_config.json").read_text())["eos_token"]
    documents = {
        CORE_FIXTURES / "manifest.json": manifest,
        CORE_FIXTURES / "sampler.json": sampler_fixture(),
        CORE_FIXTURES / "greedy.json": greedy_fixture(tokenizer),
        APP_FIXTURES / "tokenizer_ids.json": {"eos_id": tokenizer.token_to_id(eos), "strings": ids},
    }
    written = []
    for relative, document in documents.items():
        path = out / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(document, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        written.append(relative)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        relative = APP_FIXTURES / "tokenizer" / name
        (out / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(export_dir / name, out / relative)
        written.append(relative)
    return written


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    for path in write_fixtures(Path(sys.argv[1]), APP):
        print(path)
