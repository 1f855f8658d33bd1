"""Distributed faults with real 2-rank gloo runs (torchrun --nproc_per_node 2, CPU): one rank meets only bad
videos, lists not divisible by the world size, a batch not divisible by the world size, and a rank killed with
SIGKILL mid-run (the run must end with an error within a timeout — no deadlock).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import (REPO, child_env, deep_update, read_jsonl, require, run_cli, write_cfg)
from helpers.engine_runs import rank_pids

import badvideos

pytestmark = pytest.mark.slow
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


def torchrun(argv, *, timeout: float):
    return run_cli([*TORCHRUN, "-m", "video_nl", *argv], timeout=timeout, module=False,
                   env=child_env(DIST_TIMEOUT_S=60))


def _no_video_nl_traceback(res) -> None:
    """torchrun's launcher prints its own ChildFailedError report; our code must not print a traceback."""
    text = res.out + res.err
    assert 'video_nl/' not in text.split("Traceback", 1)[-1] if "Traceback" in text else True, \
        f"a traceback through video_nl code: {res!r}"


@pytest.fixture(scope="module")
def lists(tmp_path_factory):
    """9 videos (odd: not divisible by 2). Train: the positions rank 1 draws in epoch 0 are bad. Test: every
    odd position (rank 1's shard when testing) is bad."""
    require("video_nl.engine.train")
    from video_nl.data.datasets import EpochSampler

    folder = tmp_path_factory.mktemp("dist")
    n = 9
    rank1 = sorted(set(EpochSampler(n, shuffle=True, seed=0, rank=1, world_size=2)._order()))  # epoch 0
    kinds = ("zero_byte", "truncated_50", "random_bytes", "header_only", "missing")
    bad = [badvideos.make_bad(k, folder, 0) for k in kinds[:max(len(rank1), 4)]]
    good = [badvideos.make_good(folder / f"good_{i}.mp4", i) for i in range(n - len(rank1))]
    it_bad, it_good = iter(bad), iter(good)
    train = [next(it_bad) if pos in rank1 else next(it_good) for pos in range(n)]
    test = [bad[i // 2 % len(bad)] if i % 2 else good[i // 2 % len(good)] for i in range(n)]
    badvideos.write_list(folder / "train.csv", [(p, i % 2) for i, p in enumerate(train)])
    badvideos.write_list(folder / "val.csv", [(p, i % 2) for i, p in enumerate(good)])
    badvideos.write_list(folder / "test.csv", [(p, i % 2) for i, p in enumerate(test)])
    return {"dir": str(folder), "bad": bad, "train": train, "rank1": rank1,
            "cfg": {"DATA": {"PATH_TO_DATA_DIR": str(folder)}}}


def test_two_ranks_with_one_rank_on_bad_videos_train_and_test(lists, tmp_path):
    out = tmp_path / "run"
    assert {lists["train"][i] for i in lists["rank1"]} <= set(lists["bad"])
    cfg = write_cfg(tmp_path / "cfg.yaml", deep_update(lists["cfg"], {
        "OUTPUT_DIR": str(out), "SOLVER": {"MAX_EPOCH": 1}, "TRAIN": {"BATCH_SIZE": 2},
        "TEST": {"ENABLE": True, "BATCH_SIZE": 2}}))
    res = torchrun(["train", "--cfg", cfg], timeout=420)
    assert res.code == 0, res
    for path in {lists["train"][i] for i in lists["rank1"]}:
        assert f"failed to load {path}:" in res.out, f"{path} was not reported: {res!r}"
    summary = json.loads((out / "test" / "summary.json").read_text())
    assert summary["num_videos"] == 9, f"9 test videos over 2 ranks, every one exactly once: {summary}"
    assert summary["num_failed"] == 4, summary
    epochs = [r for r in read_jsonl(out / "log.jsonl") if r.get("_type") == "train_epoch"]
    assert len(epochs) == 1 and epochs[0]["num_failed_videos"] >= 4, epochs


def test_batch_not_divisible_by_world_size_is_a_clear_error(lists, tmp_path):
    cfg = write_cfg(tmp_path / "cfg.yaml", deep_update(lists["cfg"], {
        "OUTPUT_DIR": str(tmp_path / "run"), "TRAIN": {"BATCH_SIZE": 3}}))
    res = torchrun(["train", "--cfg", cfg], timeout=300)
    assert res.code != 0, res
    assert "video-nl train: error:" in res.err and "TRAIN.BATCH_SIZE" in res.err, res
    _no_video_nl_traceback(res)


def test_rank_killed_mid_run_ends_the_run_without_deadlock(lists, tmp_path):
    out = tmp_path / "run"
    cfg = write_cfg(tmp_path / "cfg.yaml", deep_update(lists["cfg"], {
        "OUTPUT_DIR": str(out), "SOLVER": {"MAX_EPOCH": 50}, "TRAIN": {"BATCH_SIZE": 2}, "DIST_TIMEOUT_S": 30}))
    proc = subprocess.Popen([*TORCHRUN, "-m", "video_nl", "train", "--cfg", cfg], cwd=REPO, env=child_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        t0 = time.time()
        while time.time() - t0 < 300 and proc.poll() is None:
            if sum(r.get("_type") == "train_iter" for r in read_jsonl(out / "log.jsonl")) >= 3:
                break
            time.sleep(0.2)
        assert proc.poll() is None, f"the run ended before the kill: {proc.communicate()[0][-3000:]}"
        ranks = rank_pids(proc.pid)
        assert set(ranks) == {0, 1}, f"could not find both ranks below torchrun: {ranks}"
        os.kill(ranks[1], signal.SIGKILL)
        killed_at = time.time()
        try:
            text, _ = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            pytest.fail("DEADLOCK: rank 0 and the launcher still run 120 s after rank 1 was killed")
        assert proc.returncode != 0, f"the run reported success after losing a rank: {text[-3000:]}"
        assert time.time() - killed_at < 120
        assert not os.path.exists(f"/proc/{ranks[0]}") or open(f"/proc/{ranks[0]}/stat").read().split()[2] == "Z", \
            "rank 0 outlived the run"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
