#!/usr/bin/env python3
"""Helpers of the GPU check (``scripts/gpu_check.sh``): the wheels a lent GPU machine needs, carried in ``.whl/``,
the machine's description and the run's ``summary.json``.

The lent machine runs CPython 3.12 with torch, torchvision and tensorboard but has no network; the packages of
``scripts/gpu_wheels.txt`` travel as wheels in a git-ignored folder named in the run's ``carry``, at most 64 MiB
together with the working tree. torch is never installed or touched.

Commands (``python3 scripts/gpu_check.py COMMAND --help``):

* ``fetch``   — here, with network to PyPI: download the missing wheels (binary wheels for CPython 3.12
  manylinux x86_64 where PyPI has them, else a pure-Python wheel built from the sdist); stale versions go.
* ``check``   — the plan without installing: packages present, wheels to install, problems.
* ``install`` — check, then ``pip install --no-index --no-deps --target DIR`` the wheels needed and import each
  package from DIR.
* ``env``     — JSON: Python, torch, CUDA, GPU name, memory and driver (``--json-out FILE``).
* ``summary`` — ``OUT/summary.json`` from the step records, the test report, the bench rows and the train run.

``--all`` (the dry run on a machine without a GPU): every manifest package counts as missing (the GPU image lacks
them all), wheel tags are judged for the GPU machine's interpreter (CPython 3.12, manylinux x86_64) rather than
this one, and ``install --all`` imports those this interpreter can load too. Problems are listed together and
exit with status 2.
"""
from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

try:
    from packaging import tags as ptags
    from packaging.markers import default_environment
    from packaging.requirements import Requirement
    from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
    from packaging.version import Version
except ImportError:  # pip vendors packaging: always there where pip is
    from pip._vendor.packaging import tags as ptags
    from pip._vendor.packaging.markers import default_environment
    from pip._vendor.packaging.requirements import Requirement
    from pip._vendor.packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
    from pip._vendor.packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ROOT / "scripts" / "gpu_wheels.txt"
WHEELS = ROOT / ".whl"
MIB = 2**20
CARRY_LIMIT_MIB = 64  # the working tree plus carried paths, per device call
MIN_PYTHON = (3, 10)  # pyproject.toml requires-python
DEVICE_PYTHON = (3, 12)
# glibc of the GPU image (Ubuntu 24.04: 2.39) and below; pip download matches each manylinux_2_N exactly.
DEVICE_PLATFORMS = ([f"manylinux_2_{n}_x86_64" for n in range(39, 4, -1)]
                    + ["manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"])


@dataclass(frozen=True)
class Spec:
    """One manifest line: distribution name, exact version, import name."""

    name: str
    version: str
    module: str

    @property
    def key(self) -> str:
        """The canonical distribution name (``PyYAML`` → ``pyyaml``, ``scikit_video`` → ``scikit-video``)."""
        return canonicalize_name(self.name)


@dataclass
class Entry:
    """What the set-up does with one package: ``present`` (installed here), ``install`` (a wheel), or ``problem``."""

    name: str
    version: str
    module: str
    status: str
    installed: str | None = None
    wheel: str | None = None
    wheel_mib: float = 0.0
    loads_here: bool = True
    note: str = ""


@dataclass
class Plan:
    """The set-up plan and everything that stops it."""

    wheel_dir: Path
    for_python: str
    entries: list[Entry] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    tree_mib: float | None = None
    wheels_mib: float = 0.0

    @property
    def to_install(self) -> list[Entry]:
        return [e for e in self.entries if e.status == "install"]


def read_manifest(path: Path) -> tuple[list[Spec], set[str]]:
    """``NAME==VERSION IMPORT_NAME`` lines and the names of ``image: NAME ...`` lines (``#`` comments skipped)."""
    specs, image = [], set()
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if line.startswith("image:"):
            image |= {canonicalize_name(name) for name in line[len("image:"):].split()}
            continue
        if not line:
            continue
        m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)\s+([A-Za-z_][A-Za-z0-9_.]*)", line)
        if not m:
            raise SystemExit(f"{path}:{n}: expected 'NAME==VERSION IMPORT_NAME' or 'image: NAME ...', got {line!r}")
        specs.append(Spec(*m.groups()))
    return specs, image


