"""edgespike quantize-report: each weight format against the unquantized model, and bad input."""

import json
import subprocess
import sys

import pytest
import torch

from edgespike import models
from edgespike.quant.report import linear_weight_bytes, quantize_report


def test_formats_are_ordered_by_how_much_they_keep():
    torch.manual_seed(0)
    model = models.create("slms_pulse", "tiny")  # dense weights, as a published checkpoint
    tokens = torch.randint(0, model.config.vocab_size, (96,), generator=torch.Generator().manual_seed(0)).tolist()
    rows = {row["weights"]: row for row in quantize_report(model, tokens)["formats"]}
    assert rows["fp32"]["max_abs_logit_diff"] == 0.0 and rows["fp32"]["top1_agreement"] == 1.0
    # the coarser the grid, the further from the model (spikes amplify even fp16's rounding)
    error = [rows[w]["max_abs_logit_diff"] for w in ("fp16", "int8", "int4", "ternary")]
    agreement = [rows[w]["top1_agreement"] for w in ("fp16", "int8", "int4", "ternary")]
    assert error == sorted(error) and agreement == sorted(agreement, reverse=True)


def test_linear_weight_bytes_per_format():
    from edgespike.nn import TernaryLinear

    model = models.create("pulse", "tiny")
    linears = [m for m in model.modules() if isinstance(m, TernaryLinear)]
    count = sum(m.in_features * m.out_features for m in linears)
    channels = sum(m.out_features for m in linears)
    assert linear_weight_bytes(model, "fp32") == 4 * count and linear_weight_bytes(model, "fp16") == 2 * count
    assert linear_weight_bytes(model, "int8") == count + 4 * channels
    assert linear_weight_bytes(model, "int4") == count // 2 + 4 * channels
    assert linear_weight_bytes(model, "ternary") == count // 4 + 4 * len(linears)


@pytest.mark.parametrize(
    "args,message",
    [
        (["--weights", "int3"], "unknown weight format 'int3'"),
        (["--tokens", "1"], "--tokens must be >= 2"),
        (["--tokens", "500"], "past the model's max_seq_len 128"),
    ],
)
def test_bad_input_is_one_line(args, message):
    result = subprocess.run([sys.executable, "-m", "edgespike.cli", "quantize-report", "slms_pulse:tiny", *args],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_json_report_names_every_format():
    result = subprocess.run([sys.executable, "-m", "edgespike.cli", "quantize-report", "slms_pulse:tiny", "--tokens", "32", "--json"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert [row["weights"] for row in report["formats"]] == ["ternary", "int8", "int4", "fp16", "fp32"]
    assert report["tokens"] == 32 and "random token ids" in report["text"]
