"""Config and CLI fuzz: a few hundred bad overrides / files, each must give a one-paragraph error naming the
offending key and a non-zero exit, before anything runs (OUTPUT_DIR is never created) — never a traceback.

The bulk runs in-process through ``video_nl.cli.main`` (fast); a seeded sample runs through real
``python -m video_nl`` subprocesses.
"""
from __future__ import annotations

import os
import random

import pytest
from conftest import assert_user_error, cli_inprocess, run_cli, write_cfg

from video_nl.config import all_keys

SEED = 20240611
KEYS = dict(all_keys())

# Values that are not of the key's type (override text, parsed like yacs: a Python literal or a string).
WRONG_TYPE = {
    "int": ["abc", "1.5", "[1]", "True", "None", "{'a': 1}"],
    "float": ["abc", "[0.1]", "True", "None", "(1, 2)"],
    "bool": ["maybe", "2", "[True]", "None", "0.5"],
    "str": ["[1, 2]", "{'a': 1}", "None", "(1, 2)"],
    "list[int]": ["abc", "5", "[1.5]", "[[1]]", "['a']"],
    "list[float]": ["abc", "0.5", "['a']", "[[0.1]]", "[True]"],
    "list[str]": ["5", "[1]", "abc", "[[1]]"],
    "list[list[int]]": ["5", "[1, 2]", "[['a']]", "abc", "[[1.5]]"],
}

# Values of the right type that are out of range (each must be refused by validate()).
OUT_OF_RANGE = [
    ("LOG_PERIOD", "0"), ("DIST_TIMEOUT_S", "0"), ("RNG_SEED", "-1"),
    ("MODEL.NUM_CLASSES", "0"), ("MODEL.NUM_CLASSES", "-5"), ("MODEL.DROPOUT_RATE", "1.0"),
    ("MODEL.DROPOUT_RATE", "-0.1"), ("MODEL.FC_INIT_STD", "-0.01"),
    ("RESNET.WIDTH_PER_GROUP", "0"), ("RESNET.NUM_GROUPS", "0"),
    ("BN.EPS", "0.0"), ("BN.EPS", "-1e-5"), ("BN.MOMENTUM", "1.5"), ("BN.MOMENTUM", "-0.1"),
    ("BN.WEIGHT_DECAY", "-1e-4"), ("BN.NUM_BATCHES_PRECISE", "0"),
    ("NONLOCAL.POOL", "[[1, 2, 2], [1, 0, 2], [1, 2, 2], [1, 2, 2]]"), ("NONLOCAL.GROUP", "[1, 0, 1, 1]"),
    ("NONLOCAL.LOCATION", "[[], [-1], [], []]"), ("NONLOCAL.INNER_RATIO", "0.0"),
    ("GC.RATIO", "0.0"), ("SE.RATIO", "-0.5"),
    ("LATENTGNN.NUM_NODES", "0"), ("LATENTGNN.NUM_KERNELS", "0"), ("LATENTGNN.CHANNEL_STRIDE", "0"),
    ("DATA.NUM_FRAMES", "0"), ("DATA.SAMPLING_RATE", "-2"), ("DATA.TARGET_FPS", "-1.0"),
    ("DATA.TRAIN_JITTER_SCALES", "[320, 256]"), ("DATA.TRAIN_JITTER_SCALES", "[256]"),
    ("DATA.TRAIN_JITTER_SCALES", "[0, 40]"),
    ("DATA.TRAIN_CROP_SIZE", "0"), ("DATA.TEST_CROP_SIZE", "-32"), ("DATA.STD", "[0.2, 0.0, 0.2]"),
    ("DATA.MEAN", "[0.45, 0.45]"), ("DATA.DECODE_THREADS", "-1"), ("DATA.DECODE_TIMEOUT_S", "-5.0"), ("DATA.MAX_FAILURE_RATIO", "1.5"), ("DATA.MAX_FAILURE_RATIO", "-0.1"),
    ("DATA_LOADER.NUM_WORKERS", "-1"), ("DATA_LOADER.PREFETCH_FACTOR", "0"),
    ("SOLVER.BASE_LR", "0.0"), ("SOLVER.BASE_LR", "-0.1"), ("SOLVER.MAX_EPOCH", "0"), ("SOLVER.MOMENTUM", "-0.9"),
    ("SOLVER.DAMPENING", "-1.0"), ("SOLVER.WEIGHT_DECAY", "-1e-4"), ("SOLVER.WARMUP_EPOCHS", "-1.0"),
    ("SOLVER.WARMUP_START_LR", "-0.01"), ("SOLVER.COSINE_END_LR", "-1e-3"), ("SOLVER.CLIP_GRAD_L2NORM", "-1.0"),
    ("TRAIN.BATCH_SIZE", "0"), ("TRAIN.BATCH_SIZE", "-4"), ("TRAIN.EVAL_PERIOD", "-1"),
    ("TRAIN.CHECKPOINT_PERIOD", "0"), ("TRAIN.CHECKPOINT_PERIOD_ITERS", "-1"), ("TRAIN.KEEP_CHECKPOINTS", "-1"),
    ("TRAIN.LABEL_SMOOTHING", "1.0"), ("TRAIN.LABEL_SMOOTHING", "-0.1"),
    ("TEST.BATCH_SIZE", "0"), ("TEST.NUM_ENSEMBLE_VIEWS", "0"),
    ("MODEL.CLASS_WEIGHTS", "balance"), ("MODEL.CLASS_WEIGHTS", "[1.0, -2.0]"), ("MODEL.CLASS_WEIGHTS", "{'a': 1}"),
    ("TRAIN.ACCUM_STEPS", "0"), ("MODEL.ACT_CHECKPOINT", "sometimes"), ("MODEL.ACT_CHECKPOINT", "[True, False]"),
    ("MODEL.ACT_CHECKPOINT", "[1, 0, 0, 1]"),
]