def project_requirements(root: Path) -> list[Requirement]:
    """video_nl's run-time requirements (``[project].dependencies`` of pyproject.toml; none before Python 3.11).

    Only their names are judged: the GPU image's torch and torchvision are used as they are, whatever the pins."""
    try:
        import tomllib
    except ImportError:
        return []
    with open(root / "pyproject.toml", "rb") as f:
        return [Requirement(r) for r in tomllib.load(f)["project"]["dependencies"]]


def wheels_in(folder: Path) -> dict[str, list[Path]]:
    """Wheel files of ``folder`` by canonical distribution name (other files are ignored)."""
    found: dict[str, list[Path]] = {}
    for path in sorted(folder.glob("*.whl")) if folder.is_dir() else []:
        try:
            name = parse_wheel_filename(path.name)[0]
        except InvalidWheelFilename:
            continue
        found.setdefault(canonicalize_name(name), []).append(path)
    return found


def installed_version(name: str) -> str | None:
    """The installed version of distribution ``name`` visible to this interpreter, or None."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def device_tags() -> set:
    """Wheel tags the GPU machine's CPython 3.12 on manylinux x86_64 accepts."""
    interp = f"cp{DEVICE_PYTHON[0]}{DEVICE_PYTHON[1]}"
    return set(ptags.cpython_tags(DEVICE_PYTHON, abis=[interp], platforms=DEVICE_PLATFORMS)) | \
        set(ptags.compatible_tags(DEVICE_PYTHON, interpreter=interp, platforms=DEVICE_PLATFORMS))


def wheel_fits(path: Path, accepted: set) -> bool:
    """Whether any tag of the wheel file is in ``accepted``."""
    return bool(parse_wheel_filename(path.name)[3] & accepted)


