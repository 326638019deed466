"""Benchmark artifacts side by side with eager PyTorch on this host.

Every measurement runs in a fresh subprocess (``python -m edgespike.bench``), so one
runtime's memory and thread pools do not pollute another's, and the runs are interleaved:
repeat 1 of every entry, then repeat 2, ... A run loads the session and warms it up (one prefill
chunk, the state reset after it: lazily opened graphs, compiled kernels), then processes the prompt
(the first ``prompt_tokens`` held-out tokens) twice from a reset: through its prefill entry
(``runtimes.registry.prefill``: time to first token) and one step per token; then decodes
``new_tokens`` greedily from its own logits, timing every step. Reported per entry: load time (cold:
the runtime's import, the model's opening and the warm-up), TTFT, token-by-token prompt time and
their ratio, decode latency p50/p90/p99, tokens/s (1 / mean decode latency), bytes per token (the
weights as the artifact stores them, each read once per decode step: its model files but a prefill
graph, an upper bound since an embedding table is read one row at a time; eager: its frozen tensors) and the bandwidth
that makes, peak resident memory of the worker process, artifact size, tokens/s as a ratio to the
baseline and as a fraction of the host's decode roofline (``edgespike.profile``: measured bandwidth
/ bytes per token, or peak / ops). The eager baseline is the model the manifest records (for
FAMILY:PRESET, an untrained instance: the same cost, other weights); ``compiled`` adds it under
``torch.compile`` (inductor) as a second baseline.

``soak`` (``edgespike bench --soak N``) is the long run: each artifact steps N held-out tokens (cycled)
with its state carried, beside eager, in a fresh process. An artifact that is not fp32-exact
(Core ML's fp16 states, the NeuronChip's fixed point) gets eager's state on both sides every
``resync_every`` tokens and the next step is compared, as validation's ``conversion`` record does;
an fp32-exact one is compared along its free rollout.
Both are held to the target's validation tolerance, and the process's resident memory may grow by
at most ``MAX_RSS_GROWTH`` between the end of the warm-up and the last token.
"""

from __future__ import annotations

import importlib.metadata
import dataclasses
import json
import os
import platform
import resource
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from edgespike.errors import EdgespikeError

PACKAGES = ("torch", "onnxruntime", "executorch", "coremltools", "edgespike")
MAX_RSS_GROWTH = 0.01  # soak: resident memory growth allowed after the warm-up


@dataclass
class BenchOptions:
    prompt_tokens: int = 512
    new_tokens: int = 64
    repeats: int = 3
    compiled: bool = False  # also the eager model under torch.compile

    def __post_init__(self):
        if self.prompt_tokens < 1 or self.new_tokens < 1 or self.repeats < 1:
            raise EdgespikeError("--prompt-tokens, --new-tokens and --repeats must be >= 1")


@dataclass(frozen=True)
class Entry:
    """One thing to benchmark: an artifact dir, or the eager model ``model`` at ``timesteps``."""

    name: str
    artifact: str | None = None
    model: str | None = None
    timesteps: int | None = None
    weights: str | None = None
    runtime: str | None = None  # an artifact's runtime other than its own (runtimes.pick)
    compiled: bool = False  # the eager model under torch.compile


def host_facts() -> dict:
    cpu = platform.processor()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(), "versions": versions}


