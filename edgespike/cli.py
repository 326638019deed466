"""The ``edgespike`` command line: parse, call the library, render with rich.

Every command that takes a model accepts a model dir, ``demo`` (the bundled model) or
``FAMILY:PRESET``; ``edgespike.models.load`` resolves all three. Expected failures
(:class:`EdgespikeError`) print one line and exit with status 2.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Optional

import typer
from rich import box
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from edgespike.errors import EdgespikeError

app = typer.Typer(
    help="Ternarize, unroll and export spiking language models; run, benchmark and profile them.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()
errors = Console(stderr=True)
COMPACT = {"box": box.SIMPLE_HEAD, "show_edge": False, "padding": (0, 1, 0, 0)}  # tables that 80 columns hold

MODEL_HELP = ("A model dir, 'demo' (the bundled model), FAMILY:PRESET (e.g. evospikenet:tiny), or your own module as "
              "FILE.py:FACTORY (this imports and runs FILE.py: only name files you trust).")
CHECKPOINT_HELP = "Weights for a FILE.py:FACTORY module (.safetensors, or a .pt state_dict read with weights_only)."
WEIGHTS_HELP = ("Weight format: ternary, int8, int4, fp16 or fp32 (default: ternary for ternary-trained models, "
                "fp16 for dense ones; `edgespike quantize-report` measures each).")
QUIET_LOGGERS = ("coremltools", "torch", "torchao", "executorch", "onnxscript")


@app.callback()
def main_options(verbose: bool = typer.Option(False, "--verbose", "-v", help="Show edgespike's and the toolchains' logs.")):
    """Ternarize, unroll and export spiking language models; run, benchmark and profile them."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(name)s: %(message)s")
    if not verbose:
        _quiet_toolchains()


@app.command("models")
def models_command(json_out: bool = typer.Option(False, "--json", help="Print machine-readable JSON.")):
    """List the model families, what each is (as published, or edgespike's design after a seed write-up),
    their presets and parameter counts (built on the meta device)."""
    from edgespike import models

    rows = []
    for family in models.FAMILIES.values():
        for preset, config in family.presets.items():
            model = models.build(config, device="meta")
            rows.append(
                {
                    "family": family.name,
                    "preset": preset,
                    "origin": family.origin,
                    "parameters": model.num_parameters(),
                    "vocab_size": config.vocab_size,
                    "d_model": config.d_model,
                    "n_layers": config.n_layers,
                    "timesteps": config.spike.timesteps,
                    "summary": family.summary,
                }
            )
    if json_out:
        print(json.dumps({"models": rows}, indent=2))
        return
    families = Table("family", "what it is", title="edgespike model families", **COMPACT)
    for family in models.FAMILIES.values():
        families.add_row(family.name, family.origin)
    console.print(families)
    table = Table("family", "preset", "params", "vocab", "d", "layers", "T", title="presets", **COMPACT)
    for row in rows:
        table.add_row(
            row["family"], row["preset"], _human(row["parameters"]), str(row["vocab_size"]),
            str(row["d_model"]), str(row["n_layers"]), str(row["timesteps"]),
        )
    console.print(table)


def _human(count: float) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if count >= size:
            return f"{count / size:.2f}{unit}"
    return str(int(count))


