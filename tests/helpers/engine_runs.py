"""Tiny real datasets and `video-nl` runs for the engine tests (train, resume, torchrun).

Videos are real mp4 files written with PyAV (:func:`helpers.videos.random_video`); the model is a
ResNet-18 at width 4 with one non-local block, 4 frames at 32 px, so a 2-epoch run takes seconds.
"""
from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from .videos import random_video

REPO = Path(__file__).resolve().parents[2]


def make_dataset(root: Path, *, train: int = 8, val: int = 3, test: int = 5, classes: int = 2) -> Path:
    """Write ``{train,val,test}.csv`` lists of 32-px, 16-frame mp4 files (label = index % classes)."""
    root.mkdir(parents=True, exist_ok=True)
    for split, count in (("train", train), ("val", val), ("test", test)):
        lines = []
        for i in range(count):
            path = root / f"{split}_{i}.mp4"
            random_video(path, num_frames=16, size=32, seed=1000 * len(split) + i)
            lines.append(f"{path} {i % classes}")
        (root / f"{split}.csv").write_text("\n".join(lines) + "\n")
    (root / "classnames.json").write_text(json.dumps({f"class_{c}": c for c in range(classes)}))
    (root / "tiny.yaml").write_text(f"MODEL:\n  NUM_CLASSES: {classes}\n")
    return root


def tiny_overrides(data: Path, out: Path, **extra: object) -> list[str]:
    """KEY VALUE overrides for a seconds-long 2-epoch run on :func:`make_dataset`'s data."""
    keys: dict[str, object] = {
        "MODEL.NUM_CLASSES": 2, "MODEL.ARCH": "i3d", "RESNET.DEPTH": 18, "RESNET.WIDTH_PER_GROUP": 4,
        "NONLOCAL.LOCATION": "[[],[1],[],[]]", "DATA.PATH_TO_DATA_DIR": str(data), "DATA.NUM_FRAMES": 4,
        "DATA.SAMPLING_RATE": 2, "DATA.TRAIN_JITTER_SCALES": "[32,40]", "DATA.TRAIN_CROP_SIZE": 32,
        "DATA.TEST_CROP_SIZE": 32,
        "DATA_LOADER.NUM_WORKERS": 0,
        "SOLVER.BASE_LR": 0.05, "SOLVER.MAX_EPOCH": 2, "SOLVER.WARMUP_EPOCHS": 0.5, "TRAIN.BATCH_SIZE": 2,
        "TRAIN.EVAL_PERIOD": 1, "TRAIN.DETERMINISTIC": True, "BN.USE_PRECISE_STATS": True,
        "BN.NUM_BATCHES_PRECISE": 2, "TEST.NUM_ENSEMBLE_VIEWS": 2, "TEST.NUM_SPATIAL_CROPS": 1,
        "TEST.BATCH_SIZE": 2, "LOG_PERIOD": 1, "LOG_MODEL_INFO": False, "OUTPUT_DIR": str(out),
    }
    keys.update(extra)
    return [str(x) for kv in keys.items() for x in kv]


def tiny_args(data: Path, out: Path, **extra: object) -> list[str]:
    """``--cfg data/tiny.yaml`` followed by :func:`tiny_overrides`."""
    return ["--cfg", str(data / "tiny.yaml"), *tiny_overrides(data, out, **extra)]


def env() -> dict[str, str]:
    """Subprocess environment: one intra-op thread (repeatable, and kind to the shared cores); this tree first
    on the import path, so runs from another working directory import the same code."""
    path = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "PYTHONPATH": path}