# Combinations each key of which is valid alone (the first key is the one the message must name).
INCONSISTENT = [
    ("SOLVER.NESTEROV", ["SOLVER.NESTEROV", "True", "SOLVER.MOMENTUM", "0.0"]),
    ("SOLVER.NESTEROV", ["SOLVER.NESTEROV", "True", "SOLVER.DAMPENING", "0.5"]),
    ("SOLVER.STEPS", ["SOLVER.LR_POLICY", "steps_with_relative_lrs", "SOLVER.STEPS", "[1, 5]", "SOLVER.LRS",
                      "[1.0, 0.1]"]),
    ("SOLVER.STEPS", ["SOLVER.LR_POLICY", "steps_with_relative_lrs", "SOLVER.STEPS", "[0, 5, 3]", "SOLVER.LRS",
                      "[1.0, 0.1, 0.01]"]),
    ("SOLVER.LRS", ["SOLVER.LR_POLICY", "steps_with_relative_lrs", "SOLVER.STEPS", "[0, 5]", "SOLVER.LRS",
                    "[1.0]"]),
    ("TRAIN.MIXED_PRECISION", ["TRAIN.MIXED_PRECISION", "fp16", "DEVICE", "cpu"]),
    ("TRAIN.CHECKPOINT_INFLATE", ["TRAIN.CHECKPOINT_INFLATE", "True", "TRAIN.CHECKPOINT_FILE_PATH", "''"]),
    ("RESNET.NUM_GROUPS", ["RESNET.DEPTH", "18", "RESNET.NUM_GROUPS", "32"]),
    ("GC.FUSION", ["GC.FUSION", "['channel_add', 'sum']"]),
    ("GC.FUSION", ["GC.FUSION", "[]"]),
    ("DATA.MULTI_LABEL", ["DATA.MULTI_LABEL", "True"]),
    ("DATA.MULTI_LABEL", ["DATA.MULTI_LABEL", "True", "MODEL.LOSS_FUNC", "bce_logit"]),
    ("TRAIN.LABEL_SMOOTHING", ["MODEL.LOSS_FUNC", "bce_logit", "TRAIN.LABEL_SMOOTHING", "0.1"]),
    ("MODEL.CLASS_WEIGHTS", ["MODEL.NUM_CLASSES", "3", "MODEL.CLASS_WEIGHTS", "[1.0, 2.0]"]),
    ("TRAIN.ACCUM_STEPS", ["TRAIN.BATCH_SIZE", "6", "TRAIN.ACCUM_STEPS", "4"]),
]


