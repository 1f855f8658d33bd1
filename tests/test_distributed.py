"""Real multi-process runs (gloo, CPU): torchrun with 2 ranks on one node, 2 torchrun "nodes" meeting at a c10d
rendezvous, an elastic restart after a killed worker, and rank 0 deciding what every rank resumes from."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from helpers.engine_runs import (REPO, TORCHRUN, env, gone, make_dataset, rank_pids, read_log, script_nodes,
                                 tiny_args, tiny_overrides, torchrun, torchrun_static_nodes, video_nl)
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from video_nl.engine.checkpoint import list_checkpoints

pytestmark = pytest.mark.slow
FINAL = Path("checkpoints") / "checkpoint_epoch_00002.pyth"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("videos"), train=8, val=3, test=5)  # 5 test videos: odd


@pytest.fixture(scope="module")
def one_node(data, tmp_path_factory):
    """``torchrun --standalone --nproc_per_node 2``: 2 epochs, then the 3-crop test; (output dir, result)."""
    out = tmp_path_factory.mktemp("one_node") / "run"
    return out, torchrun(2, "train", *tiny_args(data, out, **{"TEST.NUM_SPATIAL_CROPS": 3}))


def _assert_same_training_state(path: Path, reference: Path) -> None:
    final, ref = torch.load(path, weights_only=True), torch.load(reference, weights_only=True)
    assert final["model_state"].keys() == ref["model_state"].keys()
    for key, value in ref["model_state"].items():
        assert torch.equal(final["model_state"][key], value), key
    for got, want in zip(final["optimizer_state"]["state"].values(), ref["optimizer_state"]["state"].values()):
        assert torch.equal(got["momentum_buffer"], want["momentum_buffer"])


def _assert_every_test_video_scored_once(out: Path, stdout: str) -> None:
    preds = json.loads((out / "test" / "predictions.json").read_text())
    assert [p["index"] for p in preds] == [0, 1, 2, 3, 4]
    summary = json.loads((out / "test" / "summary.json").read_text())
    assert summary["num_videos"] == 5 and summary["num_failed"] == 0 and summary["views"] == 6
    assert "test 3/3" in stdout and "test 5/5" not in stdout  # rank 0 scored its share (0, 2, 4), not the list
    top1 = 100 * sum(p["top5"][0]["class"] == p["label"] for p in preds) / len(preds)
    top5 = 100 * sum(p["label"] in [t["class"] for t in p["top5"]] for p in preds) / len(preds)
    assert summary["top1"] == pytest.approx(top1) and summary["top5"] == pytest.approx(top5)


def test_torchrun_two_ranks_train_and_test_every_video_once(one_node):
    out, result = one_node
    assert result.returncode == 0, result.stderr[-4000:]
    assert [p.rsplit("/", 1)[1] for p in list_checkpoints(str(out))] == \
        ["checkpoint_epoch_00001.pyth", "checkpoint_epoch_00002.pyth"]
    records = read_log(out)
    iters = [r for r in records if r["_type"] == "train_iter"]
    assert len(iters) == 8  # rank 0 logs alone; 8 videos / global batch 2 = 4 iterations per epoch
    assert [r["num_videos"] for r in records if r["_type"] == "val_epoch"] == [3, 3]
    assert result.stdout.count("json_stats") == len(records)
    assert EventAccumulator(str(out / "tensorboard")).Reload().Tags()["scalars"]
    _assert_every_test_video_scored_once(out, result.stdout)


def test_two_nodes_launched_by_train_kinetics_sh_at_a_c10d_rendezvous_train_and_test_like_one_node(data, one_node,
                                                                                                     tmp_path):
    """scripts/train_kinetics.sh run twice as its header documents for 2 nodes (``NNODES=2 RDZV_BACKEND=c10d
    MASTER_ADDR MASTER_PORT``, one process per node here): one 2-rank job at a c10d rendezvous on 127.0.0.1 that
    scores every test video once and ends with bitwise the weights of 2 processes on one node."""
    out = tmp_path / "run"
    overrides = tiny_overrides(data, out, **{"TEST.NUM_SPATIAL_CROPS": 3})
    results = script_nodes("train_kinetics.sh", data / "tiny.yaml", *overrides, logs=tmp_path / "logs",
                           launch={"RDZV_BACKEND": "c10d", "DATA_DIR": str(data), "OUTPUT_DIR": str(out)})
    for node, result in enumerate(results):
        assert result.returncode == 0, f"node {node}: {result.stderr[-4000:]}"
    _assert_every_test_video_scored_once(out, "".join(r.stdout for r in results))
    assert one_node[1].returncode == 0, one_node[1].stderr[-4000:]
    _assert_same_training_state(out / FINAL, one_node[0] / FINAL)


def _iterations(out: Path) -> int:
    return sum(r["_type"] == "train_iter" for r in read_log(out))


def _wait_for(condition, proc: subprocess.Popen, *, timeout: float = 300) -> None:
    """Poll ``condition`` (files, /proc) until it holds; fail if ``proc`` ends first or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, "the launcher ended before the awaited moment"
        assert time.monotonic() < deadline, f"not reached within {timeout:.0f} s"
        time.sleep(0.005)


