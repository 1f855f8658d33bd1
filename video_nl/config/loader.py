"""Loading configs: schema defaults <- YAML files (with ``_BASE_``) <- ``KEY VALUE`` overrides.

Every value is checked against :data:`video_nl.config.schema.SCHEMA`; unknown keys and wrong
types raise :class:`ConfigError` with a one-paragraph message naming the key and what is valid.
"""
from __future__ import annotations

import ast
import copy
import difflib
import os
from collections.abc import Iterator, Sequence
from typing import Any

import yaml

from ..errors import UserError
from .schema import SCHEMA, Key

BASE_KEY = "_BASE_"


class ConfigError(UserError, ValueError):
    """A config file or override is invalid (unknown key, wrong type, bad value)."""


class CfgNode(dict):
    """A nested dict with attribute access (``cfg.MODEL.NUM_CLASSES``) that rejects unknown keys."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"config has no key {name!r}; valid: {sorted(self)}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        if name not in self:
            raise AttributeError(f"config has no key {name!r}; valid: {sorted(self)}")
        self[name] = value

    def __deepcopy__(self, memo: dict) -> "CfgNode":
        return CfgNode({k: copy.deepcopy(v, memo) for k, v in self.items()})

    def to_dict(self) -> dict:
        """A plain-dict copy (for YAML/JSON dumps and checkpoints)."""
        return {k: v.to_dict() if isinstance(v, CfgNode) else copy.deepcopy(v) for k, v in self.items()}

    def dump(self) -> str:
        """The config as YAML text."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def _defaults(tree: dict) -> CfgNode:
    return CfgNode({k: _defaults(v) if isinstance(v, dict) else copy.deepcopy(v.default) for k, v in tree.items()})


def all_keys(tree: dict = SCHEMA, prefix: str = "") -> Iterator[tuple[str, Key]]:
    """Every full key name (``SECTION.KEY``) with its :class:`Key`."""
    for name, value in tree.items():
        if isinstance(value, dict):
            yield from all_keys(value, prefix + name + ".")
        else:
            yield prefix + name, value


def _lookup(full_key: str) -> Key:
    node: Any = SCHEMA
    for part in full_key.split("."):
        if not isinstance(node, dict) or part not in node:
            names = [k for k, _ in all_keys()]
            close = difflib.get_close_matches(full_key.upper(), names, n=5, cutoff=0.5)
            section = full_key.split(".")[0]
            in_section = [n for n in names if n.startswith(section + ".")]
            hint = close or in_section[:12] or sorted({n.split(".")[0] for n in names})
            raise ConfigError(f"Unknown config key {full_key!r}. Did you mean one of: {', '.join(hint)}? "
                              f"(`video-nl config-keys` lists every key with its doc.)")
        node = node[part]
    if isinstance(node, dict):
        raise ConfigError(f"{full_key!r} is a config section, not a key; its keys are: "
                          f"{', '.join(full_key + '.' + k for k in node)}.")
    return node


def _flatten_pathways(value: Any) -> Any:
    """Accept PySlowFast's per-pathway nesting ``[[[1, 3]], ...]`` for per-stage lists."""
    if isinstance(value, list) and value and all(
            isinstance(v, list) and len(v) == 1 and isinstance(v[0], list) for v in value):
        return [v[0] for v in value]
    return value


def _check(full_key: str, key: Key, value: Any) -> Any:
    """Coerce ``value`` to ``key.type`` or raise :class:`ConfigError` naming key, type and value."""

    def fail(reason: str = "") -> ConfigError:
        return ConfigError(f"Config key {full_key} expects {key.type}, got {value!r} ({type(value).__name__})"
                           f"{': ' + reason if reason else ''}. Doc: {key.doc}")

    def scalar(kind: str, v: Any) -> Any:
        if kind == "int":
            if isinstance(v, bool) or not isinstance(v, int):
                if isinstance(v, float) and v.is_integer():
                    return int(v)
                raise fail()
            return v
        if kind == "float":
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise fail()
            return float(v)
        if kind == "bool":
            if not isinstance(v, bool):
                raise fail()
            return v
        if kind == "str":
            if isinstance(v, (int, float)) and not isinstance(v, bool) and str(v) in key.choices:
                return str(v)  # `NONLOCAL.PRESET 5` on the command line or unquoted in YAML
            if not isinstance(v, str):
                raise fail()
            return v
        raise AssertionError(kind)

    kind = key.type
    if kind == "any":
        out = value
    elif kind.startswith("list[list["):
        value = _flatten_pathways(value)
        inner = kind[len("list[list["):-2]
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, (list, tuple)) for v in value):
            raise fail()
        out = [[scalar(inner, x) for x in v] for v in value]
    elif kind.startswith("list["):
        inner = kind[len("list["):-1]
        if not isinstance(value, (list, tuple)):
            raise fail()
        out = [scalar(inner, x) for x in value]
    else:
        out = scalar(kind, value)
    if key.choices and out not in key.choices:
        raise ConfigError(f"Config key {full_key} must be one of {list(key.choices)}, got {value!r}. Doc: {key.doc}")
    return out


