"""Exported model files ("artifacts") and the metadata that makes them usable without the config.

Three formats, each holding the same JSON metadata (:func:`build_meta`) under the name ``video_nl.json``:

* ``exported`` — a ``torch.export`` program (``.pt2``, ``torch.export.save``; metadata in its extra files);
* ``onnx`` — an ONNX model (metadata in ``metadata_props``, key ``video_nl.json``), run with onnxruntime;
* ``torchscript`` — a traced TorchScript module (metadata in ``_extra_files``).

The metadata carries the class names and the input convention (frames, sampling rate, crop size, clips ×
crops, mean/std on [0, 1] RGB, ensemble method; :func:`input_settings`) so that ``video-nl predict --model
FILE`` needs no config. Every artifact takes one float32 input ``B×3×T×H×W`` (``video``) and returns ``B×K``
(``logits``: the model's output, log mean-probabilities when the clip is larger than the training window).
Artifacts are written atomically. Load only artifacts you trust: TorchScript and ``.pt2`` files are
deserialised by torch (not sandboxed).
"""
from __future__ import annotations

import copy
import json
import os
import warnings
import zipfile
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from ..errors import UserError
from ..utils.io import atomic_write

FORMATS = ("exported", "onnx", "torchscript")
EXTENSIONS = {"exported": ".pt2", "onnx": ".onnx", "torchscript": ".ts"}
META_NAME = "video_nl.json"
META_VERSION = 1
INPUT_NAME, OUTPUT_NAME = "video", "logits"
EXPORT_HINT = "ONNX needs the export extra: pip install -e '.[export]' (onnx, onnxruntime, onnxscript)."


#: DATA keys that say where and how to read files rather than what the model sees: they are not stored in
#: an artifact, the running config supplies them. Every other DATA key is part of the input convention.
RUNTIME_DATA_KEYS = frozenset({
    "PATH_TO_DATA_DIR", "PATH_PREFIX", "PATH_LABEL_SEPARATOR", "LIST_FORMAT", "TRAIN_LIST", "VAL_LIST", "TEST_LIST",
    "CLASSNAMES_FILE", "DECODING_BACKEND", "DECODE_THREADS", "DECODE_TIMEOUT_S", "MAX_FAILURE_RATIO",
    "FRAME_INDEX_DIR"})
#: TEST keys of the multi-view convention (views per video and how their scores are combined).
VIEW_TEST_KEYS = ("NUM_ENSEMBLE_VIEWS", "NUM_SPATIAL_CROPS", "ENSEMBLE_METHOD")


def input_settings(cfg: Any, clip: tuple[int, int, int]) -> dict:
    """The config keys that turn a video into the artifact's views: DATA (less :data:`RUNTIME_DATA_KEYS`) and
    the views of TEST, with ``DATA.NUM_FRAMES`` and ``DATA.TEST_CROP_SIZE`` set to the exported clip, and
    ``MODEL.HEAD_ACT`` (softmax or per-class sigmoid scores)."""
    data = {k: v for k, v in cfg.DATA.to_dict().items() if k not in RUNTIME_DATA_KEYS}
    data["NUM_FRAMES"] = clip[0]
    if clip[1] == clip[2]:
        data["TEST_CROP_SIZE"] = clip[1]
    return {"DATA": data, "TEST": {k: cfg.TEST[k] for k in VIEW_TEST_KEYS}, "MODEL": {"HEAD_ACT": cfg.MODEL.HEAD_ACT}}


def apply_input_settings(cfg: Any, meta: dict) -> Any:
    """A copy of ``cfg`` with the artifact's stored input settings (keys this version does not know are
    skipped with a warning: the views may then differ from the ones the model was exported with)."""
    out = copy.deepcopy(cfg)
    unknown = []
    for section, values in meta["config"].items():
        for key, value in values.items():
            if key in out[section]:
                out[section][key] = value
            else:
                unknown.append(f"{section}.{key}")
    if unknown:
        warnings.warn(f"The model file's input settings {unknown} are unknown to this video_nl version "
                      f"({meta.get('video_nl_version')} wrote it); views may differ from its convention.",
                      stacklevel=2)
    return out


