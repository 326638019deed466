"""README's first command as a newcomer sees it: no toolchain noise, tables whole at 80 columns."""

import logging
import os
import subprocess
import sys
import warnings

# what torch, torchao, coremltools and torch.onnx print when left alone (tried on this machine)
KNOWN_NOISE = ("KernelPreference", "register_constant", "has not been tested with coremltools", "Minimum required version",
               "torchvision is not installed", "Failed to load", "Warning", "TracerWarning", "passes/s", "ops/s")


def test_export_at_80_columns_prints_no_toolchain_warnings_and_no_cut_cells(tmp_path):
    """The Core ML export (README's first command; pulse:tiny to keep it short: the same toolchains and tables)."""
    env = {**os.environ, "COLUMNS": "80", "TERM": "xterm-256color"}
    env.pop("TORCH_LOGS", None)
    result = subprocess.run(
        [sys.executable, "-m", "edgespike.cli", "export", "pulse:tiny", "--target", "coreml", "--out", str(tmp_path / "coreml")],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    assert not [noise for noise in KNOWN_NOISE if noise in output], output
    assert [line for line in result.stderr.splitlines() if line.strip()] == [line for line in result.stderr.splitlines()
                                                                               if line.startswith("coreml")], result.stderr
    assert "…" not in output and max(len(line) for line in result.stdout.splitlines()) <= 80, result.stdout
    assert "validation against eager PyTorch" in result.stdout and "interpreter of the Core ML program" in result.stdout
    assert "│ coreml │ pass" in result.stdout


def test_quieting_keeps_edgespikes_own_warnings(monkeypatch):
    from edgespike.cli import QUIET_LOGGERS, _quiet_toolchains

    for name in ("TORCH_LOGS", "TQDM_DISABLE"):
        monkeypatch.delenv(name, raising=False)
    levels = {name: logging.getLogger(name).level for name in QUIET_LOGGERS}
    try:
        with warnings.catch_warnings(record=True) as caught:
            _quiet_toolchains()
            warnings.warn_explicit("ours", UserWarning, "edgespike/exporters/__init__.py", 1, module="edgespike.exporters")
            warnings.warn_explicit("theirs", UserWarning, "coremltools/x.py", 1, module="coremltools.x")
        assert [str(w.message) for w in caught] == ["ours"]
        assert os.environ["TORCH_LOGS"] == "-all"  # torch keeps "torch" at ERROR when it (re)initializes its logs
        assert logging.getLogger("edgespike.exporters").isEnabledFor(logging.WARNING)
        assert not logging.getLogger("torchao").isEnabledFor(logging.WARNING)
        assert not logging.getLogger("torch.onnx._internal.exporter._registration").isEnabledFor(logging.WARNING)
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