def _set(cfg: CfgNode, full_key: str, value: Any) -> None:
    key = _lookup(full_key)
    parts = full_key.split(".")
    node = cfg
    for part in parts[:-1]:
        node = node[part]
    node[parts[-1]] = _check(full_key, key, value)


def _merge_mapping(cfg: CfgNode, mapping: dict, prefix: str = "") -> None:
    for name, value in mapping.items():
        full = prefix + str(name)
        if isinstance(value, dict):
            _lookup_section(full)
            _merge_mapping(cfg, value, full + ".")
        else:
            _set(cfg, full, value)


def _lookup_section(full: str) -> None:
    node: Any = SCHEMA
    for part in full.split("."):
        if not isinstance(node, dict) or part not in node:
            _lookup(full)  # raises with suggestions
        node = node[part]
    if not isinstance(node, dict):
        raise ConfigError(f"Config key {full} is a value ({node.type}), not a section: got a mapping. Doc: {node.doc}")


def _read_yaml(path: str, seen: tuple[str, ...] = ()) -> list[dict]:
    """The YAML mappings to merge for ``path``: its ``_BASE_`` chain first, the file itself last."""
    path = os.path.abspath(path)
    if path in seen:
        raise ConfigError(f"Config {path} inherits from itself through _BASE_: {' -> '.join(seen + (path,))}.")
    if not os.path.isfile(path):
        raise ConfigError(f"Config file {path} does not exist.")
    with open(path) as f:
        try:
            data = yaml.safe_load(f) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"Config file {path} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"Config file {path} must hold a mapping of sections and keys, got {type(data).__name__}.")
    chain: list[dict] = []
    base = data.pop(BASE_KEY, None)
    if base:
        bases = [base] if isinstance(base, str) else list(base)
        for b in bases:
            chain += _read_yaml(os.path.join(os.path.dirname(path), b), seen + (path,))
    chain.append(data)
    return chain


def parse_override_value(text: str) -> Any:
    """Parse a command-line override value like PySlowFast/yacs: a Python literal, else the string."""
    if not isinstance(text, str):
        return text
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def merge_overrides(cfg: CfgNode, overrides: Sequence[str]) -> CfgNode:
    """Apply ``["KEY", "VALUE", ...]`` overrides to ``cfg`` in place (and return it)."""
    overrides = list(overrides)
    if len(overrides) % 2:
        raise ConfigError(f"Overrides come in KEY VALUE pairs; got an odd number ({len(overrides)}): "
                          f"{' '.join(overrides)}. The last key {overrides[-1]!r} has no value.")
    for key, value in zip(overrides[0::2], overrides[1::2]):
        _set(cfg, key, parse_override_value(value))
    return cfg


def get_default_config() -> CfgNode:
    """A fresh config holding every schema default."""
    return _defaults(SCHEMA)


def load_config(path: str | None = None, overrides: Sequence[str] = ()) -> CfgNode:
    """Load ``path`` (with its ``_BASE_`` chain) over the defaults, then apply ``KEY VALUE`` overrides.

    Raises:
        ConfigError: on an unknown key, a value of the wrong type, or an unreadable file.
    """
    cfg = get_default_config()
    if path:
        for mapping in _read_yaml(path):
            _merge_mapping(cfg, mapping)
    merge_overrides(cfg, overrides)
    validate(cfg)
    return cfg


NUM_STAGES = 4  # res2..res5


def stage_flags(value: Any, *, key: str) -> list[bool]:
    """One bool per stage res2..res5 from ``none``/``all``, a single bool, or a list of 4 bools.

    Raises:
        ConfigError: any other value, naming ``key`` and the accepted forms.
    """
    if value is None or isinstance(value, bool):
        return [bool(value)] * NUM_STAGES
    if isinstance(value, str) and value.strip().lower() in ("none", "all"):
        return [value.strip().lower() == "all"] * NUM_STAGES
    if isinstance(value, (list, tuple)) and len(value) == NUM_STAGES and all(isinstance(v, bool) for v in value):
        return list(value)
    raise ConfigError(f"Config key {key} takes none, all, or {NUM_STAGES} booleans (one per stage res2..res5, e.g. "
                      f"[False, True, True, False]); got {value!r}.")