def tree_bytes(root: Path) -> int | None:
    """Bytes of what a device call sends of the checkout (tracked + untracked-not-ignored files); None without git."""
    try:
        out = subprocess.run(["git", "-C", str(root), "ls-files", "-co", "--exclude-standard", "-z"],
                             capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return sum((root / p).stat().st_size for p in out.decode().split("\0") if p and (root / p).is_file())


def requirements_of(wheel: Path) -> list[Requirement]:
    """The wheel's ``Requires-Dist`` entries (from its METADATA)."""
    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        text = z.read(meta).decode("utf-8", "replace")
    return [Requirement(line.split(":", 1)[1].strip()) for line in text.splitlines()
            if line.startswith("Requires-Dist:")]


def dependency_problems(plan: Plan, wheel_dir: Path, *, marker_env: dict, image: set[str] | None,
                        root: Path | None) -> list[str]:
    """Requirements of video_nl and of the wheels to install that nothing meets: not another of those wheels,
    nor (``image`` None) an installed package of a fitting version, nor (``image`` given) a name on that list."""
    provided = {canonicalize_name(e.name): e.version for e in plan.to_install}
    reported = {canonicalize_name(e.name) for e in plan.entries if e.status == "problem"}
    needs = [("video_nl", req) for req in (project_requirements(root) if root is not None else [])]
    needs += [(e.name, req) for e in plan.to_install for req in requirements_of(wheel_dir / e.wheel)]
    problems = []
    for who, req in needs:
        if req.marker is not None and not req.marker.evaluate({**marker_env, "extra": ""}):
            continue
        key = canonicalize_name(req.name)
        if key in reported:
            continue
        version = provided.get(key) or (None if image is not None else installed_version(req.name))
        if version is None and image is not None and key in image:
            continue  # on the GPU image: its version is the image's
        if version is None:
            where = "on the GPU image's list" if image is not None else "installed"
            problems.append(f"{who} needs {req}, which is neither {where} nor in the wheels: add it to "
                            f"scripts/gpu_wheels.txt")
        elif req.specifier and who != "video_nl" and not req.specifier.contains(Version(version), prereleases=True):
            problems.append(f"{who} needs {req}, but version {version} is what there is")
    return problems


def judge_wheel(spec: Spec, entry: Entry, candidates: list[Path], *, accepted: set, plan: Plan) -> None:
    """Set ``entry`` from the wheels found for ``spec``: exactly one, of the manifest's version, with a tag in
    ``accepted``; anything else is a problem added to ``plan``."""
    problem = ""
    if not candidates:
        problem = (f"{spec.name}=={spec.version}: no wheel in {plan.wheel_dir} (run `bash scripts/fetch_gpu_wheels.sh` "
                   f"where PyPI can be reached, and carry the folder)")
    elif len(candidates) > 1:
        problem = (f"{spec.name}: {len(candidates)} wheels ({', '.join(p.name for p in candidates)}); keep one (pip "
                   f"refuses two versions of one package in one install)")
    else:
        wheel = candidates[0]
        entry.wheel, entry.wheel_mib = wheel.name, wheel.stat().st_size / MIB
        entry.loads_here = wheel_fits(wheel, set(ptags.sys_tags()))
        if str(parse_wheel_filename(wheel.name)[1]) != spec.version:
            problem = f"{spec.name}: the wheel {wheel.name} is not version {spec.version}"
        elif not wheel_fits(wheel, accepted):
            problem = f"{spec.name}: the wheel {wheel.name} does not install on {plan.for_python}"
    if problem:
        entry.status = "problem"
        plan.problems.append(problem)


def device_marker_environment() -> dict:
    """PEP 508 marker values of the GPU machine's interpreter."""
    return {**default_environment(), "python_version": "3.12", "python_full_version": "3.12.3",
            "sys_platform": "linux", "platform_machine": "x86_64", "implementation_name": "cpython",
            "os_name": "posix", "platform_system": "Linux", "platform_python_implementation": "CPython"}


def make_plan(specs: list[Spec], wheel_dir: Path, *, all_missing: bool, image: set[str] = frozenset(),
              root: Path | None = ROOT) -> Plan:
    """What ``install`` would do (see the module docstring for ``all_missing``)."""
    plan = Plan(wheel_dir=wheel_dir, for_python="CPython 3.12 manylinux x86_64 (the GPU machine)" if all_missing
                else f"this Python {sys.version.split()[0]}")
    accepted = device_tags() if all_missing else set(ptags.sys_tags())
    found = wheels_in(wheel_dir)
    for spec in specs:
        entry = Entry(spec.name, spec.version, spec.module, "install", installed=installed_version(spec.name))
        plan.entries.append(entry)
        if entry.installed and not all_missing:
            entry.status = "present"
        else:
            judge_wheel(spec, entry, found.get(spec.key, []), accepted=accepted, plan=plan)
    plan.wheels_mib = sum(p.stat().st_size for paths in found.values() for p in paths) / MIB
    tree = tree_bytes(root) if root is not None else None
    plan.tree_mib = None if tree is None else tree / MIB
    if plan.wheels_mib + (plan.tree_mib or 0.0) > CARRY_LIMIT_MIB:
        plan.problems.append(f"the wheels ({plan.wheels_mib:.1f} MiB) and the working tree "
                             f"({plan.tree_mib or 0:.1f} MiB) exceed the {CARRY_LIMIT_MIB} MiB a device call carries")
    marker_env = device_marker_environment() if all_missing else default_environment()
    plan.problems += dependency_problems(plan, wheel_dir, marker_env=marker_env,
                                         image=set(image) if all_missing else None, root=root)
    return plan


def print_plan(plan: Plan, wheel_dir: Path) -> None:
    """A human-readable table of the plan and its problems."""
    tree = "unknown (no git)" if plan.tree_mib is None else f"{plan.tree_mib:.1f} MiB"
    print(f"[gpu_check] Python {sys.version.split()[0]} at {sys.executable}; wheels judged for {plan.for_python}")
    print(f"[gpu_check] carry: {wheel_dir} {plan.wheels_mib:.1f} MiB + working tree {tree} "
          f"(limit {CARRY_LIMIT_MIB} MiB)")
    for e in plan.entries:
        where = f"{e.wheel} ({e.wheel_mib:.1f} MiB)" if e.wheel else ""
        have = f"installed {e.installed}" if e.installed else "not installed"
        print(f"  {e.name:<14} {e.version:<22} {e.status:<8} {have:<26} {where}")
    for p in plan.problems:
        print(f"[gpu_check] problem: {p}")


def pip_install(wheels: list[Path], target: Path) -> None:
    """``pip install --no-index --no-deps --target``: nothing else is fetched, touched or upgraded."""
    target.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
           "--no-cache-dir", "--upgrade", "--disable-pip-version-check", "--target", str(target), *map(str, wheels)]
    print("[gpu_check] " + " ".join(cmd[:12]) + f" ... ({len(wheels)} wheels)", flush=True)
    subprocess.run(cmd, check=True)