def test_elastic_restart_after_a_killed_worker_resumes_from_the_newest_checkpoint(data, one_node, tmp_path):
    """``torchrun --max-restarts 1``: rank 1 is killed (SIGKILL) in the middle of the second epoch; the launcher
    restarts both workers, which resume from the newest checkpoint on disk (mid-epoch) and end with bitwise the
    uninterrupted run's weights and momentum buffers."""
    out = tmp_path / "run"
    cmd = [*TORCHRUN, "--standalone", "--nproc-per-node=2", "--max-restarts=1", "-m", "video_nl", "train",
           *tiny_args(data, out, **{"TRAIN.CHECKPOINT_PERIOD_ITERS": 5, "TRAIN.KEEP_CHECKPOINTS": 0,
                                    "TEST.ENABLE": False})]
    mid_epoch = out / "checkpoints" / "checkpoint_epoch_00001_iter_0000001.pyth"  # global iteration 5 of 8
    log = tmp_path / "torchrun.log"
    with log.open("w") as sink:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env(), stdout=sink, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        _wait_for(lambda: _iterations(out) >= 1, proc)
        workers = rank_pids(proc.pid)
        assert set(workers) == {0, 1}, workers
        _wait_for(mid_epoch.exists, proc)  # written by atomic rename; 3 steps and the epoch's end to go
        os.kill(workers[1], signal.SIGKILL)
        _wait_for(lambda: all(gone(pid) for pid in workers.values()), proc)
        newest = list_checkpoints(str(out))[-1]  # the first attempt is gone: this is what the restart finds
        assert proc.wait(timeout=600) == 0, log.read_text()[-4000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    text = log.read_text()
    assert not newest.endswith(str(FINAL)), "the kill landed after the last checkpoint: nothing was resumed"
    assert text.count("resumed from") == 1 and f"resumed from {newest} " in text, text[-4000:]
    assert one_node[1].returncode == 0, one_node[1].stderr[-4000:]
    _assert_same_training_state(out / FINAL, one_node[0] / FINAL)


@pytest.fixture(scope="module")
def one_epoch(data, tmp_path_factory):
    """A folder whose ``run/`` holds a finished 1-epoch run (started there with the relative OUTPUT_DIR "run")."""
    folder = tmp_path_factory.mktemp("one_epoch")
    result = video_nl("train", *tiny_args(data, Path("run"), **{"SOLVER.MAX_EPOCH": 1, "TEST.ENABLE": False}),
                      cwd=folder)
    assert result.returncode == 0, result.stderr[-4000:]
    return folder


@pytest.mark.parametrize("damage", ["missing", "truncated"])
def test_a_rank_that_cannot_load_rank_0s_resume_choice_stops_the_run_naming_itself(data, one_epoch, tmp_path,
                                                                                     damage):
    """Two nodes without a shared filesystem, made real on one machine: each launcher runs in its own folder and
    OUTPUT_DIR is the relative "run", so one path names node 0's checkpoint for rank 0 and node 1's copy for
    rank 1 — missing there, or truncated. Rank 0 chooses epoch 1; rank 1 must load exactly that file, so both
    nodes stop before any step with an error naming rank 1 and the path (rank 1 used to start from scratch)."""
    nodes = [tmp_path / "node0", tmp_path / "node1"]
    for node in nodes:
        shutil.copytree(one_epoch, node)
    chosen = Path("run") / "checkpoints" / "checkpoint_epoch_00001.pyth"
    if damage == "missing":
        (nodes[1] / chosen).unlink()
    else:
        with (nodes[1] / chosen).open("r+b") as f:
            f.truncate(f.seek(0, os.SEEK_END) // 2)
    before = read_log(nodes[0] / "run")
    args = tiny_args(data, Path("run"), **{"SOLVER.MAX_EPOCH": 2, "TEST.ENABLE": False, "DIST_TIMEOUT_S": 60})
    results = torchrun_static_nodes("train", *args, logs=tmp_path / "logs", cwds=nodes, timeout=400)
    for node, result in enumerate(results):
        assert result.returncode != 0, f"node {node} succeeded: {result.stdout[-3000:]}"
        assert f"rank 1 could not load {chosen}" in result.stderr, f"node {node}: {result.stderr[-3000:]}"
    assert read_log(nodes[0] / "run") == before and read_log(nodes[1] / "run") == before  # no step was taken


# Each rank: threads before the process group, then after init + deterministic mode (imports TorchDynamo's stack)
# + a collective + cleanup. Gloo's worker threads must be gone by then: left running into interpreter
# finalization, one releasing a collective's tensors aborts the process (SIGABRT at exit, 1 run in ~20).
_THREADS_AFTER_CLEANUP = """
import gc, os
import torch
from video_nl.config import get_default_config
from video_nl.engine import distributed as du
threads = lambda: len(os.listdir("/proc/self/task"))
before = threads()
cfg = get_default_config()
cfg.DEVICE = "cpu"
du.init_distributed(cfg)
torch.use_deterministic_algorithms(True)
du.all_gather_objects(du.rank())
du.cleanup()
gc.collect()
print(f"threads {before} -> {threads()}", flush=True)
"""


def test_cleanup_stops_gloo_threads_even_after_deterministic_mode_imports_dynamo(tmp_path):
    script = tmp_path / "threads.py"
    script.write_text(_THREADS_AFTER_CLEANUP)
    result = subprocess.run([*TORCHRUN, "--standalone", "--nproc_per_node", "2", str(script)], cwd=REPO, env=env(),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    counts = [line.split()[1:] for line in result.stdout.splitlines() if line.startswith("threads ")]
    assert len(counts) == 2, result.stdout
    for before, _, after in counts:
        assert after == before, f"gloo threads outlive cleanup: {result.stdout}"


def test_global_batch_not_divisible_by_world_size_is_a_user_error(tmp_path):
    data = make_dataset(tmp_path / "videos", train=4, val=1, test=1)
    result = torchrun(2, "train", *tiny_args(data, tmp_path / "run", **{"TRAIN.BATCH_SIZE": 3}), timeout=300)
    assert result.returncode != 0
    assert "TRAIN.BATCH_SIZE" in result.stderr and "divisible by the world size (2)" in result.stderr