def build_meta(cfg: Any, *, fmt: str, model_info: dict, class_names: Sequence[str], clip: tuple[int, int, int],
               batch: int | None, fold_bn: bool, checkpoint: str | None, opset: int | None = None) -> dict:
    """The metadata JSON stored in every artifact (``batch`` None = dynamic batch).

    ``input`` describes the convention for any consumer; ``config`` holds the same as config keys for
    ``video-nl predict --model`` (see :func:`input_settings`)."""
    from .. import __version__

    settings = input_settings(cfg, clip)
    data, test = settings["DATA"], settings["TEST"]
    return {
        "video_nl_artifact": META_VERSION,
        "format": fmt,
        "video_nl_version": __version__,
        "torch_version": torch.__version__.split("+")[0],
        "model": model_info,
        "class_names": list(class_names),
        "input": {"name": INPUT_NAME, "layout": "B,3,T,H,W", "dtype": "float32", "clip": list(clip), "batch": batch,
                  "color": "RGB", "value_range": "[0, 1] before normalisation", "mean": list(data["MEAN"]),
                  "std": list(data["STD"]), "convention": cfg.MODEL.INPUT_CONVENTION,
                  "num_frames": clip[0], "sampling_rate": data["SAMPLING_RATE"], "target_fps": data["TARGET_FPS"],
                  "short_side": data.get("TEST_CROP_SIZE"), "num_clips": test["NUM_ENSEMBLE_VIEWS"],
                  "num_crops": test["NUM_SPATIAL_CROPS"], "clip_offsets": data["TEST_OFFSET_FORMULA"],
                  "ensemble": f"softmax per view, then {test['ENSEMBLE_METHOD']}"},
        "output": {"name": OUTPUT_NAME, "layout": "B,K",
                   "meaning": "logits (log mean-probabilities when the clip is larger than the training window)"},
        "config": settings,
        "fold_bn": fold_bn,
        "checkpoint": checkpoint,
        "opset": opset,
    }


# ---------------------------------------------------------------------------------------------- writing
def save_exported(program: torch.export.ExportedProgram, path: str, meta: dict) -> None:
    """``torch.export.save`` with the metadata as an extra file, atomically."""
    with atomic_write(path, "wb") as f:
        torch.export.save(program, f, extra_files={META_NAME: json.dumps(meta)})


def save_onnx(model: Any, path: str, meta: dict) -> None:
    """An ``onnx.ModelProto`` with the metadata in ``metadata_props``, atomically (single file, < 2 GiB)."""
    onnx = require_onnx()
    for prop in [p for p in model.metadata_props if p.key == META_NAME]:
        model.metadata_props.remove(prop)
    model.metadata_props.add(key=META_NAME, value=json.dumps(meta))
    with atomic_write(path, "wb") as f:
        f.write(model.SerializeToString())
    onnx.checker.check_model(path)


def save_torchscript(module: torch.jit.ScriptModule, path: str, meta: dict) -> None:
    """``torch.jit.save`` with the metadata in ``_extra_files``, atomically."""
    with atomic_write(path, "wb") as f, warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.save's deprecation notice
        torch.jit.save(module, f, _extra_files={META_NAME: json.dumps(meta)})


SAVERS: dict[str, Callable[[Any, str, dict], None]] = {
    "exported": save_exported, "onnx": save_onnx, "torchscript": save_torchscript}


# ---------------------------------------------------------------------------------------------- reading
def require_onnx() -> Any:
    """The ``onnx`` module, or a UserError saying how to install the export extra."""
    try:
        import onnx
    except ImportError:
        raise UserError(EXPORT_HINT) from None
    return onnx


def detect_format(path: str) -> str:
    """``exported``, ``torchscript`` (both zip archives, told apart by their members) or ``onnx``."""
    if not os.path.isfile(path):
        raise UserError(f"Model file {path} does not exist.")
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
        if any(n.endswith("/archive_format") or n.endswith("/models/model.json") for n in names):
            return "exported"
        if any(n.endswith("/data.pkl") for n in names) and any("/code/" in n for n in names):
            return "torchscript"
        raise UserError(f"{path} is a zip archive but neither a torch.export (.pt2) nor a TorchScript file.")
    return "onnx"