def validate(cfg: CfgNode) -> None:
    """Cross-key checks that a single key's type cannot express."""
    stage_flags(cfg.MODEL.ACT_CHECKPOINT, key="MODEL.ACT_CHECKPOINT")
    problems = []
    if cfg.MODEL.NUM_CLASSES < 1:
        problems.append(f"MODEL.NUM_CLASSES must be >= 1, got {cfg.MODEL.NUM_CLASSES}")
    if not 0.0 <= cfg.MODEL.DROPOUT_RATE < 1.0:
        problems.append(f"MODEL.DROPOUT_RATE must be in [0, 1), got {cfg.MODEL.DROPOUT_RATE}")
    if cfg.DATA.NUM_FRAMES < 1 or cfg.DATA.SAMPLING_RATE < 1:
        problems.append(f"DATA.NUM_FRAMES and DATA.SAMPLING_RATE must be >= 1, got "
                        f"{cfg.DATA.NUM_FRAMES} and {cfg.DATA.SAMPLING_RATE}")
    if len(cfg.DATA.TRAIN_JITTER_SCALES) != 2 or cfg.DATA.TRAIN_JITTER_SCALES[0] > cfg.DATA.TRAIN_JITTER_SCALES[1]:
        problems.append(f"DATA.TRAIN_JITTER_SCALES must be [min, max] with min <= max, got "
                        f"{cfg.DATA.TRAIN_JITTER_SCALES}")
    if cfg.DATA.TRAIN_CROP_SIZE < 1 or cfg.DATA.TEST_CROP_SIZE < 1:
        problems.append("DATA.TRAIN_CROP_SIZE and DATA.TEST_CROP_SIZE must be >= 1")
    if (cfg.DATA.SAMPLING_PROTOCOL == "pyslowfast" and cfg.TEST.NUM_SPATIAL_CROPS == 1
            and cfg.DATA.TRAIN_JITTER_SCALES and cfg.DATA.TRAIN_JITTER_SCALES[0] < cfg.DATA.TEST_CROP_SIZE):
        problems.append(f"DATA.SAMPLING_PROTOCOL pyslowfast with TEST.NUM_SPATIAL_CROPS 1 scales test frames to "
                        f"DATA.TRAIN_JITTER_SCALES[0] ({cfg.DATA.TRAIN_JITTER_SCALES[0]}), which must be >= "
                        f"DATA.TEST_CROP_SIZE ({cfg.DATA.TEST_CROP_SIZE})")
    if len(cfg.DATA.MEAN) != 3 or len(cfg.DATA.STD) != 3 or min(cfg.DATA.STD) <= 0:
        problems.append(f"DATA.MEAN and DATA.STD need 3 values (STD > 0), got {cfg.DATA.MEAN} and {cfg.DATA.STD}")
    if not 0.0 <= cfg.DATA.MAX_FAILURE_RATIO <= 1.0:
        problems.append(f"DATA.MAX_FAILURE_RATIO must be in [0, 1], got {cfg.DATA.MAX_FAILURE_RATIO}")
    if cfg.DATA_LOADER.NUM_WORKERS < 0:
        problems.append(f"DATA_LOADER.NUM_WORKERS must be >= 0, got {cfg.DATA_LOADER.NUM_WORKERS}")
    if cfg.TRAIN.BATCH_SIZE < 1 or cfg.TEST.BATCH_SIZE < 1:
        problems.append("TRAIN.BATCH_SIZE and TEST.BATCH_SIZE must be >= 1")
    if cfg.SOLVER.BASE_LR <= 0 or cfg.SOLVER.MAX_EPOCH < 1:
        problems.append(f"SOLVER.BASE_LR must be > 0 and SOLVER.MAX_EPOCH >= 1, got {cfg.SOLVER.BASE_LR} and "
                        f"{cfg.SOLVER.MAX_EPOCH}")
    if cfg.SOLVER.LR_POLICY == "steps_with_relative_lrs" and (
            len(cfg.SOLVER.STEPS) != len(cfg.SOLVER.LRS) or not cfg.SOLVER.STEPS):
        problems.append(f"SOLVER.LR_POLICY steps_with_relative_lrs needs SOLVER.STEPS and SOLVER.LRS of equal, "
                        f"non-zero length, got {cfg.SOLVER.STEPS} and {cfg.SOLVER.LRS}")
    if cfg.TEST.NUM_ENSEMBLE_VIEWS < 1:
        problems.append(f"TEST.NUM_ENSEMBLE_VIEWS must be >= 1, got {cfg.TEST.NUM_ENSEMBLE_VIEWS}")
    for name in ("LOCATION", "POOL"):
        if len(cfg.NONLOCAL[name]) != 4:
            problems.append(f"NONLOCAL.{name} needs one entry per stage res2..res5 (4), got {cfg.NONLOCAL[name]}")
    if any(len(p) != 3 for p in cfg.NONLOCAL.POOL):
        problems.append(f"NONLOCAL.POOL entries are [t, h, w], got {cfg.NONLOCAL.POOL}")
    if len(cfg.NONLOCAL.GROUP) != 4 or min(cfg.NONLOCAL.GROUP) < 1:
        problems.append(f"NONLOCAL.GROUP needs 4 values >= 1, got {cfg.NONLOCAL.GROUP}")
    # ranges of single keys (each message names its key)
    at_least = [("LOG_PERIOD", 1), ("DIST_TIMEOUT_S", 1), ("RNG_SEED", 0), ("RESNET.WIDTH_PER_GROUP", 1),
                ("RESNET.NUM_GROUPS", 1), ("BN.NUM_BATCHES_PRECISE", 1), ("LATENTGNN.NUM_NODES", 1),
                ("LATENTGNN.NUM_KERNELS", 1), ("LATENTGNN.CHANNEL_STRIDE", 1), ("DATA.DECODE_THREADS", 0),
                ("DATA_LOADER.PREFETCH_FACTOR", 1), ("TRAIN.EVAL_PERIOD", 0), ("TRAIN.CHECKPOINT_PERIOD", 1),
                ("TRAIN.CHECKPOINT_PERIOD_ITERS", 0), ("TRAIN.KEEP_CHECKPOINTS", 0),
                ("TRAIN.ACCUM_STEPS", 1)]
    non_negative = ["MODEL.FC_INIT_STD", "BN.WEIGHT_DECAY", "DATA.TARGET_FPS", "SOLVER.MOMENTUM", "SOLVER.DAMPENING",
                    "SOLVER.WEIGHT_DECAY", "SOLVER.WARMUP_EPOCHS", "SOLVER.WARMUP_START_LR", "SOLVER.COSINE_END_LR",
                    "SOLVER.CLIP_GRAD_L2NORM", "DATA.DECODE_TIMEOUT_S"]
    positive = ["BN.EPS", "NONLOCAL.INNER_RATIO", "GC.RATIO", "SE.RATIO"]
    value = lambda name: cfg[name.split(".")[0]][name.split(".")[1]] if "." in name else cfg[name]  # noqa: E731
    problems += [f"{n} must be >= {lo}, got {value(n)}" for n, lo in at_least if value(n) < lo]
    problems += [f"{n} must be >= 0, got {value(n)}" for n in non_negative if value(n) < 0]
    problems += [f"{n} must be > 0, got {value(n)}" for n in positive if value(n) <= 0]
    if not 0.0 <= cfg.BN.MOMENTUM <= 1.0:
        problems.append(f"BN.MOMENTUM must be in [0, 1], got {cfg.BN.MOMENTUM}")
    if not 0.0 <= cfg.TRAIN.LABEL_SMOOTHING < 1.0:
        problems.append(f"TRAIN.LABEL_SMOOTHING must be in [0, 1), got {cfg.TRAIN.LABEL_SMOOTHING}")
    if cfg.DATA.TRAIN_JITTER_SCALES and min(cfg.DATA.TRAIN_JITTER_SCALES) < 1:
        problems.append(f"DATA.TRAIN_JITTER_SCALES must be >= 1, got {cfg.DATA.TRAIN_JITTER_SCALES}")
    if any(min(p, default=1) < 1 for p in cfg.NONLOCAL.POOL):
        problems.append(f"NONLOCAL.POOL kernels must be >= 1, got {cfg.NONLOCAL.POOL}")
    if any(min(loc, default=0) < 0 for loc in cfg.NONLOCAL.LOCATION):
        problems.append(f"NONLOCAL.LOCATION block indices must be >= 0, got {cfg.NONLOCAL.LOCATION}")
    if cfg.RESNET.DEPTH in (18, 34) and cfg.RESNET.NUM_GROUPS != 1:
        problems.append(f"RESNET.NUM_GROUPS must be 1 for the basic blocks of ResNet-{cfg.RESNET.DEPTH}, got "
                        f"{cfg.RESNET.NUM_GROUPS}")
    if cfg.SOLVER.NESTEROV and (cfg.SOLVER.MOMENTUM <= 0 or cfg.SOLVER.DAMPENING != 0):
        problems.append(f"SOLVER.NESTEROV needs SOLVER.MOMENTUM > 0 and SOLVER.DAMPENING 0, got "
                        f"{cfg.SOLVER.MOMENTUM} and {cfg.SOLVER.DAMPENING}")
    steps = cfg.SOLVER.STEPS
    if cfg.SOLVER.LR_POLICY == "steps_with_relative_lrs" and steps and (
            steps[0] != 0 or any(b <= a for a, b in zip(steps, steps[1:]))):
        problems.append(f"SOLVER.STEPS must start at 0 and increase, got {steps}")
    if cfg.TRAIN.ACCUM_STEPS >= 1 and cfg.TRAIN.BATCH_SIZE % cfg.TRAIN.ACCUM_STEPS:
        problems.append(f"TRAIN.BATCH_SIZE {cfg.TRAIN.BATCH_SIZE} (the global batch) must split into TRAIN.ACCUM_STEPS "
                        f"{cfg.TRAIN.ACCUM_STEPS} equal micro-batches on every rank, so it must be a multiple of "
                        f"ACCUM_STEPS x the world size")
    if cfg.TRAIN.CHECKPOINT_INFLATE and not cfg.TRAIN.CHECKPOINT_FILE_PATH:
        problems.append("TRAIN.CHECKPOINT_INFLATE needs TRAIN.CHECKPOINT_FILE_PATH (the 2D weights to inflate)")
    bad_fusion = [f for f in cfg.GC.FUSION if f not in ("channel_add", "channel_mul")]
    if bad_fusion or not cfg.GC.FUSION:
        problems.append(f"GC.FUSION takes channel_add and/or channel_mul, got {cfg.GC.FUSION}")
    problems += _label_problems(cfg)
    if problems:
        raise ConfigError("Invalid config: " + "; ".join(problems) + ".")