@app.command("train")
def train_command(
    family: str = typer.Argument(..., help="Model family, e.g. pulse (see `edgespike models`)."),
    preset: str = typer.Option("tiny", help="Preset of the family to train."),
    corpus: str = typer.Option("pydoc", help="'pydoc' (ships with Python), a UTF-8 text file, or a folder of them."),
    tokenizer_kind: str = typer.Option("bpe", "--tokenizer", help="bpe (byte-level BPE) or char."),
    vocab_size: int = typer.Option(1024, help="Tokenizer vocabulary size (the upper bound for char)."),
    steps: int = typer.Option(1000, help="Optimizer steps."),
    seq_len: int = typer.Option(64, help="Tokens per training sequence."),
    batch_size: int = typer.Option(16, help="Sequences per step."),
    lr: float = typer.Option(3e-3, help="Peak learning rate (warm-up, then cosine decay)."),
    weight_decay: float = typer.Option(0.01, help="AdamW weight decay of the matrices (norms and biases get none)."),
    ternary: bool = typer.Option(True, "--ternary/--float", help="Ternary quantization-aware or float training."),
    timesteps: Optional[int] = typer.Option(None, help="LIF timesteps per token (default: the preset's)."),
    dropout: Optional[float] = typer.Option(None, help="Dropout while training, for families that have it (pulse: the embedding and each residual branch)."),
    eval_every: int = typer.Option(100, help="Steps between validation passes and checkpoints."),
    seed: int = typer.Option(0, help="Seed of initialization and batch sampling."),
    out: Optional[Path] = typer.Option(None, help="Run dir (default runs/FAMILY-PRESET): model/, checkpoint/, metrics.json."),
    resume: bool = typer.Option(False, "--resume", help="Continue from OUT/checkpoint."),
    init: Optional[Path] = typer.Option(None, help="Start from this model dir's weights and tokenizer (its config replaces --preset's), e.g. ternary training of a float model."),
    json_out: bool = typer.Option(False, "--json", help="Print the final report as JSON."),
):
    """Train a family on a corpus; reports held-out perplexity and per-layer spike rates."""
    import torch

    from edgespike import data, models
    from edgespike.train import TrainOptions, perplexity, train, unigram_perplexity

    options = TrainOptions(steps=steps, seq_len=seq_len, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                           eval_every=eval_every, seed=seed)
    out = out or Path("runs") / f"{family}-{preset}"
    if not resume and (out / "checkpoint").exists():
        raise EdgespikeError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    initial = models.load(init) if init is not None else None
    if initial is not None and (initial.family != family or initial.tokenizer is None):
        raise EdgespikeError(f"--init: {init} holds a {initial.family} model{'' if initial.tokenizer else ' without tokenizer.json'}; "
                             f"start a {family} run from a {family} model dir that edgespike train wrote")
    config = initial.config if initial is not None else models.preset_config(family, preset)
    if dropout is not None:
        if not hasattr(config, "dropout"):
            raise EdgespikeError(f"--dropout: the {family} family has no dropout; train it without --dropout")
        config = config.replace(dropout=dropout)
    train_text, held_out_text = data.split_corpus(data.read_corpus(corpus))
    tokenizer = initial.tokenizer if initial is not None else data.train_tokenizer(train_text, tokenizer_kind, vocab_size)
    tokenization = data.check_chunking(tokenizer, train_text + held_out_text)
    train_ids, valid_ids = data.encode(tokenizer, train_text), data.encode(tokenizer, held_out_text)

    spike = config.spike if timesteps is None else dataclasses.replace(config.spike, timesteps=timesteps)
    config = config.replace(vocab_size=tokenizer.get_vocab_size(), weights="ternary" if ternary else "float", spike=spike)
    torch.manual_seed(seed)
    model = models.build(config)
    if initial is not None:
        model.load_state_dict(initial.state_dict())
    model.tokenizer = tokenizer

    start = time.perf_counter()
    columns = (
        TextColumn("[bold]train[/]"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
        TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), TimeRemainingColumn(),
    )
    with Progress(*columns, console=errors, disable=json_out) as bar:
        task = bar.add_task("train", total=steps, stats="")

        def show(p):
            val = f" val ppl {p.val_ppl:.1f}" if p.val_ppl is not None else ""
            bar.update(task, completed=p.step, stats=f"loss {p.loss:.3f} lr {p.lr:.1e} {p.tokens_per_s:,.0f} tok/s{val}")

        result = train(model, train_ids, valid_ids, options, out, resume=resume, on_progress=show)

    rows = min(4, len(valid_ids) // seq_len)  # held-out sequences for the spike rates
    report = {
        "family": family,
        **({"init": str(init)} if init is not None else {"preset": preset}),
        "weights": config.weights,
        "parameters": model.num_parameters(),
        "corpus": corpus,
        "tokenizer": tokenizer_kind,
        "tokenization": tokenization,
        "vocab_size": config.vocab_size,
        "train_tokens": len(train_ids),
        "held_out_tokens": len(valid_ids),
        "options": options.__dict__,
        "seconds": round(result.seconds, 1),
        "wall_seconds": round(time.perf_counter() - start, 1),
        "val_ppl": perplexity(model, valid_ids, seq_len),
        "unigram_ppl": unigram_perplexity(train_ids, valid_ids, config.vocab_size),
        "spike_rates": models.spike_rates(model.eval(), valid_ids[: rows * seq_len].reshape(rows, seq_len)),
        "command": " ".join(["edgespike", *sys.argv[1:]]),
        "history": result.history,
    }
    models.save(model, out / "model")
    (out / "metrics.json").write_text(json.dumps(report, indent=2) + "\n")
    if json_out:
        print(json.dumps({k: v for k, v in report.items() if k != "history"}, indent=2))
        return
    console.print(
        f"[bold]held-out perplexity[/] {report['val_ppl']:.2f} (unigram baseline {report['unigram_ppl']:.2f}) "
        f"after {steps} steps in {report['seconds']:.0f}s; model in {out / 'model'}"
    )
    table = Table("layer", "spike rate", title="spike rates on held-out text")
    for name, rate in report["spike_rates"].items():
        table.add_row(name, f"{rate:.3f}")
    console.print(table)


@app.command("import")
def import_command(
    source: str = typer.Argument(..., help="Checkpoint layout: slms-pulse (a torch-saved SLMS Pulse state_dict), spikingbrain (a SpikingBrain-7B Hugging Face dir: config.json + safetensors shards, base/SFT or W8ASpike) or nir (a NIR graph, nir.write HDF5: a chain of Affine / Linear / LIF / CubaLIF nodes)."),
    checkpoint: Path = typer.Argument(..., help="The published checkpoint (e.g. pulse_1b_gsm8k.bin), or GRAPH.nir."),
    out: Path = typer.Option(..., help="Model dir to write (config.json, model.safetensors, tokenizer.json)."),
    preset: Optional[str] = typer.Option(None, help="The family preset the checkpoint was built with (e.g. pulse-1b)."),
    config: Optional[Path] = typer.Option(None, help="ARCH.json: the publisher's constructor arguments, instead of --preset."),
    tokenizer: Optional[Path] = typer.Option(None, help="tokenizer.json to carry in (a tokenizer_config.json beside it comes too)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing model dir."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    vocab_size: Optional[int] = typer.Option(None, help="nir: vocabulary size (default: the embedding file's rows, or the graph's input width for one-hot)."),
    embedding: str = typer.Option("random", help="nir: token -> input current: one-hot, random (seeded) or FILE.safetensors holding one tensor [V, d] (or an edgespike NIR export's host.safetensors)."),
    readout: Optional[str] = typer.Option(None, help="nir: per token, the last node's membrane, spikes (its last timestep) or rate (mean over the timesteps); default: the graph's metadata, else membrane."),
    head: Optional[str] = typer.Option(None, help="nir: readout -> logits: none, random or FILE.safetensors [V, out] (default: none when the graph's output is V wide, else random)."),
    timesteps: Optional[int] = typer.Option(None, help="nir: graph steps per token, the token's input held (default: the graph's metadata, else 1)."),
    dt: Optional[float] = typer.Option(None, help="nir: seconds per step, beta = 1 - dt/tau (default: the graph's metadata, else snntorch's 1e-4)."),
    reset_law: str = typer.Option("snntorch", help="nir: reset of neurons whose metadata states none: snntorch (subtract, one step late: what snntorch.export_to_nir graphs compute) or nir (to v_reset = 0 at once)."),
):
    """Import a published checkpoint or a NIR graph into an edgespike model dir: nothing unpickled beyond plain tensors, nothing executed, every key and shape checked."""
    from edgespike.importers import ImportOptions, import_checkpoint
    from edgespike.importers.nir import NirOptions
    from edgespike.models.format import read_config

    nir = NirOptions(vocab_size=vocab_size, embedding=embedding, readout=readout, head=head, timesteps=timesteps, dt=dt, reset_law=reset_law)
    options = ImportOptions(out=out, preset=preset, config=config, tokenizer=tokenizer, force=force, nir=nir)
    started = time.perf_counter()
    with console.status(f"importing {checkpoint} ({source})", spinner="dots") if not json_out else contextlib.nullcontext():
        directory = import_checkpoint(source, checkpoint, options)
    imported = read_config(directory)
    result = {"model_dir": str(directory), "family": imported.family, "config": imported.to_dict(),
              "seconds": round(time.perf_counter() - started, 2), "notes": options.notes}
    if json_out:
        print(json.dumps(result, indent=2))
        return
    for note in options.notes:
        console.print(f"note: {note}", highlight=False)
    console.print(f"imported {checkpoint} as {imported.family} into {directory} in {result['seconds']:.1f}s", highlight=False)


@app.command("quantize-report")
def quantize_report_command(
    model: str = typer.Argument("demo", help=MODEL_HELP),
    weights: str = typer.Option(",".join(("ternary", "int8", "int4", "fp16", "fp32")), help="Comma-separated weight formats."),
    tokens: int = typer.Option(512, help="Held-out tokens the formats are compared on."),
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON."),
):
    """What each weight format costs: held-out perplexity and agreement with the unquantized model."""
    from edgespike import models
    from edgespike.quant.report import quantize_report
    from edgespike.quant.weights import check_format
    from edgespike.validate import held_out_tokens

    formats = tuple(check_format(w.strip()) for w in weights.split(",") if w.strip()) or (check_format(weights),)
    if tokens < 2:
        raise EdgespikeError(f"--tokens must be >= 2, got {tokens}")
    lm = models.load(model)
    limit = getattr(lm.config, "max_seq_len", None)
    if limit is not None and tokens > limit:
        raise EdgespikeError(f"--tokens {tokens} is past the model's max_seq_len {limit}; pass --tokens {limit} or fewer")
    with console.status("running every weight format", spinner="dots") if not json_out else contextlib.nullcontext():
        report = quantize_report(lm, held_out_tokens(lm, tokens), formats)
    if json_out:
        print(json.dumps(report, indent=2))
        return
    table = Table("weights", "perplexity", "top-1 vs model", "max|Δlogit|", "linear weights",
                  title=f"{model}: {report['tokens']} tokens of {report['text']}; model perplexity {report['reference_perplexity']:.2f}")
    for row in report["formats"]:
        table.add_row(row["weights"], f"{row['perplexity']:.2f}", f"{row['top1_agreement']:.3f}",
                      f"{row['max_abs_logit_diff']:.3g}", _human_bytes(row["linear_weight_bytes"]))
    console.print(table)


def _human_bytes(count: float) -> str:
    return f"{count / 1e6:.2f} MB" if count >= 1e5 else f"{count / 1e3:.1f} kB"


RUNTIME_HELP = "Run the artifact on this runtime instead of its own (neuronchip bundles: neuronchip or sanafe)."


@app.command("generate")
def generate_command(
    model: str = typer.Argument("demo", help=MODEL_HELP + " Or an exported artifact dir."),
    prompt: str = typer.Option(..., help="Text to continue."),
    max_new_tokens: int = typer.Option(64, help="Tokens to generate."),
    temperature: float = typer.Option(0.8, help="Sampling temperature; 0 is greedy."),
    top_k: int = typer.Option(40, help="Sample among the k most likely tokens; 0 for all."),
    seed: int = typer.Option(0, help="Sampling seed."),
    stream: bool = typer.Option(True, "--stream/--no-stream", help="Print the text as it is generated."),
    checkpoint: Optional[Path] = typer.Option(None, help=CHECKPOINT_HELP),
    runtime: Optional[str] = typer.Option(None, help=RUNTIME_HELP),
):
    """Continue a prompt with a model or an exported artifact."""
    from edgespike import models
    from edgespike.artifact import MANIFEST
    from edgespike.generation import SamplingOptions, Stepper, eager_stepper, generate_text, session_stepper

    options = SamplingOptions(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, seed=seed)
    per_token_stats: list[dict] = []
    if (Path(model) / MANIFEST).is_file():
        from tokenizers import Tokenizer

        from edgespike.runtimes import load as load_session

        from edgespike.runtimes.registry import prefill_note

        session = load_session(model, runtime=runtime)
        errors.print(f"[dim]running {model} with {session.runtime}[/]", highlight=False)
        note = prefill_note(session)
        if note:
            errors.print(f"[dim]{model}: {note}[/]", highlight=False)
        stepper = session_stepper(session)
        if hasattr(session, "stats"):  # a simulator's per-token estimates (NeuronChip), the prompt's included
            stepper = Stepper(_recording_stats(stepper.step, session, per_token_stats), context=stepper.context)
        tokenizer_path = Path(model) / "tokenizer.json"
        if not tokenizer_path.is_file():
            raise EdgespikeError(f"{model} has no tokenizer.json; export a model that has a tokenizer")
        tokenizer = Tokenizer.from_file(str(tokenizer_path))
    else:
        if runtime:
            raise EdgespikeError(f"--runtime {runtime} picks the runtime of an exported artifact; {model} is a model: export it first")
        lm = models.load(_model_spec(model, checkpoint)).eval()
        if lm.tokenizer is None:
            raise EdgespikeError("this model has no tokenizer (an untrained preset?); train it with `edgespike train` first")
        stepper, tokenizer = eager_stepper(lm), lm.tokenizer
    pieces = generate_text(stepper, tokenizer, prompt, options)
    if not stream:
        pieces = ["".join(pieces)]
    sys.stdout.write(prompt)
    for piece in pieces:
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    if per_token_stats:
        _print_simulator_stats(per_token_stats)


def _recording_stats(step, session, out: list[dict]):
    def recorded(token: int):
        logits = step(token)
        out.append(session.stats)
        return logits

    return recorded


def _print_simulator_stats(per_token: list[dict]) -> None:
    """Mean per token of a simulator's estimates: latency, energy and its breakdown, host link."""
    mean = lambda key: sum(s[key] for s in per_token) / len(per_token)  # noqa: E731
    breakdown = {k: sum(s["energy_breakdown_j"][k] for s in per_token) / len(per_token) for k in per_token[0]["energy_breakdown_j"]}
    parts = ", ".join(f"{k} {v * 1e6:.2f}" for k, v in breakdown.items())
    errors.print(
        f"[dim]estimated per token over {len(per_token)} steps (prompt included): latency {mean('latency_s') * 1e3:.3f} ms "
        f"(slowest layer {mean('max_layer_latency_s') * 1e3:.3f} ms), energy {mean('energy_j') * 1e6:.2f} µJ ({parts} µJ), "
        f"host link {mean('host_link_bandwidth_bps') / 1e6:.1f} Mb/s, core utilization {mean('core_busy_utilization'):.0%}[/]",
        highlight=False,
    )


TARGET_HELP = "coreml, onnx, executorch, neuronchip, nir, or all."
STREAM_HELP = ("Fill the model tensor by tensor, each linear frozen as it is read, so the fp32 model is never held "
               "(default: for models over 200M parameters; a preset's random weights are then seeded per tensor).")


def _model_spec(model: str, checkpoint: Path | None) -> str:
    """The model spec with ``--checkpoint`` folded in: /abs/FILE.py:FACTORY[@/abs/WEIGHTS]."""
    from edgespike.models.module import factory_spec, is_factory_spec

    if is_factory_spec(model):
        return factory_spec(model, checkpoint)
    if checkpoint is not None:
        raise EdgespikeError("--checkpoint goes with a FILE.py:FACTORY model; a model dir holds its own weights")
    return model


def _model_title(spec: str) -> str:
    """A spec as a table title: a user's factory by its file name (the full paths are in the manifest)."""
    from edgespike.models.module import FACTORY_SPEC

    factory = FACTORY_SPEC.match(spec)
    return f"{Path(factory['file']).name}:{factory['factory']}" if factory else spec


def _model_name(spec: str) -> str:
    from edgespike.models.module import FACTORY_SPEC

    factory = FACTORY_SPEC.match(spec)
    if factory:
        return f"{Path(factory['file']).stem}-{factory['factory']}"
    return Path(spec).name if Path(spec).exists() else spec.replace(":", "-")


def _quiet_toolchains() -> None:
    """The toolchains' own warnings (untested versions, deprecations, optional libraries they cannot load,
    progress bars) are not the user's business unless --verbose; edgespike's own logs and warnings stay.

    They all come through logging (coremltools, torchao, torch.onnx's torchvision note, torch's pytree
    deprecation) or warnings. torch resets its "torch" logger when it is imported (torch._logging._init_logs),
    so TORCH_LOGS asks it for errors only; the level set here covers a torch imported already."""
    warnings.filterwarnings("ignore")
    warnings.filterwarnings("default", module=r"edgespike(\.|$)")
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("TORCH_LOGS", "-all")
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


def _per_target(names: list[str], run, arguments, jobs: int, quiet: bool, **local) -> list:
    """``run(*arguments(name))`` for every target, with a progress line each: in this process
    (adding ``local`` keyword arguments and the stages as they go) or in a pool of ``jobs``
    spawned workers. The results in ``names`` order."""
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from multiprocessing import get_context

    results = {}
    with Progress(TextColumn("[bold]{task.description}"), TextColumn("{task.fields[stage]}"), TimeElapsedColumn(),
                  console=errors, disable=quiet) as bar:
        tasks = {name: bar.add_task(name, total=1, stage="waiting") for name in names}
        if jobs <= 1 or len(names) == 1:
            for name in names:
                on_stage = lambda stage, task=tasks[name]: bar.update(task, stage=stage)  # noqa: E731
                results[name] = run(*arguments(name), on_stage=on_stage, **local)
                bar.update(tasks[name], completed=1, stage="done")
        else:
            with ProcessPoolExecutor(min(jobs, len(names)), mp_context=get_context("spawn"), initializer=_quiet_toolchains) as pool:
                futures = {pool.submit(run, *arguments(name)): name for name in names}
                for name in names:
                    bar.update(tasks[name], stage="working")
                for future in as_completed(futures):
                    results[futures[future]] = future.result()
                    bar.update(tasks[futures[future]], completed=1, stage="done")
    return [results[name] for name in names]


def _export_one(model_spec: str, target: str, destination: Path, options, force: bool, validate: bool, stream: bool | None,
                on_stage=None, lm=None):
    """Export and validate one target, in this process (``lm`` already loaded) or a pool worker."""
    from edgespike.exporters import export
    from edgespike.models.streaming import load_for_export
    from edgespike.validate import validate_artifact

    lm = lm if lm is not None else load_for_export(model_spec, options.weights, options.timesteps, stream)
    return export(
        lm, target, destination, options, force=force, source=model_spec,
        validate=(lambda d, m: validate_artifact(d, m, lm)) if validate else None, on_stage=on_stage,
    )


@app.command("export")
def export_command(
    model: str = typer.Argument("demo", help=MODEL_HELP),
    target: str = typer.Option("coreml", help=TARGET_HELP),
    out: Optional[Path] = typer.Option(None, help="Artifact dir (default artifacts/MODEL/TARGET)."),
    timesteps: Optional[int] = typer.Option(None, help="Unroll LIF neurons over T timesteps (default: the model's)."),
    precision: Optional[str] = typer.Option(None, help="fp16 or fp32 compute (default fp32; coreml fp16 runs its linears and matmuls in fp16)."),
    chip: Optional[str] = typer.Option(None, help="neuronchip: a chip preset (loihi, truenorth) or a chip .toml file."),
    weights: Optional[str] = typer.Option(None, help=WEIGHTS_HELP),
    state_precision: Optional[str] = typer.Option(
        None, help="coreml: how the fp16 Core ML states carry the spiking state: fp16x2 (default; an fp16 hi + lo "
                   "pair per value, the trained fp32 dynamics kept) or fp16 (half the state memory, dynamics rounded)."),
    prefill_tokens: Optional[int] = typer.Option(
        None, help="Length of the prefill entry (onnx, executorch, coreml): a prompt runs in one call per this many "
                   "tokens, the rest token by token (default: onnx and executorch 64, coreml 8, at most the model's max_seq_len; "
                   "0: no prefill entry)."),
    validate: bool = typer.Option(True, "--validate/--no-validate", help="Check the artifact against eager PyTorch."),
    force: bool = typer.Option(False, "--force", help="Replace an existing artifact dir."),
    jobs: int = typer.Option(2, help="Targets exported at once, each in its own process (with --target all)."),
    json_out: bool = typer.Option(False, "--json", help="Print the manifests as JSON."),
    checkpoint: Optional[Path] = typer.Option(None, help=CHECKPOINT_HELP),
    stream: Optional[bool] = typer.Option(None, "--stream/--no-stream", help=STREAM_HELP),
):
    """Export one decode step to CoreML, ONNX, ExecuTorch and/or NeuronChip, validated against eager PyTorch."""
    from edgespike.artifact import model_bytes
    from edgespike.exporters import EXPORTERS, ExportOptions
    from edgespike.models.streaming import load_for_export

    targets = list(EXPORTERS) if target == "all" else [target]
    unknown = [t for t in targets if t not in EXPORTERS]
    if unknown:
        raise EdgespikeError(f"unknown target {unknown[0]!r}; choose one of {', '.join(EXPORTERS)} or all")
    model = _model_spec(model, checkpoint)
    options = ExportOptions(timesteps=timesteps, precision=precision, chip=chip, weights=_weight_format(weights),
                            state_precision=_state_precision(state_precision), prefill_tokens=prefill_tokens)
    lm = load_for_export(model, options.weights, options.timesteps, stream)  # fail fast on a bad model spec
    base = out or Path("artifacts") / _model_name(model)
    destinations = {name: base / name if (out is None or len(targets) > 1) else out for name in targets}
    existing = [str(d) for d in destinations.values() if d.exists()]
    if existing and not force:
        raise EdgespikeError(f"{existing[0]} already exists; pass --force to replace it or choose another --out")
    results = _per_target(
        targets, _export_one, lambda name: (model, name, destinations[name], options, force, validate, stream), jobs, json_out,
        lm=lm
    )
    if json_out:
        print(json.dumps([{"path": str(r.path), "seconds": r.seconds, **r.manifest} for r in results], indent=2))
        return
    float_bytes = 4 * lm.num_parameters()
    table = Table("target", "size", "vs fp32 weights", "time", title=f"export of {_model_title(model)} (fp32 weights {float_bytes / 1e6:.2f} MB)")
    for r in results:
        size = model_bytes(r.path, r.manifest)
        table.add_row(r.target, f"{size / 1e6:.2f} MB", f"{size / float_bytes:.2f}x", f"{sum(r.seconds.values()):.1f} s")
    console.print(table)
    checked = [(r.target, r.manifest["validation"]) for r in results if r.manifest.get("validation")]
    if checked:
        _print_validation(checked)
    else:
        console.print("not validated (--no-validate)")
    for r in results:
        console.print(f"{r.target}: {r.path}", highlight=False)


VALIDATION_HELP = ("top-1: share of tokens where both pick the same next token; greedy: both continue with the same "
                   "greedy tokens; flips: share of spikes that differ; Δlogit: largest logit difference.")
RUNTIME_WORDS = {"mil-interpreter": "edgespike's interpreter of the Core ML program (numpy; Core ML itself runs only on Apple devices)"}


def _print_validation(checked: list[tuple[str, dict]]) -> None:
    """The validation table of ``(target, validation record)`` pairs, then what ran each artifact, in words."""
    table = Table("target", "result", "top-1", "greedy", "flips", "Δlogit", title="validation against eager PyTorch on held-out text")
    for target, v in checked:
        table.add_row(
            target, "[green]pass[/]" if v["passed"] else "[red]fail[/]", _fmt(v.get("top1_agreement"), ".3f"),
            _yes_no(v.get("greedy_match")), _fmt(v.get("spike_flip_rate"), ".1%"), _fmt(v.get("max_abs_logit_diff"), ".2g"),
        )
    console.print(table)
    console.print(VALIDATION_HELP, style="dim", highlight=False)
    for target, v in checked:
        console.print(_runtime_line(target, v), highlight=False)


def _runtime_line(target: str, v: dict) -> str:
    """What ran the artifact in validation, and which record its tolerance holds, in words."""
    line = f"{target}: run by {RUNTIME_WORDS.get(v['runtime'], v['runtime'])}"
    conversion, tolerance = v.get("conversion"), v.get("tolerance") or {}
    if conversion and tolerance.get("applies_to") == "conversion":
        how = ("from eager's state, eager following the artifact's spikes" if "flips_beyond_tie_margin" in conversion
               else "from eager's state, rounded as the artifact stores it")
        line += (f"; the tolerance applies to each step {how}: "
                 f"top-1 {conversion['top1_agreement']:.3f}, Δlogit {conversion['max_abs_logit_diff']:.2g}")
        if conversion.get("spike_flips"):
            line += f", {conversion['spike_flips']} spike(s) flipped at rounding ties"
    if v.get("tokens_note"):
        line += f" ({v['tokens']} tokens at this size)"
    return line


def _yes_no(value) -> str:
    return "—" if value is None else ("yes" if value else "no")


def _state_precision(value: str | None) -> str | None:
    from edgespike.quant.state import check_state_precision

    return value if value is None else check_state_precision(value)


def _weight_format(weights: str | None) -> str | None:
    from edgespike.quant.weights import check_format

    return weights if weights is None else check_format(weights)


def _fmt(value, spec: str) -> str:
    return "—" if value is None else format(value, spec)


@app.command("check")
def check_command(
    model: str = typer.Argument("demo", help=MODEL_HELP),
    targets: str = typer.Option("all", help="Comma-separated targets to check, or all."),
    budgets: Optional[Path] = typer.Option(None, help="TOML budgets: a \\[default] table and one table per target overriding it."),
    report: Path = typer.Option(Path("check-report"), help="Dir for report.json and junit.xml."),
    weights: Optional[str] = typer.Option(None, help=WEIGHTS_HELP),
    jobs: int = typer.Option(2, help="Targets checked at once, each in its own process."),
    json_out: bool = typer.Option(False, "--json", help="Print report.json to stdout instead of the table."),
    checkpoint: Optional[Path] = typer.Option(None, help=CHECKPOINT_HELP),
    stream: Optional[bool] = typer.Option(None, "--stream/--no-stream", help=STREAM_HELP),
):
    """Conversion check for CI: export every target, validate it, hold it to budgets.

    Exits 0 when every budget holds, 1 naming each failed budget, 2 on bad input.
    """
    from edgespike.check import check_target, describe, load_budgets, write_report
    from edgespike.exporters import EXPORTERS, ExportOptions
    from edgespike.models.streaming import load_for_export

    names = list(EXPORTERS) if targets == "all" else [t.strip() for t in targets.split(",") if t.strip()]
    unknown = [t for t in names if t not in EXPORTERS]
    if unknown or not names:
        raise EdgespikeError(f"unknown target {unknown[0] if unknown else targets!r}; choose from {', '.join(EXPORTERS)} or all")
    limits = load_budgets(budgets, tuple(EXPORTERS))
    model = _model_spec(model, checkpoint)
    options = ExportOptions(weights=_weight_format(weights))
    lm = load_for_export(model, options.weights, stream=stream)  # fail fast on a bad model spec
    reports = _per_target(names, check_target, lambda name: (model, name, limits[name], options, stream), jobs, json_out,
                          model=lm)
    result = write_report(report, model, reports, str(budgets) if budgets else None)
    if json_out:
        print(json.dumps(result, indent=2, default=str))
    else:
        table = Table("target", "result", "size", "top-1", "greedy", "flips", "Δlogit", "export", title=f"edgespike check {_model_title(model)}")
        for r in reports:
            v = r.validation or {}
            table.add_row(
                r.target, "[green]pass[/]" if r.passed else f"[red]FAIL[/] ({len(r.failures())})",
                _fmt(r.artifact_bytes and r.artifact_bytes / 1e6, ".2f") + " MB", _fmt(v.get("top1_agreement"), ".3f"),
                _yes_no(v.get("greedy_match")), _fmt(v.get("spike_flip_rate"), ".1%"), _fmt(v.get("max_abs_logit_diff"), ".2g"),
                _fmt(r.export_seconds, ".1f") + " s",
            )
        console.print(table)
        console.print(VALIDATION_HELP, style="dim", highlight=False)
        for r in reports:
            if r.validation:
                console.print(_runtime_line(r.target, r.validation), highlight=False)
        console.print(f"report: {report / 'report.json'}, {report / 'junit.xml'}", highlight=False)
    for r in reports:
        for verdict in r.failures():
            errors.print(f"FAIL {r.target}: {describe(verdict)}", highlight=False, markup=False)
    if not result["passed"]:
        raise typer.Exit(1)


@app.command("profile")
def profile_command(
    model: str = typer.Argument("demo", help=MODEL_HELP + " Or an exported artifact dir (its source model)."),
    target: list[str] = typer.Option(["cmos45"], "--target", help="Target name or .toml file; repeat for several (see --list)."),
    text: Optional[Path] = typer.Option(None, help="UTF-8 text to run (default: the corpus's held-out split)."),
    corpus: str = typer.Option("pydoc", help="Corpus whose held-out split is run when --text is not given."),
    tokens: Optional[int] = typer.Option(None, help="Tokens decoded one at a time for the counts (default 128; fewer "
                                                    "above 100M parameters, at least 16)."),
    firing_rate: Optional[float] = typer.Option(None, help="Assume this spike rate and build the model on the meta device (no weights)."),
    timesteps: Optional[int] = typer.Option(None, help="Unroll over T timesteps (default: the model's)."),
    sweep_spec: Optional[str] = typer.Option(None, "--sweep", help="KEY=V1,V2,...: timesteps or coding (perplexity vs energy), or firing_rate."),
    layers: bool = typer.Option(False, "--layers", help="Also print the per-layer table."),
    json_file: Optional[Path] = typer.Option(None, "--json", help="Write the full report (with every constant's source) here."),
    plot: Optional[Path] = typer.Option(None, help="Write a PNG: spike rate per layer, energy breakdown per target."),
    list_targets: bool = typer.Option(False, "--list", help="List the targets and exit."),
    checkpoint: Optional[Path] = typer.Option(None, help=CHECKPOINT_HELP),
    chip_model: str = typer.Option("edgespike", help="Chip targets' per-event costs: edgespike (the chip file) or sanafe "
                                   "(SANA-FE's Loihi architecture; the sanafe extra)."),
):
    """Operations, measured spike sparsity, and estimated energy and latency per token on each target."""
    from edgespike.profile import ProfileOptions, profile, sweep
    from edgespike.profile.targets import load_target, target_names

    if list_targets:
        for name in target_names():
            console.print(f"[bold]{name}[/]: {load_target(name).summary}", highlight=False)
        return
    model = _model_spec(model, checkpoint)
    options = ProfileOptions(targets=target, text_file=text, corpus=corpus, tokens=tokens, firing_rate=firing_rate, timesteps=timesteps,
                             chip_model=chip_model)
    with console.status("profiling"):
        if sweep_spec:
            key, _, values = sweep_spec.partition("=")
            key, values = key.strip(), [v.strip() for v in values.split(",") if v.strip()]
            if not values:
                raise EdgespikeError(f"--sweep {sweep_spec!r}: give KEY=V1,V2,... e.g. timesteps=1,2,4,8")
            if key != "coding":
                try:
                    values = [float(v) for v in values]
                except ValueError:
                    raise EdgespikeError(f"--sweep {sweep_spec!r}: {key} values must be numbers, e.g. timesteps=1,2,4,8") from None
            result = sweep(model, options, key, values)
        else:
            result = profile(model, options)
    if json_file:
        json_file.write_text(json.dumps(result, indent=2) + "\n")
    if plot:
        from edgespike.profile.plot import plot_profile, plot_sweep

        (plot_sweep if sweep_spec else plot_profile)(result, plot)
    if sweep_spec:
        _print_sweep(result)
    else:
        _print_profile(result, layers)


def _print_profile(report: dict, layers: bool) -> None:
    m, spikes = report["model"], report["spikes"]
    rate = "—" if spikes["firing_rate"] is None else f"{spikes['firing_rate']:.3f}"
    console.print(
        f"[bold]{m['spec']}[/] ({m['family']}, {_human(m['parameters'])} parameters, T={m['timesteps']}); "
        f"{report['text']['tokens']} tokens of {report['text']['source']}; spike rate {rate} "
        f"({'measured' if spikes['measured'] else 'assumed'})", highlight=False,
    )
    per = report["per_token"]
    nb = report["neurobench"]
    console.print(
        f"per token: dense MACs {_human(per['dense_macs'])}, ACs {_human(per['acs'])}, MACs {_human(per['macs'])}, "
        f"synops {_human(per['synops'])}, neuron updates {_human(per['neuron_updates'])}, spikes {_human(per['spikes'])}, "
        f"weights read {per['weight_bytes'] / 1e6:.2f} MB; NeuroBench: footprint {nb['footprint_bytes'] / 1e6:.2f} MB, "
        f"connection sparsity {nb['connection_sparsity']:.3f}, activation sparsity {_fmt(nb['activation_sparsity'], '.3f')}",
        highlight=False,
    )
    for table in profile_tables(report):
        console.print(table)
    if layers:
        names = list(report["targets"])
        per_layer = Table("layer", "spike rate", "dense MACs", "ACs", "spikes", "weights KB", *[f"{n} µJ" for n in names])
        for row in report["layers"]:
            per_layer.add_row(
                row["name"], _fmt(row["spike_rate"], ".3f"), _human(row["dense_macs"]), _human(row["acs"]), _human(row["spikes"]),
                f"{row['weight_bytes'] / 1e3:.1f}", *[_fmt(row["energy_per_token_j"][n] and row["energy_per_token_j"][n] * 1e6, ".3g") for n in names],
            )
        console.print(per_layer)
    console.print("[dim]Estimates: every constant and its source is in the --json report (targets.*.sources), "
                  "the target files in edgespike/profile/targets/.[/]")


def profile_tables(report: dict) -> list[Table]:
    """profile's per-target estimates as three tables that 80 columns hold: the energy and its parts,
    the latency, and the same network's energy dense (compute-only figures in brackets)."""
    uj = lambda v: "—" if v is None else f"{v * 1e6:.3g}"  # noqa: E731
    energy = Table("target", "µJ/token", "compute", "memory", "spikes+static", **COMPACT,
                   title="estimated energy per token, µJ (compute-only in brackets)")
    latency = Table("target", "ms/token", "bound", **COMPACT, title="estimated latency per token")
    dense = Table("target", "ANN µJ", "qANN µJ", "break-even spike rate", **COMPACT,
                  title="the same network dense (ANN) and int8 (qANN), estimated")
    for name, t in report["targets"].items():
        b, even = t["energy_breakdown_j"], t["break_even_firing_rate"]
        energy.add_row(name, f"{uj(t['energy_per_token_j'])} [{uj(t['compute_only_energy_per_token_j'])}]",
                       uj(b and b["compute"]), uj(b and b["memory"]), uj(b and b["spike_traffic"] + b["static"]))
        latency.add_row(name, _fmt(t["latency_per_token_s"] and t["latency_per_token_s"] * 1e3, ".4f"),
                        (t["latency"] or {}).get("bound", "—"))
        dense.add_row(
            name, f"{uj(t['ann_energy_per_token_j']['with_memory'])} [{uj(t['ann_energy_per_token_j']['compute_only'])}]",
            f"{uj(t['qann_energy_per_token_j']['with_memory'])} [{uj(t['qann_energy_per_token_j']['compute_only'])}]",
            f"{_fmt(even['with_memory'], '.3f')} [{_fmt(even['compute_only'], '.3f')}]",
        )
    return [energy, latency, dense]


def _print_sweep(result: dict) -> None:
    key, rows = result["sweep"], result["rows"]
    names = list(rows[0]["targets"])
    table = Table(key, "spike rate", "perplexity", *[f"{n} µJ / ms" for n in names], title=f"{key} sweep (energy and latency estimated)")
    for row in rows:
        cells = []
        for n in names:
            t = row["targets"][n]
            cells.append(f"{_fmt(t['energy_per_token_j'] and t['energy_per_token_j'] * 1e6, '.3g')} / "
                         f"{_fmt(t['latency_per_token_s'] and t['latency_per_token_s'] * 1e3, '.3g')}")
        table.add_row(str(row[key]), _fmt(row["firing_rate"], ".3f"), _fmt(row["perplexity"], ".1f"), *cells)
    console.print(table)


@app.command("bench")
def bench_command(
    artifacts: list[str] = typer.Argument(..., help="Exported artifact dirs to run side by side."),
    baseline: str = typer.Option("eager", help="'eager' (PyTorch, the artifacts' source model) or 'none'."),
    model: Optional[str] = typer.Option(None, help="The eager baseline model (default: the artifacts' source model)."),
    prompt_tokens: int = typer.Option(512, help="Held-out prompt tokens: timed through the prefill entry (TTFT) and token by token."),
    new_tokens: int = typer.Option(64, help="Greedy tokens decoded, each one timed."),
    repeats: int = typer.Option(3, help="Fresh-process runs per entry, interleaved."),
    json_file: Optional[Path] = typer.Option(None, "--json", help="Also write the report to this JSON file."),
    soak: Optional[int] = typer.Option(None, "--soak", help="Instead: step N tokens with the state carried, against eager "
                                       "(drift within the validation tolerance, RSS growth <= 1% after warm-up); exit 1 on a failure."),
    resync_every: int = typer.Option(50, help="--soak: tokens between comparisons from eager's state (runtimes whose state can be set)."),
    runtime: Optional[str] = typer.Option(None, help=RUNTIME_HELP),
    compiled: bool = typer.Option(False, "--compile", help="Also time the eager model under torch.compile (inductor: minutes to compile)."),
):
    """Measure time to first token, decode latency, tokens/s, bytes/token, load time and peak memory of artifacts vs eager
    PyTorch (or --soak them)."""
    from edgespike.bench import BenchOptions, bench

    if soak is not None:
        if runtime:
            raise EdgespikeError("--runtime applies to the timed runs; --soak runs every artifact on its own runtime: drop one")
        return _soak(artifacts, soak, resync_every, json_file)
    if baseline not in ("eager", "none"):
        raise EdgespikeError(f"unknown baseline {baseline!r}; choose eager or none")
    options = BenchOptions(prompt_tokens=prompt_tokens, new_tokens=new_tokens, repeats=repeats, compiled=compiled)
    with Progress(TextColumn("[bold]bench[/]"), TextColumn("{task.fields[run]}"), TimeElapsedColumn(), console=errors) as bar:
        task = bar.add_task("bench", run="")
        report = bench(artifacts, options, baseline=baseline == "eager", model=model, runtime=runtime,
                       on_run=lambda name, repeat: bar.update(task, run=f"{name}, run {repeat + 1}/{repeats}"))
    if json_file:
        json_file.write_text(json.dumps(report, indent=2) + "\n")
    for table in bench_tables(report):
        console.print(table)
    roof = report["roofline"]
    console.print(
        f"[dim]decode roofline (estimated): {roof['roofline_tokens_per_s']:,.0f} tok/s, {roof['bound']}-bound: "
        f"{roof['bytes_per_token'] / 1e6:.2f} MB/token at {roof['bandwidth_bytes_per_s'] / 1e9:.1f} GB/s measured "
        f"(cache {roof['cache_bandwidth_bytes_per_s'] / 1e9:.1f} GB/s), peak {roof['peak_ops_per_s'] / 1e9:.0f} GFLOP/s measured[/]",
        highlight=False,
    )


def bench_tables(report: dict) -> list[Table]:
    """bench's report as three tables that 80 columns hold: the prompt, decode speed, decode memory."""
    host, results = report["host"], report["results"]
    prompt = Table("runtime", "prefill tokens/call", "TTFT s", "token by token s", "TTFT speedup", **COMPACT,
                   title=f"{results[0]['prompt_tokens']}-token prompt of {report['model']} on {host['cpu']} ({host['cores']} cores)")
    speed = Table("runtime", "p50 ms", "p90 ms", "tok/s", "vs eager", "of roofline", title=f"decode of {report['model']}", **COMPACT)
    memory = Table("runtime", "MB/token", "GB/s", "load s", "peak MB", "size MB", title="decode: bytes read, memory, size", **COMPACT)
    for r in results:
        prompt.add_row(r["name"], str(r["prefill_tokens"] or "none"), f"{r['ttft_s']:.3f}", f"{r['prompt_token_by_token_s']:.3f}",
                       f"{r['ttft_speedup']:.1f}×")
        speed.add_row(r["name"], f"{r['p50_ms']:.2f}", f"{r['p90_ms']:.2f}", f"{r['tokens_per_s']:.1f}",
                      _fmt(r["speedup_vs_baseline"], ".2f"), f"{r['fraction_of_roofline']:.1%}")
        memory.add_row(r["name"], f"{r['bytes_per_token'] / 1e6:.2f}", f"{r['bytes_per_s'] / 1e9:.2f}", f"{r['load_s']:.2f}",
                       f"{r['peak_rss_mb']:.0f}", "—" if r["artifact_bytes"] is None else f"{r['artifact_bytes'] / 1e6:.2f}")
    return [prompt, speed, memory]


def _soak(artifacts: list[str], tokens: int, resync_every: int, json_file: Optional[Path]) -> None:
    from edgespike.bench import soak

    with Progress(TextColumn("[bold]soak[/]"), TextColumn("{task.fields[run]}"), TimeElapsedColumn(), console=errors) as bar:
        task = bar.add_task("soak", run="")
        report = soak(artifacts, tokens, resync_every, on_run=lambda artifact: bar.update(task, run=artifact))
    if json_file:
        json_file.write_text(json.dumps(report, indent=2) + "\n")
    table = Table("target", "tokens", "compared", "max |Δlogit|", "top-1", "RSS MB warm → end", "growth", "ms/token", "result",
                  title=f"soak: {tokens} tokens, state carried")
    for r in report["results"]:
        table.add_row(r["target"], str(r["tokens"]), r["compared"].split(":")[0], f"{r['max_abs_logit_diff']:.3g} "
                      f"(≤ {r['tolerance']['max_abs_logit_diff']})", f"{r['top1_agreement']:.3f}",
                      f"{r['rss_mb_after_warmup']:.0f} → {r['rss_mb_end']:.0f}", f"{r['rss_growth']:+.2%}",
                      f"{r['ms_per_token']:.2f}", "pass" if r["passed"] else "[red]FAIL[/]")
    console.print(table)
    if not report["passed"]:
        raise typer.Exit(1)


def main() -> None:
    try:
        app()
    except EdgespikeError as err:
        errors.print(f"[bold red]error:[/] {err}", highlight=False, soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