def read_meta(path: str) -> dict:
    """The metadata of an artifact, read without loading its model."""
    fmt = detect_format(path)
    if fmt == "onnx":
        onnx = require_onnx()
        try:
            model = onnx.load(path, load_external_data=False)
        except Exception as e:  # noqa: BLE001 - protobuf raises several types for a file that is not ONNX
            raise UserError(f"{path} is not a model file video_nl can read (not .pt2, TorchScript or ONNX): "
                            f"{type(e).__name__}: {str(e)[:200]}") from None
        text = next((p.value for p in model.metadata_props if p.key == META_NAME), None)
    else:
        with zipfile.ZipFile(path) as z:
            member = next((n for n in z.namelist() if n.endswith(f"/extra/{META_NAME}")), None)
            text = z.read(member).decode() if member else None
    if text is None:
        raise UserError(f"{path} is a {fmt} model without video_nl metadata; export it with `video-nl export` "
                        f"(the metadata holds the class names and the input convention).")
    meta = json.loads(text)
    if meta.get("video_nl_artifact", 0) > META_VERSION:
        raise UserError(f"{path} was written by a newer video_nl (artifact version {meta['video_nl_artifact']}); "
                        f"this one reads version {META_VERSION}.")
    return meta


class Artifact:
    """A loaded artifact: ``artifact(x)`` maps a float32 ``B×3×T×H×W`` tensor to ``B×K`` (CPU tensors)."""

    def __init__(self, path: str, *, threads: int | None = None) -> None:
        self.path = path
        self.meta = read_meta(path)
        self.format = self.meta["format"]
        self.clip = tuple(self.meta["input"]["clip"])
        self.batch = self.meta["input"]["batch"]
        self.class_names: list[str] = self.meta["class_names"]
        self._run = _LOADERS[self.format](path, threads or torch.get_num_threads())

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``B×3×T×H×W`` → ``B×K`` for any B (a fixed-batch artifact runs zero-padded chunks of its batch)."""
        if x.dim() != 5 or tuple(x.shape[1:]) != (3, *self.clip):
            raise UserError(f"{self.path} takes B×3×{'×'.join(map(str, self.clip))} clips; got {tuple(x.shape)}.")
        x = x.detach().float().cpu().contiguous()
        if self.batch is None or x.shape[0] == self.batch:
            return self._run(x)
        outs = []
        for start in range(0, x.shape[0], self.batch):
            chunk = x[start:start + self.batch]
            padded = torch.cat([chunk, chunk.new_zeros(self.batch - len(chunk), *chunk.shape[1:])])
            outs.append(self._run(padded)[:len(chunk)])
        return torch.cat(outs)


def _load_exported(path: str, threads: int) -> Callable[[torch.Tensor], torch.Tensor]:
    with open(path, "rb") as f:  # a file object: torch.export.load wants a path ending in .pt2 otherwise
        module = torch.export.load(f).module()

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return module(x)
    return run


def _load_torchscript(path: str, threads: int) -> Callable[[torch.Tensor], torch.Tensor]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load's deprecation notice
        module = torch.jit.load(path, map_location="cpu").eval()

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return module(x)
    return run


def _load_onnx(path: str, threads: int) -> Callable[[torch.Tensor], torch.Tensor]:
    session = onnx_session(path, threads=threads)

    def run(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0])
    return run


def onnx_session(path: str, *, threads: int) -> Any:
    """An onnxruntime CPU session with ``threads`` intra-op threads and all graph optimisations."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise UserError(EXPORT_HINT) from None
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])


_LOADERS: dict[str, Callable[[str, int], Callable[[torch.Tensor], torch.Tensor]]] = {
    "exported": _load_exported, "onnx": _load_onnx, "torchscript": _load_torchscript}


def load_artifact(path: str, *, threads: int | None = None) -> Artifact:
    """Load an artifact written by ``video-nl export`` (format detected from the file)."""
    return Artifact(path, threads=threads)


def relative_difference(ours: torch.Tensor | np.ndarray, reference: torch.Tensor) -> float:
    """``max|ours − reference| / max|reference|`` (the reference's scale; 1 when it is all zeros)."""
    ours = torch.as_tensor(ours, dtype=torch.float64)
    reference = reference.detach().to(torch.float64)
    scale = reference.abs().max().item() or 1.0
    return (ours - reference).abs().max().item() / scale