def bench(
    artifacts: list[str],
    options: BenchOptions,
    baseline: bool = True,
    model: str | None = None,
    on_run: Callable[[str, int], None] | None = None,
    runtime: str | None = None,
) -> dict:
    """The report of benchmarking ``artifacts`` (and the eager baseline) on this host; ``runtime`` runs every
    artifact on that runtime instead of its own."""
    from edgespike.artifact import model_bytes, read_manifest
    from edgespike.models.streaming import load_for_export
    from edgespike.runtimes import pick
    from edgespike.validate import held_out_tokens

    manifests = {path: read_manifest(path) for path in artifacts}
    sources = {m.get("source_model") for m in manifests.values()}
    source = model or (sources.pop() if len(sources) == 1 else None)
    if source is None:
        raise EdgespikeError("the artifacts come from different models (or none is recorded); name the baseline with --model")
    timesteps = {m["timesteps"] for m in manifests.values()}
    weights = {m.get("weights") for m in manifests.values()}
    entries = [Entry(_label(path, m, manifests), artifact=path, runtime=pick(Path(path), m, runtime) if runtime else None)
               for path, m in manifests.items()]
    eager = Entry("eager", model=source, timesteps=timesteps.pop() if len(timesteps) == 1 else None,
                  weights=weights.pop() if len(weights) == 1 else None)
    if options.compiled:
        entries.insert(0, dataclasses.replace(eager, name="torch.compile", compiled=True))
    if baseline:
        entries.insert(0, eager)
    source_model = load_for_export(source)  # streamed and frozen above STREAM_PARAMETERS: never the fp32 model
    tokens = held_out_tokens(source_model, options.prompt_tokens)
    context = source_model.config.max_seq_len if source_model.positional else None
    if context and len(tokens) + options.new_tokens > context:
        raise EdgespikeError(f"--prompt-tokens {options.prompt_tokens} + --new-tokens {options.new_tokens} is past the model's "
                             f"context of {context} tokens (max_seq_len); ask for fewer")

    runs: dict[str, list[dict]] = {entry.name: [] for entry in entries}
    for repeat in range(options.repeats):
        for entry in entries:
            if on_run:
                on_run(entry.name, repeat)
            runs[entry.name].append(_run_worker(entry, tokens, options))

    results = []
    for entry in entries:
        samples = runs[entry.name]
        latencies = np.concatenate([s["latencies_ms"] for s in samples])
        results.append(
            {
                "name": entry.name,
                "runtime": samples[0]["runtime"],
                "artifact": entry.artifact,
                "load_s": float(np.median([s["load_s"] for s in samples])),
                "prompt_tokens": len(tokens),
                "prefill_tokens": samples[0]["prefill_tokens"],
                "ttft_s": float(np.median([s["ttft_s"] for s in samples])),
                "prompt_token_by_token_s": float(np.median([s["prompt_token_by_token_s"] for s in samples])),
                "p50_ms": float(np.percentile(latencies, 50)),
                "p90_ms": float(np.percentile(latencies, 90)),
                "p99_ms": float(np.percentile(latencies, 99)),
                "tokens_per_s": float(1000.0 / latencies.mean()),
                "peak_rss_mb": max(s["peak_rss_mb"] for s in samples),
                "bytes_per_token": samples[0]["bytes_per_token"],
                "artifact_bytes": model_bytes(Path(entry.artifact), manifests[entry.artifact]) if entry.artifact else None,
            }
        )
    reference = results[0]["tokens_per_s"] if baseline else None
    roofline = decode_roofline(source_model, tokens, timesteps.pop() if len(timesteps) == 1 else None)
    for result in results:
        result["speedup_vs_baseline"] = result["tokens_per_s"] / reference if reference else None
        result["fraction_of_roofline"] = result["tokens_per_s"] / roofline["roofline_tokens_per_s"]
        result["ttft_speedup"] = result["prompt_token_by_token_s"] / result["ttft_s"]
        result["bytes_per_s"] = result["bytes_per_token"] * result["tokens_per_s"]
    return {"host": host_facts(), "options": asdict(options), "baseline": "eager" if baseline else None,
            "model": source, "roofline": roofline, "results": results}


def decode_roofline(model, tokens: list[int], timesteps: int | None) -> dict:
    """The host's decode limit for ``model`` (edgespike.profile): measured bandwidth and peak over
    the bytes and ops per token of the ternary model (2-bit weights, read once per token)."""
    from edgespike.profile.counting import count
    from edgespike.profile.estimate import latency
    from edgespike.profile.targets import measure_host

    host = measure_host()
    limit = latency(count(model, tokens[:8], timesteps), host)
    return {**limit, "bandwidth_bytes_per_s": host.bandwidth_bytes_per_s, "cache_bandwidth_bytes_per_s": host.cache_bandwidth_bytes_per_s,
            "peak_ops_per_s": host.peak_ops_per_s, "note": "an estimate: measured host peak and bandwidth over the ternary "
            "model's bytes and ops per token (layer-major: weights read once per token)"}  # fmt: skip