def _mutate_key(rng: random.Random, key: str) -> str:
    """A plausible typo of a real key (case, dropped/doubled letter, wrong section, suffix, too deep)."""
    section, _, leaf = key.rpartition(".")
    choice = rng.randrange(7)
    if choice == 0:
        return key.lower()
    if choice == 1 and len(leaf) > 3:
        i = rng.randrange(len(leaf))
        return (section + "." if section else "") + leaf[:i] + leaf[i + 1:]
    if choice == 2:
        i = rng.randrange(len(leaf))
        return (section + "." if section else "") + leaf[:i] + leaf[i] * 2 + leaf[i + 1:]
    if choice == 3:
        other = rng.choice(["SOLVERS", "TRAINING", "MODELS", "DATASET", "NL", "OPTIM"])
        return other + "." + leaf
    if choice == 4:
        return key + "_X"
    if choice == 5:
        return key + ".SUB"
    return "FOO." + leaf + ".BAR"


def _cases() -> list[tuple[str, str, list[str]]]:
    """(id, key the message must name, overrides) for every fuzz case, from a seeded RNG."""
    rng = random.Random(SEED)
    cases = []
    for name, key in sorted(KEYS.items()):
        pool = list(WRONG_TYPE[key.type]) if key.type in WRONG_TYPE else []
        for value in rng.sample(pool, k=min(2, len(pool))):
            cases.append((f"type-{name}={value}", name, [name, value]))
        if key.choices:
            bad = "not_a_choice" if key.type == "str" else "7"
            cases.append((f"choice-{name}={bad}", name, [name, bad]))
    for name, value in OUT_OF_RANGE:
        cases.append((f"range-{name}={value}", name, [name, value]))
    for i, (name, overrides) in enumerate(INCONSISTENT):
        cases.append((f"combo{i}-{name}", name, overrides))
    names = sorted(KEYS)
    for i in range(60):
        typo = _mutate_key(rng, rng.choice(names))
        if typo in KEYS:
            continue
        cases.append((f"unknown{i}-{typo}", typo, [typo, "1"]))
    for section in ("MODEL", "SOLVER", "TRAIN"):  # a section used as a key
        cases.append((f"section-{section}", section, [section, "1"]))
    # a valid override followed by a bad one: the bad one is still named
    cases.append(("late-bad", "TRAIN.BATCH_SIZE", ["SOLVER.BASE_LR", "0.1", "TRAIN.BATCH_SIZE", "x"]))
    return cases


CASES = _cases()


def test_fuzz_corpus_is_large_and_covers_every_key():
    assert len(CASES) >= 300, len(CASES)
    covered = {c[1] for c in CASES}
    assert set(KEYS) <= covered, sorted(set(KEYS) - covered)


@pytest.fixture(scope="module")
def base_cfg(tmp_path_factory):
    return write_cfg(tmp_path_factory.mktemp("fuzz") / "tiny.yaml")


@pytest.mark.parametrize("case_id,key,overrides", CASES, ids=[c[0] for c in CASES])
def test_override_fuzz_inprocess(case_id, key, overrides, base_cfg, tmp_path):
    out = tmp_path / "never_created"
    res = cli_inprocess(["train", "--cfg", base_cfg, *overrides, "OUTPUT_DIR", str(out)]
                        if key != "OUTPUT_DIR" else ["train", "--cfg", base_cfg, *overrides])
    assert_user_error(res, key, command="train")
    assert not out.exists(), "OUTPUT_DIR was created: the run started before the config was rejected"


