"""Shared helpers of the fault-injection suite: real subprocesses with timeouts, in-process CLI runs,
tiny configs, data lists of good and bad videos, checkpoint and memory probes.

Everything here runs the real thing: ``python -m video_nl`` in a child process (killed with its whole
process group on timeout, so nothing hangs CI), or ``video_nl.cli.main`` in-process for the fast fuzz.
"""
from __future__ import annotations

import contextlib
import glob
import importlib
import io
import json
import os
import signal
import subprocess
import sys
import time
import traceback

import pytest
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)  # `import badvideos`
REPO = os.path.dirname(os.path.dirname(HERE))
PYTHON = sys.executable

# The smallest model that exercises the real code: R18, width 4, 4 frames at 32 px, no non-local blocks.
TINY = {
    "RNG_SEED": 0,
    "DEVICE": "cpu",
    "LOG_PERIOD": 1,
    "LOG_MODEL_INFO": False,
    "MODEL": {"ARCH": "c2d", "NUM_CLASSES": 2, "DROPOUT_RATE": 0.0},
    "RESNET": {"DEPTH": 18, "WIDTH_PER_GROUP": 4},
    "BN": {"USE_PRECISE_STATS": False},
    "DATA": {"NUM_FRAMES": 4, "SAMPLING_RATE": 2, "TRAIN_JITTER_SCALES": [32, 40], "TRAIN_CROP_SIZE": 32,
             "TEST_CROP_SIZE": 32, "DECODE_TIMEOUT_S": 10.0, "MAX_FAILURE_RATIO": 0.9},
    "DATA_LOADER": {"NUM_WORKERS": 0, "PERSISTENT_WORKERS": False, "PIN_MEMORY": False},
    "SOLVER": {"BASE_LR": 0.01, "LR_POLICY": "cosine", "MAX_EPOCH": 2, "WARMUP_EPOCHS": 0.0},
    "TRAIN": {"BATCH_SIZE": 2, "EVAL_PERIOD": 0, "CHECKPOINT_PERIOD": 1, "AUTO_RESUME": True,
              "DETERMINISTIC": True},
    "TEST": {"ENABLE": False, "BATCH_SIZE": 2, "NUM_ENSEMBLE_VIEWS": 2, "NUM_SPATIAL_CROPS": 1},
    "TENSORBOARD": {"ENABLE": False},
}


def deep_update(base: dict, extra: dict) -> dict:
    """A copy of ``base`` with the nested mapping ``extra`` merged in."""
    out = json.loads(json.dumps(base))
    for k, v in extra.items():
        out[k] = deep_update(out.get(k, {}), v) if isinstance(v, dict) else v
    return out


def write_cfg(path, extra: dict | None = None) -> str:
    """Write :data:`TINY` (updated with ``extra``) as YAML; return the path."""
    path = os.fspath(path)
    with open(path, "w") as f:
        yaml.safe_dump(deep_update(TINY, extra or {}), f, sort_keys=False)
    return path


def require(module: str) -> None:
    """Skip (naming the module) while a colleague's module has not landed yet."""
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name and module.startswith(e.name):
            pytest.skip(f"{module} has not landed yet")
        raise


# ------------------------------------------------------------------ running the CLI
class Result:
    """What a CLI run gave: exit code, stdout, stderr and wall time."""

    def __init__(self, code: int, out: str, err: str, seconds: float, argv):
        self.code, self.out, self.err, self.seconds, self.argv = code, out, err, seconds, argv

    def __repr__(self) -> str:
        return (f"<exit {self.code} after {self.seconds:.1f}s: video-nl {' '.join(map(str, self.argv))}\n"
                f"--- stdout (tail)\n{self.out[-3000:]}\n--- stderr (tail)\n{self.err[-3000:]}>")


def cli_inprocess(argv) -> Result:
    """``video_nl.cli.main(argv)`` in this process, capturing stdout/stderr; an uncaught exception (what a
    user would see as a traceback) fails the test with that traceback."""
    from video_nl import cli

    out, err = io.StringIO(), io.StringIO()
    t0 = time.time()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            cli.main([str(a) for a in argv])
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except BaseException:  # noqa: BLE001 - this is the failure we look for
            tb = traceback.format_exc()
            pytest.fail(f"video-nl {' '.join(map(str, argv))} raised instead of a one-paragraph error:\n{tb}")
    return Result(code, out.getvalue(), err.getvalue(), time.time() - t0, argv)


