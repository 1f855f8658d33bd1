"""Turn an eval model into a torch.export program, an ONNX model or a TorchScript module.

Every exporter traces the model under ``torch.no_grad()``, so the non-local blocks take the same inference
fast path as ``video-nl test`` (``scaled_dot_product_attention`` for softmax/gaussian, associativity for dot
product) and not the CPU training path. Only the batch dimension can be dynamic: T, H and W fix the head's
pooling window and the non-local key grids, so they are static (export once per clip size).

* ``exported``: ``torch.export.export`` (strict=False), the pre-dispatch ATen graph; SDPA stays one
  ``aten.scaled_dot_product_attention`` node.
* ``onnx``: ``torch.onnx.export(dynamo=True)`` (onnxscript's translation of the same exported program),
  opset 23 by default, where SDPA becomes one ONNX ``Attention`` node; with opset 18–22 ONNX has no
  attention op and the exporter writes MatMul → Softmax → MatMul, which materialises the score map.
* ``torchscript``: ``torch.jit.trace`` (deprecated by PyTorch, kept for older deployments); SDPA stays one
  ``aten::scaled_dot_product_attention`` node.
"""
from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from ..errors import UserError
from .artifact import EXPORT_HINT, INPUT_NAME, OUTPUT_NAME

MIN_OPSET, DEFAULT_OPSET = 18, 23


def _dynamic_shapes(dynamic_batch: bool) -> tuple | None:
    return ({0: torch.export.Dim("batch", min=1)},) if dynamic_batch else None


@contextlib.contextmanager
def _quiet_loggers(*names: str) -> Iterator[None]:
    """Raise the given loggers to ERROR for the duration (the ONNX exporter's progress and optimiser notes)."""
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def export_program(model: nn.Module, example: torch.Tensor, *, dynamic_batch: bool) -> torch.export.ExportedProgram:
    """``torch.export.export`` of ``model(example)`` (batch dimension dynamic when asked)."""
    with torch.no_grad():
        return torch.export.export(model.eval(), (example,), dynamic_shapes=_dynamic_shapes(dynamic_batch),
                                   strict=False)


def export_onnx(model: nn.Module, example: torch.Tensor, *, dynamic_batch: bool, opset: int = DEFAULT_OPSET) -> Any:
    """An ``onnx.ModelProto`` of ``model`` (input ``video``, output ``logits``) at ``opset`` (≥ 18)."""
    if opset < MIN_OPSET:
        raise UserError(f"--opset {opset} is too old: the torch.onnx exporter writes opset {MIN_OPSET} or newer.")
    try:
        import onnxscript  # noqa: F401 - the dynamo exporter's translation library
    except ImportError:
        raise UserError(EXPORT_HINT) from None
    log = io.StringIO()
    with torch.no_grad(), contextlib.redirect_stdout(log), _quiet_loggers("onnxscript", "torch.onnx"), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")  # exporter notes on version conversion and deprecated paths
        program = torch.onnx.export(model.eval(), (example,), dynamo=True, opset_version=opset,
                                    input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                    dynamic_shapes=_dynamic_shapes(dynamic_batch), optimize=True, verbose=False)
    if program is None:
        raise UserError(f"torch.onnx.export produced no model. Exporter log:\n{log.getvalue()[-2000:]}")
    return program.model_proto


def export_torchscript(model: nn.Module, example: torch.Tensor) -> torch.jit.ScriptModule:
    """``torch.jit.trace`` of ``model(example)``; tracer and deprecation warnings are silenced (the result is
    checked against eager by the caller)."""
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.jit.trace(model.eval(), example, check_trace=False)


def export(fmt: str, model: nn.Module, example: torch.Tensor, *, dynamic_batch: bool,
           opset: int = DEFAULT_OPSET) -> Any:
    """The ``fmt`` (``exported``, ``onnx``, ``torchscript``) export of ``model``."""
    if fmt == "exported":
        return export_program(model, example, dynamic_batch=dynamic_batch)
    if fmt == "onnx":
        return export_onnx(model, example, dynamic_batch=dynamic_batch, opset=opset)
    if fmt == "torchscript":
        return export_torchscript(model, example)
    raise UserError(f"Unknown export format {fmt!r}; one of exported, onnx, torchscript.")
