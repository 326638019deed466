"""The conversion check for users' CI: export, validate, hold each target to its budgets.

    load_budgets(path)                     -> {target: Budget}, the package's defaults
                                              (budgets.toml) overridden by the user's file
    check_target(model, target, budget)    -> TargetReport (export + validation + budgets)
    write_report(dir, model, reports)      -> report.json and junit.xml

A budgets file is TOML: a ``[default]`` table and one table per target overriding it, keys
from ``Budget``. A validation failure is a failed ``validation`` budget with the record kept
(the metrics of a failed export are what the user needs to see).
"""

from __future__ import annotations

import dataclasses
import json
import platform
import tempfile
import time
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from xml.etree import ElementTree

from edgespike import __version__
from edgespike.artifact import model_bytes
from edgespike.errors import EdgespikeError


@dataclass(frozen=True)
class Budget:
    """Limits one target's artifact must meet; None means not checked."""

    max_artifact_bytes: int | None = None  # bytes of the model file(s), tokenizer excluded
    max_size_vs_fp32: float | None = None  # model bytes / (4 bytes x parameters)
    min_top1_agreement: float | None = None  # argmax agreement with eager, teacher-forced
    max_abs_logit_diff: float | None = None  # against eager, over the rollout
    max_spike_flip_rate: float | None = None  # fraction of LIF spikes that differ from eager
    greedy_match: bool | None = None  # the greedy continuation must equal eager's
    max_export_seconds: float | None = None  # capture + lower + write + validate, wall time
    max_sanafe_energy_per_token_j: float | None = None  # neuronchip: mean energy per token on SANA-FE (sanafe extra), J
    max_peak_rss_bytes: int | None = None  # the check process's peak resident memory up to this target's end (ru_maxrss)


SANAFE_TOKENS = 8  # tokens the neuronchip bundle decodes on SANA-FE for max_sanafe_energy_per_token_j


NUMERIC = {"max_artifact_bytes", "max_size_vs_fp32", "min_top1_agreement", "max_abs_logit_diff",
           "max_spike_flip_rate", "max_export_seconds", "max_sanafe_energy_per_token_j", "max_peak_rss_bytes"}
FRACTIONS = {"min_top1_agreement", "max_spike_flip_rate"}
DEFAULT_TABLE = "default"


def _budget_tables(text: str, source: str, targets: tuple[str, ...]) -> dict[str, dict]:
    try:
        tables = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, RecursionError) as err:
        raise EdgespikeError(f"{source} is not valid TOML: {str(err)[:200]}") from None
    keys = {f.name for f in dataclasses.fields(Budget)}
    for table, values in tables.items():
        if table != DEFAULT_TABLE and table not in targets:
            raise EdgespikeError(f"{source}: unknown table [{table}]; use [{DEFAULT_TABLE}] or one of {', '.join(f'[{t}]' for t in targets)}")
        if not isinstance(values, dict):
            raise EdgespikeError(f"{source}: {table} = … must be a table [{table}] of budgets")
        for key, value in values.items():
            where = f"{source} [{table}] {key}"
            if key not in keys:
                raise EdgespikeError(f"{source} [{table}]: unknown budget {key!r}; known budgets: {', '.join(sorted(keys))}")
            if key in NUMERIC and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise EdgespikeError(f"{where} must be a number, got {value!r}")
            if key == "greedy_match" and not isinstance(value, bool):
                raise EdgespikeError(f"{where} must be true or false, got {value!r}")
            if key in NUMERIC and value < 0 or key in FRACTIONS and value > 1:
                raise EdgespikeError(f"{where} = {value} is out of range ({'[0, 1]' if key in FRACTIONS else '>= 0'})")
    return tables


def load_budgets(path: str | Path | None, targets: tuple[str, ...]) -> dict[str, Budget]:
    """Per target: package [default] < package [target] < file [default] < file [target]."""
    layers = [_budget_tables(resources.files("edgespike").joinpath("budgets.toml").read_text(), "edgespike/budgets.toml", targets)]
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise EdgespikeError(f"budgets file {path} does not exist; pass a TOML file with a [default] table")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as err:
            raise EdgespikeError(f"{path} is not UTF-8 text ({err.reason} at byte {err.start}); save it as UTF-8 TOML") from None
        layers.append(_budget_tables(text, str(path), targets))
    budgets = {}
    for target in targets:
        merged: dict = {}
        for tables in layers:
            merged |= tables.get(DEFAULT_TABLE, {}) | tables.get(target, {})
        budgets[target] = Budget(**merged)
    return budgets


@dataclass
class Verdict:
    budget: str  # a Budget field, or "validation" / "export"
    limit: object
    actual: object
    passed: bool | None  # None: not measured (skipped), with the reason in ``note``
    note: str = ""


@dataclass
class TargetReport:
    target: str
    verdicts: list[Verdict] = field(default_factory=list)
    artifact_bytes: int | None = None
    export_seconds: float | None = None
    validation: dict | None = None
    error: str | None = None
    sanafe_energy_per_token_j: float | None = None  # SANA-FE's estimate (neuronchip, when budgeted), J
    peak_rss_bytes: int | None = None  # the process's peak resident memory once this target was done (model load included)

    @property
    def passed(self) -> bool:
        return all(v.passed is not False for v in self.verdicts)

    def failures(self) -> list[Verdict]:
        return [v for v in self.verdicts if v.passed is False]