def child_env(**extra) -> dict:
    env = dict(os.environ)
    env.update({"PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                "PYTHONFAULTHANDLER": "1", "TQDM_DISABLE": "1"})
    env.update({k: str(v) for k, v in extra.items()})
    return env


def _kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(Exception):
        proc.wait(timeout=10)


def run_cli(argv, *, timeout: float, env: dict | None = None, module: bool = True, preexec_fn=None,
            cwd: str | None = None) -> Result:
    """Run ``python -m video_nl ARGV`` (or ``ARGV`` itself with ``module=False``) in a new process group;
    on timeout kill the group and fail the test naming the command and its output so far."""
    cmd = [PYTHON, "-m", "video_nl", *map(str, argv)] if module else list(map(str, argv))
    t0 = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env or child_env(),
                            cwd=cwd or REPO, start_new_session=True, preexec_fn=preexec_fn)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        out, err = proc.communicate()
        pytest.fail(f"HANG: `{' '.join(cmd)}` did not finish within {timeout:.0f}s (killed).\n"
                    f"--- stdout tail\n{out[-3000:]}\n--- stderr tail\n{err[-3000:]}")
    return Result(proc.returncode, out, err, time.time() - t0, cmd[3:] if module else cmd)


def spawn_cli(argv, *, env: dict | None = None, log_path: str | None = None) -> subprocess.Popen:
    """Start ``python -m video_nl ARGV`` in a new process group (for kill -9 tests); output goes to ``log_path``."""
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL
    try:
        return subprocess.Popen([PYTHON, "-m", "video_nl", *map(str, argv)], stdout=out, stderr=subprocess.STDOUT,
                                env=env or child_env(), cwd=REPO, start_new_session=True)
    finally:
        if log_path:
            out.close()


def kill9(proc: subprocess.Popen) -> None:
    """SIGKILL the process and its whole group (DataLoader workers, decode servers) and reap it."""
    _kill_group(proc)


def assert_user_error(res: Result, *mentions: str, command: str | None = None) -> None:
    """Non-zero exit, no traceback, a short one-paragraph message that names each of ``mentions``."""
    err = res.err.strip()
    assert res.code not in (0, None), f"expected a non-zero exit, got {res!r}"
    assert "Traceback" not in res.err and "Traceback" not in res.out, f"traceback instead of a message: {res!r}"
    assert err, f"no error message on stderr: {res!r}"
    assert "\n\n" not in err, f"error is not one paragraph: {res!r}"
    assert len(err) < 4000, f"error message is {len(err)} chars, not one paragraph: {res!r}"
    if command:
        assert f"video-nl {command}: error:" in err, f"message lacks the 'video-nl {command}: error:' prefix: {res!r}"
    for m in mentions:
        assert m.lower() in err.lower(), f"message does not mention {m!r}: {res!r}"


# ------------------------------------------------------------------ files and numbers
def checkpoints(output_dir) -> list[str]:
    """Final checkpoint files (not temp files), oldest first."""
    return sorted(glob.glob(os.path.join(os.fspath(output_dir), "checkpoints", "checkpoint_epoch_*.pyth")))


def temp_files(output_dir) -> list[str]:
    """Temporary files an interrupted atomic write could leave in the checkpoint folder."""
    folder = os.path.join(os.fspath(output_dir), "checkpoints")
    return [p for p in glob.glob(os.path.join(folder, ".*")) + glob.glob(os.path.join(folder, "*.tmp"))]


def read_jsonl(path) -> list[dict]:
    """Every JSON line of ``path`` (lines that do not parse are skipped: a killed run may tear its last line)."""
    rows = []
    if not os.path.exists(path):
        return rows
    with open(path) as f:
        for line in f:
            with contextlib.suppress(ValueError):
                rows.append(json.loads(line))
    return rows


def model_state(path) -> dict:
    from video_nl.utils.io import safe_torch_load

    return safe_torch_load(path)["model_state"]


def assert_same_tensors(a: dict, b: dict, what: str = "model_state") -> None:
    import torch

    assert sorted(a) == sorted(b), f"{what}: different keys {set(a) ^ set(b)}"
    diff = [k for k in a if not (torch.is_tensor(a[k]) and torch.equal(a[k], b[k]))]
    assert not diff, f"{what}: {len(diff)} tensors differ from the uninterrupted run, e.g. {diff[:5]}"


def vmrss_kib() -> int:
    """Resident set size of this process from /proc/self/status (kB)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


@pytest.fixture
def tiny_cfg(tmp_path):
    """``tiny_cfg(extra=None, name='cfg.yaml') -> path`` of a tiny YAML config under tmp_path."""
    return lambda extra=None, name="cfg.yaml": write_cfg(tmp_path / name, extra)


# ------------------------------------------------------------------ data
def make_dataset(folder, *, num_good: int = 4, bad_kinds: tuple[str, ...] = (), seed: int = 0,
                 splits: tuple[str, ...] = ("train", "val", "test")) -> dict:
    """Good tiny videos (2 classes) plus one file per bad kind, the same mixed list written as each split's
    csv. Returns ``{"dir", "good": [(path, label)], "bad": {kind: (path, label)}, "cfg": DATA overrides}``."""
    import badvideos

    folder = os.fspath(folder)
    col = badvideos.make_collection(folder, tuple(bad_kinds), num_good=num_good, seed=seed)
    entries = col["good"] + list(col["bad"].values())
    for split in splits:
        badvideos.write_list(os.path.join(folder, f"{split}.csv"), entries)
    col["dir"] = folder
    col["cfg"] = {"DATA": {"PATH_TO_DATA_DIR": folder}}
    return col


@pytest.fixture(scope="session")
def good_data(tmp_path_factory):
    """Four good 16-frame videos in train/val/test lists (shared read-only by the whole session)."""
    return make_dataset(tmp_path_factory.mktemp("good_data"))
