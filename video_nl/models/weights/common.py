"""Shared machinery of the weight importers: reading state dicts, renaming, shape checks, reporting.

An importer (one module per source) describes a checkpoint layout as a :class:`SourceFormat`: how to read
the file, how to rename each source key to a video_nl key, which source keys are bookkeeping (skipped on
purpose) and which model keys the source never has (left initialised on purpose). :func:`import_weights`
applies it to a model and returns an :class:`ImportReport` listing every key that was not carried over.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch

from ...errors import UserError
from ...utils.io import safe_torch_load

NUM_BATCHES = "num_batches_tracked"

# The non-local block's sub-modules by role (query, key, value, output projection, output BN): the names used
# in video_nl's ``s{n}.nl{i}`` blocks. Importers map their source's names onto these roles.
NL_PARTS = {"theta": "conv_theta", "phi": "conv_phi", "g": "conv_g", "out": "conv_out", "bn": "bn"}

# Input conventions (what the source network was trained on). All are RGB in [0, 1] before normalisation.
CONVENTIONS: dict[str, dict] = {
    "rgb_0.45_0.225": {"channel_order": "RGB", "scale": "[0,1]", "mean": [0.45, 0.45, 0.45],
                       "std": [0.225, 0.225, 0.225]},
    "rgb_imagenet": {"channel_order": "RGB", "scale": "[0,1]", "mean": [0.485, 0.456, 0.406],
                     "std": [0.229, 0.224, 0.225]},
}

_MODEL_KEY = re.compile(r"^s(?P<stage>[2-5])\.(?P<kind>block|nl|gc|snl|se|lgnn)(?P<index>\d+)\.(?P<rest>.+)$")


class WeightImportError(UserError):
    """A source checkpoint does not fit the model (shape mismatch, partial load, unknown layout)."""


@dataclass(frozen=True)
class SourceFormat:
    """How one source codebase lays out its checkpoints.

    Attributes:
        name: the ``--from`` value.
        input_convention: key of :data:`CONVENTIONS` the source's weights expect.
        read: path -> flat source state dict (tensors).
        rename: source keys -> {source key: video_nl key} for every key it can map.
        bookkeeping: source keys that are not weights of the network (skipped on purpose).
        left_initialised: model keys the source never provides on purpose (e.g. a 2D classifier).
        synthesise: model state -> {video_nl key: tensor} for model keys implied by the source
            (e.g. a zero bias where the source conv has none).
        inflate: 2D kernels may be inflated to the model's 3D kernels (repeat over time, divide by T).
        expected_cfg: config values (``SECTION.KEY``) the converted weights need, besides the architecture.
        notes: differences from the source that the weights alone cannot express.
    """

    name: str
    input_convention: str
    read: Callable[[str], dict[str, torch.Tensor]]
    rename: Callable[[list[str]], dict[str, str]]
    bookkeeping: Callable[[str], bool] = lambda key: False
    left_initialised: Callable[[str], bool] = lambda key: False
    synthesise: Callable[[Mapping[str, torch.Tensor], Mapping[str, torch.Tensor]], dict[str, torch.Tensor]] = (
        lambda source, model: {})
    inflate: bool = False
    expected_cfg: Mapping[str, object] = field(default_factory=dict)
    notes: tuple[str, ...] = ()


@dataclass
class ImportReport:
    """The outcome of an import: the full model state plus every key that did not map one-to-one."""

    model_state: dict[str, torch.Tensor]
    mapped: dict[str, str] = field(default_factory=dict)  # source key -> model key
    unmapped_source_keys: list[str] = field(default_factory=list)
    skipped_source_keys: list[str] = field(default_factory=list)
    missing_model_keys: list[str] = field(default_factory=list)
    left_initialised_keys: list[str] = field(default_factory=list)
    synthesised_keys: list[str] = field(default_factory=list)
    inflated_keys: list[str] = field(default_factory=list)

    def summary_lines(self) -> list[str]:
        """Human-readable report: counts, then every key in each non-empty category."""
        lines = [f"mapped {len(self.mapped)} source tensors onto {len(self.model_state)} model tensors"
                 + (f" ({len(self.inflated_keys)} kernels inflated)" if self.inflated_keys else "")]
        for title, keys in (("unmapped source keys", self.unmapped_source_keys),
                            ("skipped source keys (bookkeeping or intentionally not loaded)", self.skipped_source_keys),
                            ("missing model keys", self.missing_model_keys),
                            ("model keys left initialised on purpose", self.left_initialised_keys),
                            ("model keys synthesised (implied by the source)", self.synthesised_keys)):
            if keys:
                lines.append(f"{title} ({len(keys)}):")
                lines.extend(f"  {k}" for k in keys)
        return lines


def unwrap_state_dict(obj: object, *, path: str) -> dict[str, torch.Tensor]:
    """The state dict inside a loaded checkpoint: ``model_state``, ``state_dict`` or the dict itself.

    Strips a DataParallel/DDP ``module.`` prefix when every key has it.
    """
    if isinstance(obj, dict):
        for wrapper in ("model_state", "state_dict", "model"):
            if isinstance(obj.get(wrapper), dict):
                obj = obj[wrapper]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightImportError(f"{path} holds no state dict: expected a dict of tensors, or one under "
                                f"'model_state' or 'state_dict'.")
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return dict(obj)


def read_torch_state(path: str) -> dict[str, torch.Tensor]:
    """Read a torch checkpoint safely (``weights_only``) and unwrap its state dict."""
    return unwrap_state_dict(safe_torch_load(path), path=path)


def per_key(rename_key: Callable[[str], str | None]) -> Callable[[list[str]], dict[str, str]]:
    """A :attr:`SourceFormat.rename` from a function renaming one key at a time (None = no counterpart)."""
    return lambda keys: {k: v for k in keys if (v := rename_key(k)) is not None}


def is_bn_counter(key: str) -> bool:
    """BatchNorm's ``num_batches_tracked``: training bookkeeping, never required from a source."""
    return key.endswith("." + NUM_BATCHES)


