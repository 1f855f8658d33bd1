"""scripts/gpu_check.sh --dry-run and scripts/gpu_check.py run for real on wheels the tests build: the set-up installs
a missing package into a scratch folder and imports it from there, and stops on a missing, doubled, foreign or
oversized wheel or an unmet requirement; the summary reads a real pytest JUnit file and bench rows."""
from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "gpu_check.sh"


def gpu_check_module():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "scripts" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # (dataclasses look their module up there)
    spec.loader.exec_module(module)
    return module


def make_wheel(folder: Path, name: str, version: str, *, tag: str = "py3-none-any", requires: tuple = ()) -> Path:
    """A real, installable wheel holding one module ``name`` (``VERSION`` = version), RECORD hashes included."""
    dist = f"{name}-{version}"
    files = {f"{name}/__init__.py": f"VERSION = {version!r}\n",
             f"{dist}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
                                           + "".join(f"Requires-Dist: {r}\n" for r in requires),
             f"{dist}.dist-info/WHEEL": f"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: {tag}\n"}
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    files[f"{dist}.dist-info/RECORD"] = "\n".join(record + [f"{dist}.dist-info/RECORD,,"]) + "\n"
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / f"{dist}-{tag}.whl"
    with zipfile.ZipFile(out, "w") as z:
        for path, text in files.items():
            z.writestr(path, text)
    return out


@pytest.fixture
def setup_files(tmp_path):
    """A wheel folder with one package this Python lacks (needing PyYAML, which it has) and its manifest."""
    wheels = tmp_path / "whl"
    make_wheel(wheels, "vnl_probe", "1.2", requires=("PyYAML>=5",))
    manifest = tmp_path / "manifest.txt"
    manifest.write_text("# test manifest\nimage: pyyaml torch torchvision decord av iopath fvcore tensorboard tqdm\n"
                        "image: numpy pillow matplotlib\nvnl_probe==1.2 vnl_probe\n")
    return wheels, manifest


def run_script(tmp_path: Path, wheels: Path, manifest: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path / "out"), "GPU_CHECK_WHEELS": str(wheels),
           "GPU_CHECK_MANIFEST": str(manifest), "TMPDIR": str(tmp_path)}
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)


def test_dry_run_installs_the_missing_wheel_and_lists_every_step(tmp_path, setup_files):
    wheels, manifest = setup_files
    result = run_script(tmp_path, wheels, manifest, "--dry-run", "--steps", "bench,train")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    site = next(tmp_path.glob("gpu_check.*/site"))
    assert f"vnl_probe: imports from {site}/vnl_probe/__init__.py" in out
    assert (site / "vnl_probe" / "__init__.py").read_text() == "VERSION = '1.2'\n"
    for command in ("bench nonlocal --device cuda --json", "bench model --device cuda --json", "make-synthetic",
                    "train --cfg configs/Synthetic/I3D_NLN_tiny.yaml DEVICE cuda"):
        assert f"would run: {sys.executable} -m video_nl {command}" in out
    assert "-m pytest" not in out  # --steps left the tests out
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["mode"] == "dry-run" and summary["ok"]
    assert [(s["name"], s["status"]) for s in summary["steps"]] == [
        ("setup", "ok"), ("bench_nonlocal", "dry-run"), ("bench_model", "dry-run"), ("synthetic", "dry-run"),
        ("train", "dry-run")]
    assert [(e["name"], e["status"]) for e in summary["setup"]["entries"]] == [("vnl_probe", "install")]
    assert summary["machine"]["python"] == sys.version.split()[0]
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert len(files) <= 8 and {"summary.json", "gpu_check.log", "artifacts.tar.gz"} <= set(files)
    assert "vnl_probe" in (tmp_path / "out" / "gpu_check.log").read_text()


def test_a_missing_wheel_stops_the_dry_run_with_the_fetch_command(tmp_path, setup_files):
    wheels, manifest = setup_files
    manifest.write_text(manifest.read_text() + "vnl_absent==0.1 vnl_absent\n")
    result = run_script(tmp_path, wheels, manifest, "--dry-run")
    assert result.returncode == 2, result.stdout[-3000:]
    assert "vnl_absent==0.1: no wheel in" in result.stdout and "scripts/fetch_gpu_wheels.sh" in result.stdout
    assert "set-up failed" in result.stdout and "would run" not in result.stdout
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert not summary["ok"] and summary["steps"][-1]["name"] == "setup" and not summary["setup"]["ok"]