def _label_problems(cfg: CfgNode) -> list[str]:
    """Consistency of multi-label mode, loss, test activation and class weights."""
    problems = []
    if cfg.DATA.MULTI_LABEL and cfg.MODEL.LOSS_FUNC != "bce_logit":
        problems.append("DATA.MULTI_LABEL True needs MODEL.LOSS_FUNC bce_logit (a softmax cannot score several "
                        f"labels), got {cfg.MODEL.LOSS_FUNC}")
    if cfg.DATA.MULTI_LABEL and cfg.MODEL.HEAD_ACT != "sigmoid":
        problems.append(f"DATA.MULTI_LABEL True needs MODEL.HEAD_ACT sigmoid (per-class test scores for mAP), got "
                        f"{cfg.MODEL.HEAD_ACT}")
    if cfg.DATA.MULTI_LABEL and cfg.DATA.PATH_LABEL_SEPARATOR == ",":
        problems.append("DATA.PATH_LABEL_SEPARATOR ',' is ambiguous with comma-separated labels in DATA.MULTI_LABEL "
                        "lists; use a space, a tab or ';'")
    if cfg.MODEL.LOSS_FUNC == "bce_logit" and cfg.TRAIN.LABEL_SMOOTHING > 0:
        problems.append("TRAIN.LABEL_SMOOTHING applies to MODEL.LOSS_FUNC cross_entropy only")
    weights = cfg.MODEL.CLASS_WEIGHTS
    if isinstance(weights, str):
        if weights != "balanced":
            problems.append(f"MODEL.CLASS_WEIGHTS takes [], a list of floats or balanced, got {weights!r}")
    elif not isinstance(weights, (list, tuple)) or any(
            isinstance(w, bool) or not isinstance(w, (int, float)) or w < 0 for w in weights):
        problems.append(f"MODEL.CLASS_WEIGHTS takes [], a list of floats >= 0 or balanced, got {weights!r}")
    elif weights and (len(weights) != cfg.MODEL.NUM_CLASSES or max(weights) <= 0):
        problems.append(f"MODEL.CLASS_WEIGHTS needs one weight per class (MODEL.NUM_CLASSES {cfg.MODEL.NUM_CLASSES}), "
                        f"not all zero, got {len(weights)} values")
    return problems