def video_nl(*args: str, timeout: float = 600, cwd: Path = REPO,
             extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m video_nl ARGS`` (in ``cwd``) to completion, capturing output (``extra_env`` added to
    :func:`env`)."""
    return subprocess.run([sys.executable, "-m", "video_nl", *args], cwd=cwd, env={**env(), **(extra_env or {})},
                          capture_output=True, text=True, timeout=timeout)


TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]


def torchrun(nproc: int, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``torchrun --standalone --nproc_per_node N -m video_nl ARGS`` to completion."""
    cmd = [*TORCHRUN, "--standalone", f"--nproc_per_node={nproc}", "-m", "video_nl", *args]
    return subprocess.run(cmd, cwd=REPO, env=env(), capture_output=True, text=True, timeout=timeout)


def free_port() -> int:
    """A TCP port of 127.0.0.1 that is free now. Drawn at random below the kernel's ephemeral range (where the
    OS puts outgoing connections and every ``bind(0)``, e.g. a parallel torchrun --standalone), so nothing
    else is likely to take it before the launcher binds it."""
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        ephemeral_low = int(f.read().split()[0])
    draw = random.SystemRandom()
    for _ in range(100):
        port = draw.randrange(10000, ephemeral_low) if ephemeral_low > 11000 else 0
        with socket.socket() as s, contextlib.suppress(OSError):
            s.bind(("127.0.0.1", port))
            return s.getsockname()[1]
    raise RuntimeError("no free TCP port found on 127.0.0.1")


def run_nodes(cmds: list[list[str]], *, logs: Path, cwds: list[Path] | None = None,
              extra_env: dict[str, str] | None = None, timeout: float = 600) -> list[subprocess.CompletedProcess]:
    """Run each command as one "node" of a job on this machine (``cwds``: each in its own working directory)
    and wait for all. Output goes to files under ``logs`` (pipes could fill and stall one node while another
    waits for it); on timeout every node's process group is killed."""
    logs.mkdir(parents=True, exist_ok=True)
    procs, files = [], []
    try:
        for node, cmd in enumerate(cmds):
            out, err = open(logs / f"node{node}.out", "w"), open(logs / f"node{node}.err", "w")
            files += [out, err]
            procs.append(subprocess.Popen(cmd, cwd=cwds[node] if cwds else REPO, env={**env(), **(extra_env or {})},
                                          stdout=out, stderr=err, start_new_session=True))
        for proc in procs:
            proc.wait(timeout=timeout)
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        for f in files:
            f.close()
    return [subprocess.CompletedProcess(p.args, p.returncode, (logs / f"node{n}.out").read_text(),
                                        (logs / f"node{n}.err").read_text()) for n, p in enumerate(procs)]


def torchrun_static_nodes(*args: str, logs: Path, cwds: list[Path],
                          timeout: float = 600) -> list[subprocess.CompletedProcess]:
    """``-m video_nl ARGS`` as one single-process torchrun launcher per entry of ``cwds`` ("nodes"), static
    rendezvous on 127.0.0.1 (``--node-rank`` n: the launcher in ``cwds[0]`` runs rank 0). Each node runs in its
    own folder, so a relative OUTPUT_DIR names a different folder on each, as on machines without a shared
    filesystem."""
    port, nnodes = free_port(), len(cwds)
    cmds = [[*TORCHRUN, f"--nnodes={nnodes}", "--nproc-per-node=1", "--local-addr=127.0.0.1", "--rdzv-backend=static",
             f"--node-rank={n}", "--master-addr=127.0.0.1", f"--master-port={port}", "-m", "video_nl", *args]
            for n in range(nnodes)]
    return run_nodes(cmds, logs=logs, cwds=cwds, timeout=timeout)


def linked_venv(root: Path) -> Path:
    """A ``VENV`` for scripts/_env.sh that is this interpreter's environment: ``bin/python`` and
    ``bin/torchrun`` link to it and a fresh install stamp tells _env.sh there is nothing to install."""
    bin_dir = root / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name in ("python", "torchrun"):
        (bin_dir / name).symlink_to(Path(sys.executable).parent / name)
    (root / ".video_nl_installed").touch()
    return root


def script_nodes(script: str, config: Path, *overrides: str, logs: Path, launch: dict[str, str], nnodes: int = 2,
                 timeout: float = 600) -> list[subprocess.CompletedProcess]:
    """``scripts/SCRIPT CONFIG KEY VALUE ...`` run ``nnodes`` times as the nodes of one job, as the script's
    header says (``NNODES``, ``NODE_RANK``, ``MASTER_ADDR``/``MASTER_PORT`` on 127.0.0.1, one GPU-less process
    per node, plus ``launch``), in this interpreter's environment (:func:`linked_venv`)."""
    venv = linked_venv(logs / "venv")
    common = {"NNODES": str(nnodes), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "GPUS": "1",
              "VENV": str(venv), **launch}
    cmds = [["env", f"NODE_RANK={n}", "bash", str(REPO / "scripts" / script), str(config), *overrides]
            for n in range(nnodes)]
    return run_nodes(cmds, logs=logs, extra_env=common, timeout=timeout)


def rank_pids(launcher_pid: int) -> dict[int, int]:
    """RANK -> pid of the worker processes a torchrun launcher started (from /proc)."""
    found = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                environ = dict(kv.split(b"=", 1) for kv in f.read().split(b"\0") if b"=" in kv)
            with open(f"/proc/{pid}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if b"RANK" in environ and b"LOCAL_RANK" in environ and ppid == launcher_pid:
            found[int(environ[b"RANK"])] = int(pid)
    return found


def gone(pid: int) -> bool:
    """True once ``pid`` has exited (no longer in /proc, or a zombie waiting for its parent)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def read_log(out: Path) -> list[dict]:
    """The json_stats records of ``out/log.jsonl``."""
    path = out / "log.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def kill_when_written(path: Path, *args: str, timeout: float = 300) -> None:
    """Start ``python -m video_nl ARGS``, SIGKILL it as soon as ``path`` exists (files appear by atomic rename,
    so polling every 2 ms lands the kill right after that write), and wait for it."""
    proc = subprocess.Popen([sys.executable, "-m", "video_nl", *args], cwd=REPO, env=env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + timeout
        while not path.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