def _label(path: str, manifest: dict, manifests: dict) -> str:
    same_target = [p for p, m in manifests.items() if m["target"] == manifest["target"]]
    return manifest["target"] if len(same_target) == 1 else f"{manifest['target']} ({path})"


def _run_worker(entry: Entry, tokens: list[int], options: BenchOptions) -> dict:
    request = json.dumps({"entry": asdict(entry), "tokens": tokens, "new_tokens": options.new_tokens})
    done = subprocess.run([sys.executable, "-m", "edgespike.bench"], input=request, capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise EdgespikeError(f"benchmarking {entry.name} failed: {last}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _measure(entry: Entry, tokens: list[int], new_tokens: int) -> dict:
    """Runs inside the worker process."""
    from edgespike.runtimes.registry import prefill, prefill_chunk_tokens

    start = time.perf_counter()
    if entry.artifact:
        from edgespike.artifact import model_bytes
        from edgespike.runtimes import load as load_session

        session = load_session(entry.artifact, runtime=entry.runtime)
        prefill_file = (session.manifest.get("prefill") or {}).get("model_file")  # a second graph decode does not read
        stored = model_bytes(Path(entry.artifact), session.manifest) - (Path(entry.artifact, prefill_file).stat().st_size if prefill_file else 0)
    else:
        import torch

        from edgespike.models.streaming import load_for_export
        from edgespike.runtimes.eager import EagerSession

        session = EagerSession(load_for_export(entry.model, entry.weights, entry.timesteps), entry.timesteps, entry.weights)
        step = session.step_module
        stored = sum(t.numel() * t.element_size() for t in (*step.parameters(), *step.buffers()))
        if entry.compiled:
            step.forward = torch.compile(step.forward)  # compiled at the warm-up below (a graph per token count)
            session.runtime = f"PyTorch {torch.__version__} torch.compile (inductor)"
    prefill(session, tokens[: max(1, prefill_chunk_tokens(session))])  # the warm-up
    session.step(tokens[0])
    session.reset()
    load_s = time.perf_counter() - start

    start = time.perf_counter()
    logits = prefill(session, tokens)
    int(logits.argmax())
    ttft_s = time.perf_counter() - start
    session.reset()
    start = time.perf_counter()
    for token in tokens:
        logits = session.step(token)
    prompt_s = time.perf_counter() - start

    latencies = []
    for _ in range(new_tokens):
        token = int(logits.argmax())
        start = time.perf_counter()
        logits = session.step(token)
        latencies.append((time.perf_counter() - start) * 1000.0)
    return {"runtime": session.runtime, "load_s": load_s, "ttft_s": ttft_s, "prompt_token_by_token_s": prompt_s,
            "prefill_tokens": prefill_chunk_tokens(session), "latencies_ms": latencies, "bytes_per_token": stored,
            "peak_rss_mb": _peak_rss_mb()}


def _peak_rss_mb() -> float:
    """This process's peak resident memory: Linux's VmHWM (ru_maxrss would keep the forking parent's
    peak across exec), elsewhere ru_maxrss."""
    try:
        line = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmHWM:"))
        return int(line.split()[1]) / 1024.0
    except (OSError, StopIteration):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # bytes on macOS
        return peak / 2**20 if platform.system() == "Darwin" else peak / 1024.0


def soak(artifacts: list[str], tokens: int, resync_every: int = 50, on_run: Callable[[str], None] | None = None) -> dict:
    """The soak report of ``artifacts``: each run by ``soak_artifact`` in a fresh process."""
    if tokens < 1 or resync_every < 1:
        raise EdgespikeError("--soak and --resync-every must be >= 1")
    results = []
    for artifact in artifacts:
        if on_run:
            on_run(artifact)
        request = json.dumps({"soak": {"artifact": artifact, "tokens": tokens, "resync_every": resync_every}})
        done = subprocess.run([sys.executable, "-m", "edgespike.bench"], input=request, capture_output=True, text=True)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise EdgespikeError(f"soaking {artifact} failed: {last}")
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return {"host": host_facts(), "tokens": tokens, "resync_every": resync_every, "max_rss_growth": MAX_RSS_GROWTH,
            "passed": all(r["passed"] for r in results), "results": results}


def soak_artifact(artifact: str, tokens: int, resync_every: int = 50, warmup: int | None = None) -> dict:
    """``tokens`` steps of ``artifact`` with the state carried, against eager (module docstring)."""
    from edgespike.artifact import read_manifest
    from edgespike.models import is_preset_spec
    from edgespike.models import load as load_model
    from edgespike.runtimes import load as load_session
    from edgespike.runtimes.eager import EagerSession
    from edgespike.validate import fp32_exact, held_out_tokens, sync_state, tolerance_for, top1_agrees

    manifest = read_manifest(artifact)
    source = manifest.get("source_model")
    if source is None or is_preset_spec(source):
        raise EdgespikeError(
            f"{artifact} was exported from {source or 'an unrecorded model'}, whose weights eager cannot rebuild; "
            "soak an export of a model dir or demo"
        )
    session = load_session(artifact)
    model = load_model(manifest["source_model"])
    reference = EagerSession(model, manifest["timesteps"], manifest.get("weights"))
    text = held_out_tokens(model, min(tokens, 512))
    stream = [text[i % len(text)] for i in range(tokens)]
    sequence = manifest.get("max_seq_len", tokens)  # a positional model restarts its sequence there
    resync = hasattr(session, "set_state") and not fp32_exact(manifest)  # an inexact one: its conversion
    tolerance = tolerance_for(manifest["target"], manifest["precision"])
    warmup = min(tokens - 1, max(10, tokens // 4) if warmup is None else warmup)
    diffs, agree, rss_warm, start = [], [], _rss_mb(), time.perf_counter()
    for i, token in enumerate(stream):
        if i and i % sequence == 0:
            session.reset()
            reference.reset()
        if resync and i % resync_every == 0:  # both from eager's state, rounded as the artifact holds it
            sync_state(reference, [session], manifest.get("state_precision", "fp32"))
        ours, theirs = session.step(token), reference.step(token)
        if not resync or i % resync_every == 0:
            diffs.append(float(np.abs(ours - theirs).max()))
            agree.append(top1_agrees(ours, theirs))
        if i == warmup:
            rss_warm, start = _rss_mb(), time.perf_counter()
    rss_end = _rss_mb()
    growth = (rss_end - rss_warm) / rss_warm
    top1, worst = float(np.mean(agree)), max(diffs)
    return {
        "artifact": str(artifact), "target": manifest["target"], "runtime": session.runtime, "tokens": tokens,
        "compared": f"conversion: eager's state given to both every {resync_every} tokens" if resync else "rollout: state carried, never reset",
        "comparisons": len(diffs), "max_abs_logit_diff": worst, "top1_agreement": top1,
        "last_quarter_max_abs_logit_diff": max(diffs[len(diffs) * 3 // 4 :]), "tolerance": tolerance.__dict__,
        "rss_mb_after_warmup": rss_warm, "rss_mb_end": rss_end, "rss_growth": growth, "warmup_tokens": warmup + 1,
        "ms_per_token": (time.perf_counter() - start) * 1000.0 / max(1, tokens - warmup - 1),  # both sides' steps
        "passed": worst <= tolerance.max_abs_logit_diff and top1 >= tolerance.min_top1_agreement and growth <= MAX_RSS_GROWTH,
    }


def _rss_mb() -> float:
    """Resident memory of this process now (Linux: /proc; elsewhere the peak, which only grows)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return _peak_rss_mb()


if __name__ == "__main__":
    import warnings

    warnings.filterwarnings("ignore")
    request = json.loads(sys.stdin.read())
    try:
        if "soak" in request:
            print(json.dumps(soak_artifact(**request["soak"])))
        else:
            print(json.dumps(_measure(Entry(**request["entry"]), request["tokens"], request["new_tokens"])))
    except EdgespikeError as err:  # the parent reports the last stderr line
        print(err, file=sys.stderr)
        sys.exit(2)
