"""`edgespike check`: budgets files (layering, bad input), verdicts, report.json and JUnit XML."""

import json
from xml.etree import ElementTree

import pytest
from typer.testing import CliRunner

from edgespike.check import Budget, Verdict, TargetReport, _verdicts, load_budgets
from edgespike.cli import app
from edgespike.errors import EdgespikeError
from edgespike.exporters import EXPORTERS

TARGETS = tuple(EXPORTERS)


def _budgets(tmp_path, text):
    path = tmp_path / "budgets.toml"
    path.write_text(text)
    return path


def test_layers_package_defaults_then_file_default_then_file_target(tmp_path):
    budgets = load_budgets(_budgets(tmp_path, "[default]\nmin_top1_agreement = 0.95\n[onnx]\nmax_artifact_bytes = 2_000_000\n"), TARGETS)
    assert budgets["onnx"].max_artifact_bytes == 2_000_000 and budgets["coreml"].max_artifact_bytes is None
    # the file's [default] overrides the package's [neuronchip] (0.75), as the user asked
    assert budgets["onnx"].min_top1_agreement == budgets["neuronchip"].min_top1_agreement == 0.95
    packaged = load_budgets(None, TARGETS)
    assert packaged["neuronchip"].greedy_match is False and packaged["onnx"].greedy_match is True


@pytest.mark.parametrize(
    "text,message",
    [
        ("[default]\nmax_artifact_size = 3\n", r"unknown budget 'max_artifact_size'; known budgets: .*max_artifact_bytes"),
        ("[onnx]\nmax_artifact_bytes = \"2MB\"\n", r"\[onnx\] max_artifact_bytes must be a number, got '2MB'"),
        ("[onnx]\nmin_top1_agreement = true\n", r"min_top1_agreement must be a number, got True"),
        ("[default]\ngreedy_match = 1\n", r"greedy_match must be true or false, got 1"),
        ("[default]\nmax_spike_flip_rate = 1.5\n", r"max_spike_flip_rate = 1.5 is out of range \(\[0, 1\]\)"),
        ("[tflite]\nmax_export_seconds = 3\n", r"unknown table \[tflite\]; use \[default\] or one of \[coreml\]"),
        ("[default\n", r"is not valid TOML"),
    ],
)
def test_bad_budgets_file_is_a_one_line_error(tmp_path, text, message):
    with pytest.raises(EdgespikeError, match=message):
        load_budgets(_budgets(tmp_path, text), TARGETS)


def test_missing_budgets_file(tmp_path):
    with pytest.raises(EdgespikeError, match="budgets file .* does not exist"):
        load_budgets(tmp_path / "nope.toml", TARGETS)


def test_verdicts_compare_each_budget_and_skip_what_was_not_measured():
    report = TargetReport("onnx", artifact_bytes=1000, export_seconds=5.0, validation={
        "passed": True, "top1_agreement": 0.98, "max_abs_logit_diff": 1e-5, "greedy_match": False,
        "spike_flip_rate": None, "spike_flip_rate_note": "the model has no LIF neurons",
    })
    budget = Budget(max_artifact_bytes=999, min_top1_agreement=0.98, greedy_match=True, max_spike_flip_rate=0.01,
                    max_export_seconds=10, max_size_vs_fp32=1.0)
    verdicts = {v.budget: v for v in _verdicts(report, budget, parameters=250)}
    assert verdicts["validation"].passed is True
    assert verdicts["max_artifact_bytes"].passed is False and verdicts["max_artifact_bytes"].actual == 1000
    assert verdicts["min_top1_agreement"].passed is True  # the limit itself passes
    assert verdicts["greedy_match"].passed is False
    assert verdicts["max_spike_flip_rate"].passed is None and "no LIF" in verdicts["max_spike_flip_rate"].note
    assert verdicts["max_size_vs_fp32"].actual == 1.0 and verdicts["max_size_vs_fp32"].passed is True
    assert verdicts["max_export_seconds"].passed is True
    failed_export = _verdicts(TargetReport("onnx", error="export to onnx failed while lowering: boom"), budget, 250)
    assert failed_export == [Verdict("export", "succeeds", "failed", False, "export to onnx failed while lowering: boom")]


def test_check_fails_naming_the_budget_then_passes_the_defaults(tmp_path):
    runner = CliRunner()
    violated = _budgets(tmp_path, "[default]\nmin_top1_agreement = 0.99\n[onnx]\nmax_artifact_bytes = 1000\n"
                                  "max_peak_rss_bytes = 1000\n")
    result = runner.invoke(app, ["check", "pulse:tiny", "--targets", "onnx", "--budgets", str(violated),
                                 "--report", str(tmp_path / "failed"), "--jobs", "1"])
    assert result.exit_code == 1, result.output
    assert "FAIL onnx: max_artifact_bytes:" in result.output and "(budget <= 1,000)" in result.output
    suite = ElementTree.parse(tmp_path / "failed" / "junit.xml").getroot().find("testsuite")
    failures = [case.get("name") for case in suite.iter("testcase") if case.find("failure") is not None]
    assert failures == ["max_artifact_bytes", "max_peak_rss_bytes"] and suite.get("failures") == "2"
    report = json.loads((tmp_path / "failed" / "report.json").read_text())
    assert report["passed"] is False and report["targets"][0]["validation"]["passed"] is True
    assert 50e6 < report["targets"][0]["peak_rss_bytes"] < 8e9  # a Python process with torch loaded, in bytes

    result = runner.invoke(app, ["check", "pulse:tiny", "--targets", "onnx", "--report", str(tmp_path / "ok"), "--jobs", "1"])
    assert result.exit_code == 0, result.output
    cases = list(ElementTree.parse(tmp_path / "ok" / "junit.xml").getroot().iter("testcase"))
    assert {c.get("name") for c in cases} >= {"validation", "min_top1_agreement", "greedy_match", "max_size_vs_fp32"}
    assert all(c.find("failure") is None for c in cases)


def test_check_rejects_an_unknown_target(tmp_path):
    result = CliRunner().invoke(app, ["check", "pulse:tiny", "--targets", "onnx,tflite", "--report", str(tmp_path)])
    assert isinstance(result.exception, EdgespikeError) and "unknown target 'tflite'" in str(result.exception)
    assert not (tmp_path / "report.json").exists()