def import_from(target: Path, modules: list[str]) -> dict[str, str]:
    """Import ``modules`` in a fresh interpreter with ``target`` first on the path; module → file it came from."""
    code = ("import importlib, json, sys\n"
            f"print(json.dumps({{m: importlib.import_module(m).__file__ for m in {modules!r}}}))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"[gpu_check] importing {modules} from {target} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def install(plan: Plan, wheel_dir: Path, target: Path) -> dict[str, str]:
    """Install the plan's wheels into ``target`` and import every package that loads on this interpreter."""
    todo = plan.to_install
    if todo:
        pip_install([wheel_dir / e.wheel for e in todo], target)
    loadable = [e.module for e in todo if e.loads_here]
    files = import_from(target, loadable) if loadable else {}
    outside = {m: f for m, f in files.items() if not str(Path(f).resolve()).startswith(str(target.resolve()))}
    if outside:
        raise SystemExit(f"[gpu_check] these were imported from outside {target}: {outside}")
    for e in todo:
        print(f"[gpu_check] {e.module}: " + (f"imports from {files[e.module]}" if e.loads_here else
                                            "installed, not imported (its wheel is for Python 3.12 only)"))
    return files


def fetch(specs: list[Spec], wheel_dir: Path) -> None:
    """Download (binary, for the GPU machine) or build (pure Python, from the sdist) each missing wheel."""
    wheel_dir.mkdir(parents=True, exist_ok=True)
    for spec in specs:
        have = wheels_in(wheel_dir).get(spec.key, [])
        if any(str(parse_wheel_filename(p.name)[1]) == spec.version for p in have):
            for stale in (p for p in have if str(parse_wheel_filename(p.name)[1]) != spec.version):
                stale.unlink()
            continue
        for stale in have:
            stale.unlink()
        platforms = [arg for p in DEVICE_PLATFORMS for arg in ("--platform", p)]
        download = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                    "--python-version", "3.12", "--implementation", "cp", *platforms, "-d", str(wheel_dir),
                    f"{spec.name}=={spec.version}"]
        print(f"[gpu_check] fetching {spec.name}=={spec.version}", flush=True)
        if subprocess.run(download, capture_output=True, text=True).returncode == 0:
            continue
        with tempfile.TemporaryDirectory() as tmp:  # sdist only: build here, keep it only if pure Python
            subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", tmp,
                            f"{spec.name}=={spec.version}"], check=True)
            built = next(Path(tmp).glob("*.whl"))
            if not built.name.endswith("-none-any.whl"):
                raise SystemExit(f"[gpu_check] {spec.name}=={spec.version} has no wheel for CPython 3.12 manylinux "
                                 f"x86_64 and building it gave a binary wheel ({built.name}) for this machine only")
            built.rename(wheel_dir / built.name)


def describe_machine() -> dict:
    """Python, torch, CUDA and GPU of this machine (torch imported here only)."""
    import platform

    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__, "cuda_build": torch.version.cuda,
            "cuda_available": torch.cuda.is_available(), "cpu_count": os.cpu_count()}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, gpu_count=torch.cuda.device_count(), gpu_memory_gib=props.total_memory / 2**30,
                    capability=f"{props.major}.{props.minor}", multiprocessors=props.multi_processor_count,
                    bf16=torch.cuda.is_bf16_supported(), cudnn=torch.backends.cudnn.version())
        smi = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True)
        info["driver"] = smi.stdout.strip() if smi.returncode == 0 else None
    return info


def junit_counts(path: Path) -> dict:
    """Totals and failed test ids of a pytest JUnit XML file (empty when it is missing)."""
    import xml.etree.ElementTree as ET

    if not path.is_file():
        return {}
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root)
    counts = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
    counts["failed"] = [f"{c.get('classname')}::{c.get('name')}" for s in suites for c in s.iter("testcase")
                        if c.find("failure") is not None or c.find("error") is not None]
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    return counts


# The figures issue 12 asks for (README/docs targets): NL long clip ≤ 0.5× time, ≤ 0.2× memory; step ≥ 1.25×.
TARGETS = {("nonlocal", "fwd_bwd_time"): 1 / 0.5, ("nonlocal", "fwd_bwd_peak_mem"): 1 / 0.2,
           ("model", "clips_per_s"): 1.25}