def check_target(model_spec: str, target: str, budget: Budget, options=None, stream: bool | None = None, model=None,
                 on_stage=None) -> TargetReport:
    """Export ``model_spec`` (streamed: ``edgespike.models.streaming.load_for_export``) to ``target`` in a
    scratch dir, validate it and apply ``budget``."""
    from edgespike.exporters import ExportOptions, export
    from edgespike.models.streaming import load_for_export
    from edgespike.validate import validate_artifact

    options = options or ExportOptions()
    model = model if model is not None else load_for_export(model_spec, options.weights, options.timesteps, stream)
    report = TargetReport(target)
    with tempfile.TemporaryDirectory(prefix=f"edgespike-check-{target}-") as scratch:
        def validate(directory, manifest):
            report.validation = validate_artifact(directory, manifest, model)
            return report.validation

        start = time.perf_counter()
        try:
            result = export(model, target, Path(scratch) / target, options, source=model_spec, validate=validate, on_stage=on_stage)
        except EdgespikeError as err:
            report.error = str(err)
        report.export_seconds = time.perf_counter() - start
        report.peak_rss_bytes = peak_rss_bytes()
        if report.error is None:
            report.artifact_bytes = model_bytes(result.path, result.manifest)
            if target == "neuronchip" and budget.max_sanafe_energy_per_token_j is not None:
                report.sanafe_energy_per_token_j = sanafe_energy_per_token(result.path, model)
    report.verdicts = _verdicts(report, budget, model.num_parameters())
    return report


def peak_rss_bytes() -> int:
    """This process's peak resident set size so far (``getrusage``; Linux counts KiB, macOS bytes)."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def sanafe_energy_per_token(bundle: Path, model) -> float:
    """Mean estimated energy per token (J) of a neuronchip bundle on SANA-FE, over held-out text (token ids 0.. without
    a tokenizer)."""
    from edgespike.runtimes import load

    session = load(bundle, runtime="sanafe")
    if model.tokenizer is not None:
        from edgespike.data import encode, read_corpus, split_corpus

        tokens = encode(model.tokenizer, split_corpus(read_corpus())[1][:2000])[:SANAFE_TOKENS].tolist()
    else:
        tokens = list(range(SANAFE_TOKENS))
    total = 0.0
    for token in tokens:
        session.step(token)
        total += session.stats["energy_j"]
    return total / len(tokens)


def _verdicts(report: TargetReport, budget: Budget, parameters: int) -> list[Verdict]:
    v = report.validation or {}
    if report.error is not None and not v:  # the export itself failed: nothing else to measure
        return [Verdict("export", "succeeds", "failed", False, report.error)]
    verdicts = [Verdict("validation", "passes", "passed" if v.get("passed") else "failed", bool(v.get("passed")),
                        v.get("reason", ""))]
    size = report.artifact_bytes
    actual = {
        "max_artifact_bytes": size,
        "max_size_vs_fp32": None if size is None else size / (4 * parameters),
        "min_top1_agreement": v.get("top1_agreement"),
        "max_abs_logit_diff": v.get("max_abs_logit_diff"),
        "max_spike_flip_rate": v.get("spike_flip_rate"),
        "greedy_match": v.get("greedy_match"),
        "max_export_seconds": report.export_seconds,
        "max_sanafe_energy_per_token_j": report.sanafe_energy_per_token_j,
        "max_peak_rss_bytes": report.peak_rss_bytes,
    }
    for name, limit in dataclasses.asdict(budget).items():
        if limit is None:
            continue
        value = actual[name]
        if value is None:
            note = v.get("spike_flip_rate_note", "not measured") if name == "max_spike_flip_rate" else "not measured (the export failed)"
            if name == "max_sanafe_energy_per_token_j" and report.target != "neuronchip":
                note = "not measured (SANA-FE runs neuronchip bundles only)"
            verdicts.append(Verdict(name, limit, None, None, note))
        elif name == "greedy_match":
            verdicts.append(Verdict(name, limit, value, value or not limit))
        elif name.startswith("min_"):
            verdicts.append(Verdict(name, limit, value, value >= limit))
        else:
            verdicts.append(Verdict(name, limit, value, value <= limit))
    return verdicts


def describe(verdict: Verdict) -> str:
    """One line: which budget, its limit and what was measured."""
    relation = ">=" if verdict.budget.startswith("min_") else "<=" if verdict.budget.startswith("max_") else "="
    return f"{verdict.budget}: {_show(verdict.actual)} (budget {relation} {_show(verdict.limit)})" + (
        f" — {verdict.note}" if verdict.note and verdict.passed is not True else ""
    )


def _show(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def write_report(directory: Path, model_spec: str, reports: list[TargetReport], budgets_file: str | None) -> dict:
    """``report.json`` (everything) and ``junit.xml`` (a testcase per target x budget) in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    report = {
        "edgespike_version": __version__,
        "model": model_spec,
        "budgets_file": budgets_file,
        "host": {"system": platform.system(), "machine": platform.machine(), "python": platform.python_version()},
        "passed": all(r.passed for r in reports),
        "targets": [{**dataclasses.asdict(r), "passed": r.passed} for r in reports],
    }
    (directory / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    suites = ElementTree.Element("testsuites", name=f"edgespike check {model_spec}")
    for r in reports:
        suite = ElementTree.SubElement(
            suites, "testsuite", name=f"edgespike.check.{r.target}", tests=str(len(r.verdicts)),
            failures=str(len(r.failures())), skipped=str(sum(v.passed is None for v in r.verdicts)),
            time=f"{r.export_seconds or 0:.3f}",
        )
        for verdict in r.verdicts:
            case = ElementTree.SubElement(suite, "testcase", classname=f"edgespike.check.{r.target}", name=verdict.budget)
            if verdict.passed is False:
                ElementTree.SubElement(case, "failure", message=describe(verdict))
            elif verdict.passed is None:
                ElementTree.SubElement(case, "skipped", message=describe(verdict))
    ElementTree.indent(suites)
    ElementTree.ElementTree(suites).write(directory / "junit.xml", encoding="utf-8", xml_declaration=True)
    return report
