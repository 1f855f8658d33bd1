"""Crash and resume: `kill -9` a real training process at seeded random points — during a step, during
evaluation, during a checkpoint write (when the temporary checkpoint file appears) — several times in a row,
auto-resuming each time; the final weights must equal an uninterrupted run's bitwise (TRAIN.DETERMINISTIC,
CPU). A truncated or corrupted newest checkpoint is skipped with a warning naming it.
"""
from __future__ import annotations

import os
import random
import shutil
import time

import pytest
from conftest import (assert_same_tensors, checkpoints, deep_update, kill9, make_dataset, model_state, read_jsonl,
                      require, run_cli, spawn_cli, temp_files, write_cfg)

SEED = 7
EPOCHS = 3
RUN = {"SOLVER": {"MAX_EPOCH": EPOCHS, "BASE_LR": 0.05}, "TRAIN": {"CHECKPOINT_PERIOD_ITERS": 2, "EVAL_PERIOD": 1,
                                                                   "KEEP_CHECKPOINTS": 0}}
KINDS = ("step", "eval", "checkpoint_write")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    require("video_nl.engine.train")
    return make_dataset(tmp_path_factory.mktemp("crash_data"), num_good=8)


def _cfg(data, folder, out, extra=None) -> str:
    return write_cfg(os.path.join(folder, "cfg.yaml"), deep_update(deep_update(data["cfg"], RUN),
                                                                   {"OUTPUT_DIR": str(out), **(extra or {})}))


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    """The uninterrupted run's final checkpoint."""
    folder = tmp_path_factory.mktemp("reference")
    res = run_cli(["train", "--cfg", _cfg(data, folder, folder / "run")], timeout=400)
    assert res.code == 0, res
    final = checkpoints(folder / "run")[-1]
    assert final.endswith(f"checkpoint_epoch_{EPOCHS:05d}.pyth"), checkpoints(folder / "run")
    return final


def _wait_and_kill(proc, out, kind: str, rng: random.Random, deadline_s: float = 240) -> str:
    """Poll the run's files until the chosen moment, then SIGKILL the process group. Returns what was hit."""
    log = os.path.join(out, "log.jsonl")
    start_iters = sum(r.get("_type") == "train_iter" for r in read_jsonl(log))
    start_epochs = sum(r.get("_type") == "train_epoch" for r in read_jsonl(log))
    target = start_iters + rng.randint(1, 3)
    t0 = time.time()
    hit = "exited"
    while proc.poll() is None and time.time() - t0 < deadline_s:
        if kind == "checkpoint_write":
            if temp_files(out):
                hit = "checkpoint_write"
                break
            time.sleep(0.0005)
            continue
        rows = read_jsonl(log)
        if kind == "step" and sum(r.get("_type") == "train_iter" for r in rows) >= target:
            time.sleep(rng.uniform(0.0, 0.3))  # somewhere inside the next step
            hit = "step"
            break
        if kind == "eval" and sum(r.get("_type") == "train_epoch" for r in rows) > start_epochs:
            hit = "eval"  # the epoch line is written just before precise BN / validation
            break
        time.sleep(0.01)
    else:
        if proc.poll() is None:
            kill9(proc)
            pytest.fail(f"{kind}: the run neither reached the kill point nor finished in {deadline_s}s")
    kill9(proc)
    return hit


def test_kill9_at_random_points_then_resume_equals_uninterrupted(data, reference, tmp_path):
    rng = random.Random(SEED)
    out = tmp_path / "run"
    cfg = _cfg(data, tmp_path, out)
    plan = [rng.choice(KINDS) for _ in range(4)]
    plan[:3] = ["checkpoint_write", "eval", "step"]  # each kind at least once, in a seeded order below
    rng.shuffle(plan)
    hits = []
    for kind in plan:
        proc = spawn_cli(["train", "--cfg", cfg], log_path=str(tmp_path / "attempts.log"))
        hits.append(_wait_and_kill(proc, out, kind, rng))
        if hits[-1] == "exited":
            break
    assert hits.count("exited") == 0 or hits[-1] == "exited", hits
    res = run_cli(["train", "--cfg", cfg], timeout=400)
    assert res.code == 0, res
    assert "resumed from" in res.out, f"the final run did not auto-resume: {res!r}"
    assert not temp_files(out), f"temporary checkpoint files left behind: {temp_files(out)}"
    final = checkpoints(out)[-1]
    assert os.path.basename(final) == os.path.basename(reference)
    assert_same_tensors(model_state(final), model_state(reference))
    # at least one kill landed where it was aimed (a checkpoint write is ~ms long: polled at 0.5 ms)
    assert "step" in hits and "eval" in hits, hits
    print(f"kill points hit: {hits}")


@pytest.mark.parametrize("damage", ["truncated", "corrupted", "zero_byte"])
def test_damaged_newest_checkpoint_is_skipped_with_a_warning(data, reference, tmp_path, damage):
    """The finished reference run's folder with its final checkpoint damaged: the rerun skips it (warning),
    resumes from the previous (mid-epoch) one and writes the same final weights again."""
    out = tmp_path / "run"
    shutil.copytree(os.path.dirname(os.path.dirname(reference)), out)
    newest = checkpoints(out)[-1]
    size = os.path.getsize(newest)
    with open(newest, "r+b") as f:
        if damage == "truncated":
            f.truncate(size // 2)
        elif damage == "zero_byte":
            f.truncate(0)
        else:  # flip bytes in the middle (zip central data) but keep the size
            f.seek(size // 3)
            f.write(bytes(b ^ 0xFF for b in f.read(64)))
            f.seek(size - 200)
            f.write(b"\0" * 200)
    res = run_cli(["train", "--cfg", _cfg(data, tmp_path, out)], timeout=400)
    assert res.code == 0, res
    assert "Traceback" not in res.err, res
    assert os.path.basename(newest) in res.err + res.out and "skip" in (res.err + res.out).lower(), \
        f"no warning naming the skipped checkpoint: {res!r}"
    assert_same_tensors(model_state(checkpoints(out)[-1]), model_state(reference))