@pytest.mark.parametrize("problem", ["two_versions", "foreign", "requirement", "too_big"])
def test_set_up_checks_refuse_what_would_fail_on_the_gpu_machine(tmp_path, setup_files, problem):
    wheels, manifest = setup_files
    if problem == "two_versions":
        make_wheel(wheels, "vnl_probe", "1.1")
        expected = "vnl_probe: 2 wheels"
    elif problem == "foreign":  # a wheel for another interpreter and machine
        (wheels / "vnl_probe-1.2-py3-none-any.whl").unlink()
        make_wheel(wheels, "vnl_probe", "1.2", tag="cp313-cp313-manylinux_2_28_aarch64")
        expected = "does not install on CPython 3.12 manylinux x86_64"
    elif problem == "requirement":
        make_wheel(wheels, "vnl_probe", "1.2", requires=("vnl-nowhere>=1",))
        expected = "vnl_probe needs vnl-nowhere>=1, which is neither on the GPU image's list nor in the wheels"
    else:
        with open(wheels / "vnl_ballast-1.0-py3-none-any.whl", "wb") as f:
            f.truncate(65 * 2**20)  # sparse: no disk used
        expected = "exceed the 64 MiB a device call carries"
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "gpu_check.py"), "check", "--all", "--wheels",
                             str(wheels), "--manifest", str(manifest)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and expected in result.stdout, result.stdout[-3000:]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: the run would not stop")
def test_without_a_gpu_a_real_run_stops_after_the_set_up(tmp_path, setup_files):
    wheels, manifest = setup_files
    result = run_script(tmp_path, wheels, manifest, "--steps", "train")
    assert result.returncode == 2 and "torch sees no CUDA GPU here" in result.stdout
    assert "vnl_probe: imports from" in result.stdout  # the real set-up ran (this Python lacked vnl_probe)


def test_the_manifest_matches_the_pins_and_names_the_packages_video_nl_imports():
    gc = gpu_check_module()
    specs, image = gc.read_manifest(REPO / "scripts" / "gpu_wheels.txt")
    versions = {s.key: s.version for s in specs}
    with open(REPO / "pyproject.toml", "rb") as f:
        project = tomllib.load(f)["project"]
    pins = [r.split("==") for r in project["dependencies"] + project["optional-dependencies"]["test"] if "==" in r]
    for name, version in pins:
        if name not in ("torch", "torchvision"):  # the GPU image's own pair is used
            assert versions[name] == version, name
    assert {"decord", "av", "iopath", "fvcore", "pytorchvideo"} <= versions.keys()
    assert {"torch", "torchvision", "tensorboard"} <= image and not image & versions.keys()


def test_summary_reads_a_real_junit_file_and_picks_the_headline_rows(tmp_path):
    gc = gpu_check_module()
    (tmp_path / "test_sample.py").write_text("import pytest\n\ndef test_ok():\n    pass\n\ndef test_bad():\n"
                                             "    assert 0\n\n@pytest.mark.skip\ndef test_skip():\n    pass\n")
    junit = tmp_path / "out" / "cuda_tests.xml"
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}",
                    str(tmp_path / "test_sample.py")], cwd=tmp_path, capture_output=True)
    counts = gc.junit_counts(junit)
    assert (counts["tests"], counts["passed"], counts["failures"], counts["skipped"]) == (3, 1, 1, 1)
    assert counts["failed"] == ["test_sample::test_bad"]
    rows = [{"bench": "nonlocal", "case": "long_clip", "impl": "fused", "metric": "fwd_bwd_peak_mem", "ours": 1.0,
             "peer": 10.0, "better_by": 10.0},
            {"bench": "nonlocal", "case": "long_clip", "impl": "gc", "metric": "fwd_bwd_peak_mem", "ours": 1.0,
             "peer": 10.0, "better_by": 10.0},
            {"bench": "nonlocal", "case": "res3", "impl": "fused", "metric": "fwd_bwd_time", "ours": 1.0, "peer": 1.0,
             "better_by": 1.0},
            {"bench": "model", "case": "train_step", "impl": "ours_fp32_vs_peer_fp32", "metric": "clips_per_s",
             "ours": 12.0, "peer": 10.0, "better_by": 1.2}]
    (tmp_path / "out" / "bench.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    work = tmp_path / "work"
    work.mkdir()
    (work / "steps.jsonl").write_text(json.dumps({"name": "tests", "status": "ok", "rc": 0, "seconds": 3}) + "\n")
    summary = gc.write_summary(tmp_path / "out", work, mode="run", budget_s=420, elapsed_s=30)
    headline = [(r["impl"], r["metric"], r["met"]) for r in summary["bench_headline"]]
    assert headline == [("fused", "fwd_bwd_peak_mem", True), ("ours_fp32_vs_peer_fp32", "clips_per_s", False)]
    assert summary["ok"] and summary["cuda_tests"]["failures"] == 1
    assert json.loads((tmp_path / "out" / "summary.json").read_text()) == summary
