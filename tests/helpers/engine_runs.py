"""Tiny real datasets and `video-nl` runs for the engine tests (train, resume, torchrun).

Videos are real mp4 files written with PyAV (:func:`helpers.videos.random_video`); the model is a
ResNet-18 at width 4 with one non-local block, 4 frames at 32 px, so a 2-epoch run takes seconds.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
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
    """Subprocess environment: one intra-op thread (repeatable, and kind to the shared cores)."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def video_nl(*args: str, timeout: float = 600, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m video_nl ARGS`` to completion, capturing output (``extra_env`` added to :func:`env`)."""
    return subprocess.run([sys.executable, "-m", "video_nl", *args], cwd=REPO, env={**env(), **(extra_env or {})},
                          capture_output=True, text=True, timeout=timeout)


def torchrun(nproc: int, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``torchrun --standalone --nproc_per_node N -m video_nl ARGS`` to completion."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "video_nl", *args]
    return subprocess.run(cmd, cwd=REPO, env=env(), capture_output=True, text=True, timeout=timeout)


def read_log(out: Path) -> list[dict]:
    """The json_stats records of ``out/log.jsonl``."""
    path = out / "log.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