# Broken config *files* and command lines (structure rather than values).
FILE_CASES = [
    ("yaml-syntax", "MODEL:\n  NUM_CLASSES: [1, 2\n", "not valid YAML"),
    ("yaml-list-top", "- 1\n- 2\n", "mapping"),
    ("yaml-unknown-key", "MODEL:\n  NUM_CLASES: 3\n", "MODEL.NUM_CLASES"),
    ("yaml-unknown-section", "MODLE:\n  NUM_CLASSES: 3\n", "MODLE"),
    ("yaml-wrong-type", "SOLVER:\n  BASE_LR: fast\n", "SOLVER.BASE_LR"),
    ("yaml-section-scalar", "MODEL: 5\n", "MODEL"),
    ("yaml-key-mapping", "MODEL:\n  ARCH:\n    X: 1\n", "MODEL.ARCH"),
    ("yaml-out-of-range", "TRAIN:\n  BATCH_SIZE: 0\n", "TRAIN.BATCH_SIZE"),
    ("yaml-missing-base", "_BASE_: nowhere.yaml\n", "nowhere.yaml"),
    ("yaml-self-base", "_BASE_: self.yaml\n", "self.yaml"),
]


@pytest.mark.parametrize("case_id,text,mention", FILE_CASES, ids=[c[0] for c in FILE_CASES])
def test_config_file_fuzz(case_id, text, mention, tmp_path):
    path = tmp_path / "self.yaml"
    path.write_text(text)
    assert_user_error(cli_inprocess(["train", "--cfg", path]), mention)


ARGV_CASES = [
    ("missing-file", ["train", "--cfg", "/nonexistent/cfg.yaml"], "/nonexistent/cfg.yaml"),
    ("odd-overrides", ["train", "--cfg", "{cfg}", "SOLVER.BASE_LR"], "SOLVER.BASE_LR"),
    ("stray-flag", ["train", "--cfg", "{cfg}", "--epochs", "3"], "--epochs"),
    ("no-cfg", ["train"], "--cfg"),
    ("unknown-command", ["trian", "--cfg", "{cfg}"], "trian"),
    ("convert-bad-source", ["convert", "--cfg", "{cfg}", "--from", "tf", "a", "b"], "tf"),
    ("predict-no-video", ["predict", "--cfg", "{cfg}", "--checkpoint", "x.pyth"], "--video"),
]


@pytest.mark.parametrize("case_id,argv,mention", ARGV_CASES, ids=[c[0] for c in ARGV_CASES])
def test_argv_fuzz(case_id, argv, mention, base_cfg):
    assert_user_error(cli_inprocess([a.replace("{cfg}", base_cfg) for a in argv]), mention)


def test_override_fuzz_subprocess_sample(base_cfg, tmp_path):
    """A seeded handful of the fuzz cases through real `python -m video_nl` processes."""
    rng = random.Random(SEED)
    sample = rng.sample(CASES, 4)
    for case_id, key, overrides in sample:
        out = tmp_path / case_id.replace("/", "_")
        res = run_cli(["train", "--cfg", base_cfg, *overrides, "OUTPUT_DIR", out], timeout=120)
        assert_user_error(res, key, command="train")
        assert res.code == 2, f"{case_id}: user errors exit with 2, got {res!r}"
        assert not out.exists(), f"{case_id}: OUTPUT_DIR was created before the config was rejected"
    # and the console script itself
    script = os.path.join(os.path.dirname(os.path.abspath(os.sys.executable)), "video-nl")
    if os.path.exists(script):
        res = run_cli([script, "train", "--cfg", base_cfg, "TRAIN.BATCH_SIZE", "-1"], timeout=120, module=False)
        assert_user_error(res, "TRAIN.BATCH_SIZE", command="train")
