"""What an exported graph computes: its attention ops and the attention score maps it materialises.

A non-local block's score map is one ``Lq × Lk`` matrix per attention sequence (queries × pooled keys, see
:func:`score_map_sizes`). Eager inference keeps it inside one fused ``scaled_dot_product_attention`` kernel
(softmax, gaussian) or never forms it (dot product by associativity); only the concatenation instantiation
builds it. An exported graph must not materialise more than eager does: :func:`check_graph` collects the
shapes of every intermediate value of the artifact's graph (exported-program node metadata, ONNX shape
inference, TorchScript trace types) and of the eager forward (every ATen op output, recorded below autograd),
and reports score-map shaped values (rank 3–4 with trailing dims ``(Lq, Lk)``) that eager never produces.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from ..models.context import NonLocalBlock

Shape = tuple[Any, ...]
Signature = tuple[int, int, int]  # (rank, Lq, Lk)

#: the node kinds that run fused attention in each format
ATTENTION_OPS = {"exported": ("aten.scaled_dot_product_attention",), "onnx": ("Attention",),
                 "torchscript": ("aten::scaled_dot_product_attention",)}


@dataclass
class GraphReport:
    """``attention_ops`` fused attention nodes in the artifact (``expected``: softmax/gaussian NL blocks on the
    fast path); ``materialised``: score-map shapes in the artifact that eager inference never forms."""

    attention_ops: int
    expected_attention_ops: int
    materialised: list[Shape] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.materialised and self.attention_ops >= self.expected_attention_ops


def score_map_sizes(model: nn.Module, clip: torch.Tensor) -> dict[str, tuple[int, int]]:
    """``(Lq, Lk)`` of each non-local block's score map for ``clip`` (one eager forward with hooks)."""
    sizes: dict[str, tuple[int, int]] = {}
    hooks = []
    for name, module in model.named_modules():
        if isinstance(module, NonLocalBlock):
            def hook(mod: NonLocalBlock, args: tuple, _out: Any, name: str = name) -> None:
                t, h, w = args[0].shape[2:]
                tk, hk, wk = mod.key_grid(t, h, w)
                tq, tk = t // mod.groups, tk // mod.groups
                sizes[name] = {"spacetime": (tq * h * w, tk * hk * wk), "space": (h * w, hk * wk),
                               "time": (tq, tk)}[mod.mode]
            hooks.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(clip)
    finally:
        for h in hooks:
            h.remove()
    return sizes


def expected_attention_ops(model: nn.Module) -> int:
    """Non-local blocks whose eager inference runs fused attention (softmax/gaussian on the fast path)."""
    return sum(1 for m in model.modules() if isinstance(m, NonLocalBlock) and m.fast_path
               and m.instantiation in ("softmax", "gaussian"))


class _ShapeRecorder(TorchDispatchMode):
    """Records the shape of every ATen op output (below autograd, so fused kernels are one op)."""

    def __init__(self) -> None:
        super().__init__()
        self.shapes: list[Shape] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        out = func(*args, **(kwargs or {}))
        self.shapes.extend(tuple(t.shape) for t in tree_leaves(out) if isinstance(t, torch.Tensor))
        return out


def eager_shapes(model: nn.Module, clip: torch.Tensor) -> list[Shape]:
    """Shapes of all intermediate values of ``model(clip)`` in eval/no-grad (the inference path)."""
    recorder = _ShapeRecorder()
    with torch.no_grad(), recorder:
        model.eval()(clip)
    return recorder.shapes


def program_shapes(program: torch.export.ExportedProgram) -> list[Shape]:
    """Shapes of the exported program's node values (symbolic sizes kept as strings)."""
    shapes = []
    for node in program.graph.nodes:
        for value in tree_leaves(node.meta.get("val")):
            if isinstance(value, torch.Tensor):
                shapes.append(tuple(int(d) if isinstance(d, int) else str(d) for d in value.shape))
    return shapes


def onnx_shapes(model: Any) -> list[Shape]:
    """Shapes of the ONNX graph's values after shape inference (named dims as strings)."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    shapes = []
    for info in [*inferred.graph.value_info, *inferred.graph.output]:
        dims = info.type.tensor_type.shape.dim
        shapes.append(tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims))
    return shapes


def torchscript_shapes(module: torch.jit.ScriptModule) -> list[Shape]:
    """Shapes recorded by the trace on the inlined graph's tensor values."""
    shapes = []
    for node in module.inlined_graph.nodes():
        for value in node.outputs():
            kind = value.type()
            if isinstance(kind, torch._C.TensorType):
                sizes = kind.varyingSizes()
                if sizes is not None:
                    shapes.append(tuple(d if d is not None else "?" for d in sizes))
    return shapes


def node_kinds(fmt: str, graph: Any) -> list[str]:
    """The op of every node: ``aten.x.overload`` (exported), ONNX op types, ``aten::x`` (TorchScript)."""
    if fmt == "exported":
        return [str(n.target) for n in graph.graph.nodes if n.op == "call_function"]
    if fmt == "onnx":
        return [n.op_type for n in graph.graph.node]
    return [n.kind() for n in graph.inlined_graph.nodes()]


def graph_shapes(fmt: str, graph: Any) -> list[Shape]:
    """Intermediate value shapes of a ``fmt`` graph (see the ``*_shapes`` functions)."""
    return {"exported": program_shapes, "onnx": onnx_shapes, "torchscript": torchscript_shapes}[fmt](graph)


def score_map_signatures(shapes: Iterable[Shape], sizes: Iterable[tuple[int, int]]) -> dict[Signature, Shape]:
    """Values shaped like a score map (rank 3–4, trailing ``(Lq, Lk)`` of some block), by (rank, Lq, Lk)."""
    wanted = set(sizes)
    found: dict[Signature, Shape] = {}
    for shape in shapes:
        if 3 <= len(shape) <= 4 and tuple(shape[-2:]) in wanted:
            found.setdefault((len(shape), shape[-2], shape[-1]), shape)
    return found


def check_graph(fmt: str, graph: Any, model: nn.Module, clip: torch.Tensor) -> GraphReport:
    """Compare the exported ``graph`` (ExportedProgram, onnx.ModelProto or ScriptModule) of ``model`` with
    eager inference on ``clip``: count fused attention nodes and list score maps eager does not form."""
    sizes = score_map_sizes(model, clip).values()
    eager = score_map_signatures(eager_shapes(model, clip), sizes)
    exported = score_map_signatures(graph_shapes(fmt, graph), sizes)
    kinds = node_kinds(fmt, graph)
    attention = sum(1 for k in kinds if any(k == op or k.startswith(op + ".") for op in ATTENTION_OPS[fmt]))
    return GraphReport(attention_ops=attention, expected_attention_ops=expected_attention_ops(model),
                       materialised=[shape for sig, shape in exported.items() if sig not in eager])