def bench_headline(rows: list[dict]) -> list[dict]:
    """The rows the targets judge: long_clip fused fwd+bwd time and memory, and every train-step row."""
    picked = []
    for r in rows:
        nl = r["bench"] == "nonlocal" and r["case"] == "long_clip" and r["impl"].startswith("fused")
        step = r["bench"] == "model" and r["case"] == "train_step"
        if (nl and r["metric"] in ("fwd_bwd_time", "fwd_bwd_peak_mem")) or step:
            target = TARGETS.get((r["bench"], r["metric"]))
            keep = ("ours", "peer", "unit", "ours_setup", "peer_setup", "fraction_of_bf16_gemm",
                    "peer_fraction_of_bf16_gemm")
            picked.append({"bench": r["bench"], "case": r["case"], "impl": r["impl"], "metric": r["metric"],
                           "better_by": r["better_by"], **{k: r[k] for k in keep if k in r},
                           "target_better_by": target, "met": None if target is None else r["better_by"] >= target})
    return picked


def write_summary(out: Path, work: Path, *, mode: str, budget_s: float, elapsed_s: float) -> dict:
    """``out/summary.json``: machine, set-up plan, steps, test counts, bench headline and the train run's test."""
    def load(path: Path):
        return json.loads(path.read_text()) if path.is_file() else None

    steps = [json.loads(line) for line in (work / "steps.jsonl").read_text().splitlines()] \
        if (work / "steps.jsonl").is_file() else []
    rows = [json.loads(line) for line in (out / "bench.jsonl").read_text().splitlines() if line.strip()] \
        if (out / "bench.jsonl").is_file() else []
    train = load(work / "train" / "test" / "summary.json")
    summary = {"mode": mode, "date": datetime.datetime.now().isoformat(timespec="seconds"),
               "budget_s": budget_s, "elapsed_s": elapsed_s, "machine": load(work / "env.json"),
               "setup": load(work / "setup.json"), "steps": steps, "cuda_tests": junit_counts(out / "cuda_tests.xml"),
               "bench_headline": bench_headline(rows), "bench_rows": len(rows),
               "synthetic_test": None if train is None else
               {k: train[k] for k in ("top1", "top5", "mean_class_acc", "views", "num_videos", "num_failed")},
               "ok": bool(steps) and all(s["status"] in ("ok", "dry-run") for s in steps)}
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["fetch", "check", "install", "env", "summary"])
    parser.add_argument("--manifest", type=Path, default=MANIFEST)
    parser.add_argument("--wheels", type=Path, default=WHEELS, help="wheel folder (default .whl/)")
    parser.add_argument("--target", type=Path, help="install: the folder to install into (put it on PYTHONPATH)")
    parser.add_argument("--all", action="store_true", help="dry run: all packages missing, judged for Python 3.12")
    parser.add_argument("--report", type=Path, help="write the plan (env: the machine) as JSON here")
    parser.add_argument("--out", type=Path, help="summary: the output folder (summary.json, bench.jsonl, ...)")
    parser.add_argument("--work", type=Path, help="summary: the scratch folder (steps.jsonl, env.json, train/)")
    parser.add_argument("--mode", default="run", help="summary: run or dry-run")
    parser.add_argument("--budget-s", type=float, default=0.0)
    parser.add_argument("--elapsed-s", type=float, default=0.0)
    args = parser.parse_args(argv)
    if args.command == "env":
        info = describe_machine()
        print(json.dumps(info))
        if args.report:
            args.report.write_text(json.dumps(info, indent=1))
        return 0
    if args.command == "summary":
        summary = write_summary(args.out, args.work, mode=args.mode, budget_s=args.budget_s,
                                elapsed_s=args.elapsed_s)
        print(json.dumps({k: summary[k] for k in ("mode", "ok", "cuda_tests", "synthetic_test")}))
        return 0
    if sys.version_info[:2] < MIN_PYTHON:
        print(f"[gpu_check] problem: Python {sys.version.split()[0]} is older than video_nl's "
              f"{'.'.join(map(str, MIN_PYTHON))}", file=sys.stderr)
        return 2
    specs, image = read_manifest(args.manifest)
    if args.command == "fetch":
        fetch(specs, args.wheels)
    plan = make_plan(specs, args.wheels, all_missing=args.all or args.command == "fetch", image=image)
    print_plan(plan, args.wheels)
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps({**asdict(plan), "ok": not plan.problems}, indent=1, default=str))
    if plan.problems:
        return 2
    if args.command == "install":
        if args.target is None:
            parser.error("install needs --target DIR")
        install(plan, args.wheels, args.target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
