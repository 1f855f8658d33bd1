"""Caffe2 ``.pkl`` models of the original non-local release (facebookresearch/video-nonlocal-net).

The pickle is a dict ``{"blobs": {name: numpy array}}`` (Python 2, read with latin1). It is read by a
restricted unpickler that can only rebuild numpy arrays, dtypes and scalars: any other global (``os.system``,
``builtins.eval``, ...) is refused with :class:`~video_nl.utils.io.UnsafeFileError` before anything runs.

Blob names: ``conv1_w`` and ``res_conv1_bn_{s,b,rm,riv}`` (stem); ``res{s}_{i}_branch2{a,b,c}_w`` and
``..._branch2{a,b,c}_bn_{s,b,rm,riv}``; ``res{s}_{i}_branch1_w`` / ``_branch1_bn_*`` (shortcut);
``nonlocal_conv{s}_{i}_{theta,phi,g,out}_{w,b}`` and ``nonlocal_conv{s}_{i}_bn_*`` (the non-local block after
``res{s}_{i}``); ``pred_{w,b}`` (classifier, 2-D or 5-D). ``*_momentum``, ``lr`` and ``model_iter`` are
training state and are skipped. ``_s, _b, _rm, _riv`` are BN scale, shift, running mean and running variance.
"""
from __future__ import annotations

import os
import pickle
import re
from typing import BinaryIO

import numpy as np
import torch

from ...errors import UserError
from ...utils.io import UnsafeFileError
from .common import NL_PARTS, SourceFormat, WeightImportError, per_key

# The only globals a pickle of numpy arrays needs (numpy 1.x and 2.x module paths; ``_codecs.encode``
# rebuilds bytes in protocol-2 pickles written by Python 3).
_SAFE_GLOBALS = {
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),
}
_BN = {"s": "weight", "b": "bias", "rm": "running_mean", "riv": "running_var"}
_PARAM = {"w": "weight", "b": "bias"}

_STEM_CONV = re.compile(r"^conv1_w$")
_STEM_BN = re.compile(r"^res_conv1_bn_(?P<bn>s|b|rm|riv)$")
_RES = re.compile(r"^res(?P<stage>[2-5])_(?P<index>\d+)_(?P<branch>branch1|branch2[abc])"
                  r"(?:_(?P<param>w|b)|_bn_(?P<bn>s|b|rm|riv))$")
_NL = re.compile(r"^nonlocal_conv(?P<stage>[2-5])_(?P<index>\d+)_"
                 r"(?:(?P<part>theta|phi|g|out)_(?P<param>w|b)|bn_(?P<bn>s|b|rm|riv))$")
_PRED = re.compile(r"^pred_(?P<param>w|b)$")


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """An unpickler that resolves only :data:`_SAFE_GLOBALS`."""

    def __init__(self, file: BinaryIO, *, path: str) -> None:
        super().__init__(file, encoding="latin1")
        self.path = path

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in _SAFE_GLOBALS:
            raise UnsafeFileError(f"Refused to load {self.path}: the pickle asks for the global {module}.{name}, "
                                  f"which could run code. Caffe2 model files only contain numpy arrays; only "
                                  f"numpy array reconstruction is allowed.")
        if module.startswith("numpy.core.") and hasattr(np, "_core"):
            module = "numpy._core." + module[len("numpy.core."):]  # numpy 2 moved numpy.core to numpy._core
        return super().find_class(module, name)


def read_blobs(path: str) -> dict[str, torch.Tensor]:
    """The numeric blobs of a Caffe2 ``.pkl`` (``{"blobs": {...}}`` or a flat dict) as tensors.

    Raises:
        UnsafeFileError: the pickle needs a global other than numpy's array reconstruction.
        UserError: the file is missing, not a pickle, or holds no dict of arrays.
    """
    if not os.path.isfile(path):
        raise UserError(f"Caffe2 model file {path} does not exist.")
    with open(path, "rb") as f:
        try:
            obj = _NumpyOnlyUnpickler(f, path=path).load()
        except UnsafeFileError:
            raise
        except Exception as e:  # truncated file, not a pickle, ...
            raise UserError(f"Cannot read {path} as a Caffe2 pickle: {type(e).__name__}: {e}") from None
    blobs = obj.get("blobs", obj) if isinstance(obj, dict) else None
    if not isinstance(blobs, dict) or not blobs:
        raise WeightImportError(f"{path} is not a Caffe2 model file: expected a dict of numpy arrays under 'blobs'.")
    out = {}
    for name, value in blobs.items():
        array = np.asarray(value)
        if array.dtype.kind not in "biuf":
            raise WeightImportError(f"Blob {name} in {path} is not numeric (dtype {array.dtype}).")
        out[str(name)] = torch.from_numpy(np.ascontiguousarray(array))
    return out


def rename_blob(name: str) -> str | None:
    """The video_nl key of one Caffe2 blob (None when it has no counterpart)."""
    if _STEM_CONV.match(name):
        return "stem.conv.weight"
    if m := _STEM_BN.match(name):
        return f"stem.bn.{_BN[m['bn']]}"
    if m := _RES.match(name):
        block = f"s{m['stage']}.block{m['index']}"
        if m["branch"] == "branch1":
            module = "shortcut.bn" if m["bn"] else "shortcut.conv"
        else:
            module = f"{'bn' if m['bn'] else 'conv'}_{m['branch'][-1]}"
        return f"{block}.{module}.{_BN[m['bn']] if m['bn'] else _PARAM[m['param']]}"
    if m := _NL.match(name):
        block = f"s{m['stage']}.nl{m['index']}"
        if m["bn"]:
            return f"{block}.{NL_PARTS['bn']}.{_BN[m['bn']]}"
        return f"{block}.{NL_PARTS[m['part']]}.{_PARAM[m['param']]}"
    if m := _PRED.match(name):
        return f"head.fc.{_PARAM[m['param']]}"
    return None


FORMAT = SourceFormat(
    name="caffe2",
    input_convention="rgb_0.45_0.225",
    read=read_blobs,
    rename=per_key(rename_blob),
    bookkeeping=lambda name: name.endswith("_momentum") or name in ("lr", "model_iter"),
    expected_cfg={"RESNET.STEM_POOL_PADDING": False},
    notes=("Caffe2's pool1 is unpadded: evaluate with RESNET.STEM_POOL_PADDING False.",),
)
