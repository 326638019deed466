"""What `pip install edgespike` gives a user (the GitHub Action installs it so): the wheel carries its data
files, and installed into a fresh venv it exports the bundled demo."""

import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("edgespike", "exporters", "runtimes", "pyproject.toml", "README.md")
DATA = {"edgespike/zoo/demo/" + name for name in ("config.json", "model.safetensors", "tokenizer.json", "TRAINING.md")} | {
    "edgespike/budgets.toml", "edgespike/chips/loihi.toml", "edgespike/chips/truenorth.toml",
    "edgespike/profile/targets/cmos45.toml", "edgespike/profile/targets/ane-a17pro.toml",
}


def test_the_wheel_carries_the_demo_and_runs_export_from_a_fresh_venv(tmp_path):
    source = tmp_path / "source"  # a copy: building in place would write build/ into the checkout
    for name in SOURCES:
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy2
        copy(ROOT / name, source / name, **({"ignore": shutil.ignore_patterns("__pycache__")} if copy is shutil.copytree else {}))
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path / "wheels")], check=True, timeout=120)
    (wheel,) = (tmp_path / "wheels").glob("edgespike-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert DATA <= names, sorted(DATA - names)
    assert {"edgespike/exporters/onnx.py", "edgespike/runtimes/coreml/__init__.py"} <= names

    # a fresh venv that reuses this one's installed dependencies (torch and the toolchains; nothing is
    # downloaded) by a path entry, which does not run this venv's .pth files: its editable edgespike stays out
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    site = Path(sysconfig.get_path("purelib", vars={"base": str(venv)}))
    (site / "deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "--no-deps",
                    "--no-index", "-q", str(wheel)], check=True, timeout=120)
    where = subprocess.run([venv / "bin" / "python", "-c", "import edgespike; print(edgespike.__file__)"], cwd=tmp_path,
                           capture_output=True, text=True, check=True)
    assert where.stdout.startswith(str(site)), where.stdout
    result = subprocess.run([venv / "bin" / "edgespike", "export", "--target", "onnx", "--out", str(tmp_path / "onnx")],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "│ onnx   │ pass" in result.stdout and (tmp_path / "onnx" / "manifest.json").is_file()


def test_the_action_installs_edgespike_from_its_own_source_and_the_workflow_uses_it():
    import yaml

    action = yaml.safe_load((ROOT / "action.yml").read_text())
    assert {"model", "targets", "budgets", "edgespike"} <= set(action["inputs"]) and "report" in action["outputs"]
    scripts = "\n".join(step.get("run", "") for step in action["runs"]["steps"])
    assert '"${REQUIREMENT:-$GITHUB_ACTION_PATH[export]}"' in scripts  # not the user's checkout (`pip install -e .`)
    assert "-e ." not in scripts and "edgespike-venv/bin/edgespike\" check \"$MODEL\" --targets \"$TARGETS\"" in scripts
    for step in action["runs"]["steps"]:  # inputs reach the shell as environment variables, never spliced into it
        assert "${{" not in step.get("run", "")
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "edgespike-check.yml").read_text())
    for job in workflow["jobs"].values():
        (check,) = [step for step in job["steps"] if step.get("uses") == "./"]
        assert check["with"]["model"] == "${{ env.MODEL }}"
        assert not any("pip install" in step.get("run", "") for step in job["steps"])
    assert workflow["env"]["MODEL"] == "demo"  # this repository's job checks the bundled demo through the action