def split_model_key(key: str) -> tuple[int, str, int, str] | None:
    """``s3.block1.conv_a.weight`` -> (3, 'block', 1, 'conv_a.weight'); None for stem/head/pool keys."""
    m = _MODEL_KEY.match(key)
    return (int(m["stage"]), m["kind"], int(m["index"]), m["rest"]) if m else None


def is_inflatable(source: torch.Size, target: torch.Size) -> bool:
    """A 2D kernel (O×I×kh×kw, or O×I×1×kh×kw) that becomes the 3D kernel O×I×T×kh×kw by inflation."""
    if len(target) != 5 or len(source) not in (4, 5) or (len(source) == 5 and source[2] != 1):
        return False
    return tuple(source[:2]) == tuple(target[:2]) and tuple(source[-2:]) == tuple(target[-2:])


def inflate_kernel(kernel: torch.Tensor, time: int) -> torch.Tensor:
    """Repeat a 2D kernel ``time`` times along a new temporal axis and divide by ``time``.

    On a clip whose frames are all the same image, the inflated conv then computes the 2D conv's
    output at every frame whose temporal window lies inside the clip.
    """
    if kernel.dim() == 4:
        kernel = kernel.unsqueeze(2)
    return kernel.repeat(1, 1, time, 1, 1) / time


def _fit(source: torch.Tensor, target: torch.Tensor, *, key: str, model_key: str, inflate: bool
         ) -> tuple[torch.Tensor, bool]:
    """``source`` shaped like ``target``: as is, reshaped (singleton dims only) or inflated."""
    source = source.detach().to(target.dtype)
    if source.shape == target.shape:
        return source.clone(), False
    if [d for d in source.shape if d != 1] == [d for d in target.shape if d != 1]:
        return source.reshape(target.shape).clone(), False  # e.g. a 1x1x1-conv classifier into a Linear
    if inflate and is_inflatable(source.shape, target.shape):
        return inflate_kernel(source, target.shape[2]), True
    raise WeightImportError(f"Shape mismatch: source key {key} has shape {tuple(source.shape)} but model key "
                            f"{model_key} has shape {tuple(target.shape)}. Check that --cfg describes the same "
                            f"architecture as the checkpoint (RESNET.DEPTH, MODEL.ARCH, MODEL.NUM_CLASSES, "
                            f"NONLOCAL.LOCATION).")


def import_weights(fmt: SourceFormat, source: Mapping[str, torch.Tensor],
                   model_state: Mapping[str, torch.Tensor]) -> ImportReport:
    """Map ``source`` onto a copy of ``model_state`` following ``fmt``; never raises for missing keys.

    Raises:
        WeightImportError: a shape mismatch, or two source keys mapping to the same model key.
    """
    state = {k: v.detach().clone() for k, v in model_state.items()}
    report = ImportReport(model_state=state)
    renamed = fmt.rename(list(source))
    covered: dict[str, str] = {}
    for key in source:
        target = renamed.get(key)
        if target is None or target not in state:
            (report.skipped_source_keys if fmt.bookkeeping(key) or is_bn_counter(key)
             else report.unmapped_source_keys).append(key)
            continue
        if target in covered:
            raise WeightImportError(f"Source keys {covered[target]} and {key} both map to model key {target}.")
        state[target], inflated = _fit(source[key], state[target], key=key, model_key=target, inflate=fmt.inflate)
        covered[target] = key
        if inflated:
            report.inflated_keys.append(target)
    report.mapped = {src: dst for dst, src in covered.items()}
    for key, value in fmt.synthesise(source, state).items():
        if key in state and key not in covered:
            state[key] = value.to(state[key].dtype).reshape(state[key].shape)
            covered[key] = "<synthesised>"
            report.synthesised_keys.append(key)
    for key in state:
        if key in covered or is_bn_counter(key):
            continue
        (report.left_initialised_keys if fmt.left_initialised(key) else report.missing_model_keys).append(key)
    return report


def key_listing(keys: list[str]) -> str:
    """The first 8 keys, comma-separated, and how many more."""
    return ", ".join(keys[:8]) + (f" and {len(keys) - 8} more" if len(keys) > 8 else "")


def check_complete(report: ImportReport, *, what: str, hint: str) -> None:
    """Refuse a partial import: model keys the source does not cover (they would stay randomly initialised)
    or source weights with no place in the model (the network would differ from the source).

    Raises:
        WeightImportError: "{what} does not match the model: {problems}. {hint}".
    """
    problems = []
    if report.missing_model_keys:
        problems.append(f"it does not cover {len(report.missing_model_keys)} model keys "
                        f"({key_listing(report.missing_model_keys)}), which would stay randomly initialised")
    if report.unmapped_source_keys:
        problems.append(f"{len(report.unmapped_source_keys)} of its weights have no place in the model "
                        f"({key_listing(report.unmapped_source_keys)})")
    if problems:
        raise WeightImportError(f"{what} does not match the model: {'; and '.join(problems)}. {hint}")
