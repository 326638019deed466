"""What a spiking model costs on the device you target, and whether spiking is really cheaper.

    profile(spec, options)            -> the report (dict, JSON-ready): counts per token and per
                                         block (``counting``), NeuroBench's metrics, and per target
                                         (``targets``) estimated energy with its breakdown, roofline
                                         latency, the ANN / quantized-ANN comparison and the
                                         break-even firing rate (``estimate``); chip targets' per-event
                                         costs from edgespike's chip file or, with ``chip_model="sanafe"``,
                                         SANA-FE's Loihi architecture (``targets.CHIP_MODELS``)
    sweep(spec, options, key, values) -> the same per value of timesteps or coding (with
                                         perplexity on the text) or firing_rate (meta-device models)

Spike rates are measured on real text (held-out corpus or a file), on fewer tokens above 100M
parameters (``token_count``); such models are streamed frozen (``edgespike.models.streaming``: a
preset's weights seeded per tensor), or built on the meta device with an assumed ``firing_rate``.
Every energy and latency is an estimate whose constants, each with its source, are in the report.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from edgespike import data, models
from edgespike.artifact import MANIFEST
from edgespike.errors import EdgespikeError
from edgespike.models.streaming import load_frozen, should_stream
from edgespike.profile.counting import COUNTS, Counts, count
from edgespike.profile.estimate import ann_equivalents, break_even_rate, energy, latency
from edgespike.profile.targets import Target, load_target

DEFAULT_TOKENS, MIN_TOKENS, SCALE_PARAMETERS = 128, 16, 100_000_000  # tokens profiled: 128, fewer above 100M parameters
SWEEPS = ("timesteps", "firing_rate", "coding")


@dataclass
class ProfileOptions:
    targets: list[str] = field(default_factory=lambda: ["cmos45"])
    text_file: Path | None = None  # UTF-8 text to run (default: the corpus's held-out split)
    corpus: str = data.DEFAULT_CORPUS
    tokens: int | None = None  # tokens decoded one at a time for the counts (None: ``token_count``)
    firing_rate: float | None = None  # assumed rate: the model is built on the meta device
    timesteps: int | None = None  # None: the model's (or the artifact's)
    coding: str | None = None  # W8ASpike spike coding (spikingbrain); None: the model's
    chip_model: str = "edgespike"  # chip targets' per-event costs: edgespike's chip file or SANA-FE's Loihi (targets.CHIP_MODELS)


def resolve(spec: str, options: ProfileOptions) -> tuple[torch.nn.Module, dict]:
    """The model to profile and what it is: a model spec, or an artifact dir (its source model)."""
    if options.firing_rate is not None and not 0.0 <= options.firing_rate <= 1.0:
        raise EdgespikeError(f"--firing-rate must be in [0, 1], got {options.firing_rate}")
    about = {"spec": spec}
    manifest_path = Path(spec) / MANIFEST
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text())
        about.update(artifact=spec, target=manifest.get("target"), precision=manifest.get("precision"))
        spec, options.timesteps = manifest.get("source_model"), options.timesteps or manifest.get("timesteps")
        if not spec:
            raise EdgespikeError(f"{manifest_path} names no source_model; profile the model dir it was exported from")
    if options.firing_rate is not None:
        if not models.is_preset_spec(spec):
            config = models.read_config(Path(spec)) if Path(spec).is_dir() else models.load(spec).config
        else:
            config = models.preset_config(*spec.split(":", 1))
        return models.build(config, device="meta"), about
    if options.coding is None and should_stream(spec):  # streamed frozen: never the fp32 model (a preset's weights seeded)
        return load_frozen(spec, timesteps=options.timesteps), about
    return with_coding(models.load(spec).eval(), options.coding), about


def token_count(model, options: ProfileOptions) -> int:
    """``options.tokens``, else ``DEFAULT_TOKENS``, proportionally fewer above ``SCALE_PARAMETERS`` (at least ``MIN_TOKENS``)."""
    if options.tokens is not None:
        return options.tokens
    return max(MIN_TOKENS, min(DEFAULT_TOKENS, DEFAULT_TOKENS * SCALE_PARAMETERS // model.num_parameters()))


def with_coding(model, coding: str | None):
    """``model`` with its spike coding changed (the same weights), for families that have one."""
    if coding is None or coding == getattr(model.config, "coding", None):
        return model
    if not hasattr(model.config, "coding"):
        raise EdgespikeError(f"the {model.config.family} family has no spike coding to change (spikingbrain's W8ASpike has)")
    rebuilt = models.build(model.config.replace(coding=coding))
    rebuilt.load_state_dict(model.state_dict())
    rebuilt.tokenizer = model.tokenizer
    return rebuilt.eval()


def text_tokens(model, options: ProfileOptions) -> tuple[list[int], str]:
    """Token ids to run, and where they came from."""
    if next(model.parameters()).is_meta:
        return [0], f"none: meta device, firing rate {options.firing_rate} assumed"
    if model.tokenizer is None:
        generator = torch.Generator().manual_seed(0)
        ids = torch.randint(0, model.config.vocab_size, (token_count(model, options),), generator=generator).tolist()
        return ids, "random token ids (the model has no tokenizer; train it for measured rates on text)"
    if options.text_file is not None:
        if not options.text_file.is_file():
            raise EdgespikeError(f"--text {options.text_file} does not exist")
        text, source = options.text_file.read_text(encoding="utf-8", errors="replace"), str(options.text_file)
    else:
        text, source = data.split_corpus(data.read_corpus(options.corpus))[1], f"{options.corpus} corpus, held-out split"
    if not text.strip():
        raise EdgespikeError(f"the text from {source} is empty; pass a UTF-8 file with some text")
    ids = data.first_tokens(model.tokenizer, text, token_count(model, options))
    if not ids:
        raise EdgespikeError(f"the text from {source} encodes to no tokens")
    return ids, source


def profile(spec: str, options: ProfileOptions) -> dict:
    model, about = resolve(spec, options)
    targets = [load_target(name, options.chip_model) for name in options.targets]  # fail on a bad target before counting
    tokens, source = text_tokens(model, options)
    counts = count(model, tokens, options.timesteps, options.firing_rate)
    result = report(counts, targets, {**about, "family": counts.family, "parameters": counts.parameters,
                                      "timesteps": counts.timesteps}, {"source": source, "tokens": len(tokens)})  # fmt: skip
    return {**result, "chip_model": options.chip_model}


def report(counts: Counts, targets: list[Target], model: dict, text: dict) -> dict:
    per_target = {target.name: estimate_target(counts, target) for target in targets}
    return {
        "estimated": True,
        "note": "energy and latency are estimates from each target's constants (sources under targets.*.sources); "
                "counts and spike rates are measured on the text" if counts.measured else "counts use the assumed firing rate",
        "model": model,
        "text": text,
        "spikes": {"measured": counts.measured, "firing_rate": counts.spike_rate},
        "per_token": {key: counts.total(key) for key in COUNTS},
        "neurobench": counts.neurobench(),
        "layers": [
            {**block.to_dict(), "energy_per_token_j": {t.name: _sum(energy(_only(counts, block), t, None, counts)) for t in targets}}
            for block in counts.blocks
        ],
        "targets": per_target,
    }


def estimate_target(counts: Counts, target: Target) -> dict:
    timing = latency(counts, target)
    seconds = timing["latency_s"] if timing else None
    breakdown = energy(counts, target, seconds)
    compute_only = dataclasses.replace(target, memory=False, static_power_w=0.0)
    ann, ann_compute = ann_equivalents(counts, target), ann_equivalents(counts, compute_only)
    snn, snn_compute = _sum(breakdown), _sum(energy(counts, compute_only, None))
    return {
        "summary": target.summary,
        "spike_compute": target.spike_compute,
        "energy_per_token_j": snn,
        "energy_breakdown_j": breakdown,
        "compute_only_energy_per_token_j": snn_compute,
        "latency_per_token_s": seconds,
        "latency": timing,
        "ann_energy_per_token_j": {"with_memory": ann["ann"] if target.memory else None, "compute_only": ann_compute["ann"]},
        "qann_energy_per_token_j": {"with_memory": ann["qann"] if target.memory else None, "compute_only": ann_compute["qann"]},
        "break_even_firing_rate": {
            "with_memory": break_even_rate(counts, target, snn, ann["qann"]) if target.memory and snn is not None else None,
            "compute_only": break_even_rate(counts, compute_only, snn_compute, ann_compute["qann"]) if snn_compute is not None else None,
        },
        "sources": target.sources,
    }


def sweep(spec: str, options: ProfileOptions, key: str, values: list[float]) -> dict:
    """One row per value: perplexity on the text (real weights), energy and latency per target."""
    from edgespike.capture import with_timesteps
    from edgespike.train import perplexity

    if key not in SWEEPS:
        raise EdgespikeError(f"cannot sweep {key!r}; sweep one of {', '.join(SWEEPS)} (e.g. --sweep timesteps=1,2,4,8)")
    if key == "firing_rate" and options.firing_rate is None:
        raise EdgespikeError("a firing_rate sweep needs a meta-device model: pass --firing-rate too (the rates are assumed)")
    cast = {"timesteps": int, "firing_rate": float, "coding": str}[key]
    rows = []
    for value in values:
        run = dataclasses.replace(options, **{key: cast(value)})
        result = profile(spec, run)
        row = {key: cast(value), "firing_rate": result["spikes"]["firing_rate"], "perplexity": None}
        if result["spikes"]["measured"]:
            model, _ = resolve(spec, dataclasses.replace(run))
            ids, _ = text_tokens(model, dataclasses.replace(run, tokens=max(run.tokens or DEFAULT_TOKENS, 1024)))
            unrolled = with_timesteps(model, run.timesteps).eval()
            row["perplexity"] = perplexity(unrolled, torch.tensor(ids), seq_len=min(64, len(ids) - 1))
        row["targets"] = {name: {"energy_per_token_j": t["energy_per_token_j"], "latency_per_token_s": t["latency_per_token_s"]}
                          for name, t in result["targets"].items()}
        rows.append(row)
    return {"estimated": True, "sweep": key, "rows": rows}


def _only(counts: Counts, block) -> Counts:
    return dataclasses.replace(counts, blocks=[block])


def _sum(breakdown: dict | None) -> float | None:
    return None if breakdown is None else sum(breakdown.values())
