"""Video ResNets (C2D, I3D, slow) with context blocks (non-local, GC, SNL, SE, LatentGNN) between blocks.

State-dict layout (a contract, see docs/internals.md): ``stem.{conv,bn}``, stages ``s2``..``s5`` holding
``block{i}`` (``conv_a/bn_a/conv_b/bn_b[/conv_c/bn_c]``, ``shortcut.{conv,bn}``) and, after block ``i``,
a context block ``{prefix}{i}`` (``nl``, ``gc``, ``snl``, ``se``, ``lgnn``); ``pool2`` (no params);
``head.fc``.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import UserError
from .act_checkpoint import checkpoint_block
from .head import ResNetHead
from .stem import VideoStem, conv_out

Norm = Callable[[int], nn.Module]


@dataclass(frozen=True)
class ArchSpec:
    """The temporal design of a video ResNet.

    Attributes:
        stem_kernel: temporal kernel of conv1.
        temporal_basis: per stage (res2..res5), temporal kernels repeated cyclically over the stage's
            blocks (PySlowFast's ``_TEMPORAL_KERNEL_BASIS``); e.g. I3D res3 ``(3, 1)`` → blocks 0, 2 inflated.
        inflate_conv_b: put the temporal kernel on the 3×3 conv (I3D 3×3×3) instead of the first 1×1.
        temporal_pool: the arch has a 2×1×1 max-pool after res2 (still subject to RESNET.TEMPORAL_POOL).
    """

    stem_kernel: int
    temporal_basis: tuple[tuple[int, ...], ...]
    inflate_conv_b: bool = False
    temporal_pool: bool = True

    def temporal_kernels(self, depths: Sequence[int]) -> list[list[int]]:
        """Temporal kernel of every block, per stage."""
        return [[basis[i % len(basis)] for i in range(n)] for basis, n in zip(self.temporal_basis, depths)]


@dataclass(frozen=True)
class ContextSpec:
    """Which context blocks to insert: ``locations`` per stage, built by ``factory(dim, stage)``."""

    type: str
    prefix: str
    locations: Sequence[Sequence[int]]
    factory: Callable[[int, int], nn.Module]


@dataclass
class ContextBlockInfo:
    """One context block of a :class:`VideoResNet` (``name`` like ``s3.nl1``)."""

    name: str
    type: str
    stage: int
    index: int
    channels: int
    module: nn.Module


def _conv(dim_in: int, dim_out: int, kernel: tuple[int, int, int], stride: int = 1, groups: int = 1) -> nn.Conv3d:
    """Bias-free conv with "same" padding and spatial ``stride``."""
    return nn.Conv3d(dim_in, dim_out, kernel, stride=(1, stride, stride), padding=tuple(k // 2 for k in kernel),
                     groups=groups, bias=False)


def _shortcut(dim_in: int, dim_out: int, stride: int, norm: Norm) -> nn.Sequential | None:
    """Type-B projection shortcut (1×1×1 conv + BN) when the shape changes, else None (identity)."""
    if dim_in == dim_out and stride == 1:
        return None
    return nn.Sequential(OrderedDict(conv=_conv(dim_in, dim_out, (1, 1, 1), stride), bn=norm(dim_out)))


class Bottleneck(nn.Module):
    """``conv_a`` (t×1×1) → ``conv_b`` (1×3×3, spatial stride; t×3×3 when inflated) → ``conv_c`` (1×1×1).

    Shapes: ``B×dim_in×T×H×W -> B×dim_out×T×(H/stride)×(W/stride)``. ReLU after the residual sum.
    """

    def __init__(self, *, dim_in: int, dim_out: int, dim_inner: int, stride: int, temporal_kernel: int,
                 inflate_conv_b: bool, groups: int, norm: Norm) -> None:
        super().__init__()
        ta, tb = (1, temporal_kernel) if inflate_conv_b else (temporal_kernel, 1)
        self.conv_a = _conv(dim_in, dim_inner, (ta, 1, 1))
        self.bn_a = norm(dim_inner)
        self.conv_b = _conv(dim_inner, dim_inner, (tb, 3, 3), stride, groups)
        self.bn_b = norm(dim_inner)
        self.conv_c = _conv(dim_inner, dim_out, (1, 1, 1))
        self.bn_c = norm(dim_out)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = _shortcut(dim_in, dim_out, stride, norm)

    @property
    def final_bn(self) -> nn.Module:
        """The BN before the residual sum (zero-initialised with RESNET.ZERO_INIT_FINAL_BN)."""
        return self.bn_c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.shortcut is None else self.shortcut(x)
        out = self.relu(self.bn_a(self.conv_a(x)))
        out = self.relu(self.bn_b(self.conv_b(out)))
        out = self.bn_c(self.conv_c(out))
        return self.relu(out + identity)


class BasicBlock(nn.Module):
    """``conv_a`` (t×3×3, spatial stride) → ``conv_b`` (1×3×3); ReLU after the residual sum.

    Shapes: ``B×dim_in×T×H×W -> B×dim_out×T×(H/stride)×(W/stride)``.
    """

    def __init__(self, *, dim_in: int, dim_out: int, stride: int, temporal_kernel: int, norm: Norm) -> None:
        super().__init__()
        self.conv_a = _conv(dim_in, dim_out, (temporal_kernel, 3, 3), stride)
        self.bn_a = norm(dim_out)
        self.conv_b = _conv(dim_out, dim_out, (1, 3, 3))
        self.bn_b = norm(dim_out)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = _shortcut(dim_in, dim_out, stride, norm)

    @property
    def final_bn(self) -> nn.Module:
        """The BN before the residual sum (zero-initialised with RESNET.ZERO_INIT_FINAL_BN)."""
        return self.bn_b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.shortcut is None else self.shortcut(x)
        out = self.relu(self.bn_a(self.conv_a(x)))
        out = self.bn_b(self.conv_b(out))
        return self.relu(out + identity)


class ResStage(nn.Sequential):
    """One ResNet stage: children ``block0, block1, ...`` with context blocks ``{prefix}{i}`` after block i,
    run in that order. Only block 0 changes the shape (channels, spatial stride).

    With ``act_checkpoint`` every child is activation-checkpointed when gradients are on
    (:func:`video_nl.models.act_checkpoint.checkpoint_block`: BN running statistics are updated once), except
    the last one when ``checkpoint_last`` is False: the network's last stage sets that, because backward starts
    by rebuilding that child's activations, so checkpointing it would cost one more forward and save no peak
    memory (as ``torch.utils.checkpoint.checkpoint_sequential`` leaves its last segment alone).
    """

    def __init__(self, children: OrderedDict[str, nn.Module], *, act_checkpoint: bool = False,
                 checkpoint_last: bool = True) -> None:
        super().__init__(children)
        self.act_checkpoint = act_checkpoint
        self.checkpoint_last = checkpoint_last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        checkpointing = self.act_checkpoint and torch.is_grad_enabled()
        last = len(self) - 1
        for i, module in enumerate(self):
            plain = not checkpointing or (i == last and not self.checkpoint_last)
            x = module(x) if plain else checkpoint_block(module, x)
        return x


class VideoResNet(nn.Module):
    """A video ResNet: stem → res2 → pool2 → res3 → res4 → res5 → head.

    Shapes: ``B×3×T×H×W -> B×K`` (see :class:`ResNetHead` for the eval-mode fully-convolutional output).
    Stage widths: inner ``width·groups·2^j`` and output ``width·2^j`` (× 4 for bottlenecks), j = 0..3;
    res3..res5 have spatial stride 2 on their first block.

    Args:
        depths: residual blocks per stage res2..res5.
        bottleneck: bottleneck blocks (ResNet-50+) or basic blocks (ResNet-18/34).
        width: stem channels and res2 inner width (RESNET.WIDTH_PER_GROUP).
        groups: groups of the 3×3 conv (bottleneck only).
        arch: temporal design (kernels, inflated conv, temporal pool).
        stem_temporal_stride: temporal stride of conv1 and of pool1 (2 for the paper's 32×2 stem).
        stem_pool_padding: pad pool1 spatially (False = Caffe2).
        temporal_pool: apply the arch's 2×1×1 max-pool after res2.
        context: context blocks to insert, or None.
        num_classes, dropout, head_act: see :class:`ResNetHead`.
        input_size: training clip ``(T, H, W)``; the head's pooling window is the res5 map of this input.
        fc_init_std: std of the classifier's Gaussian init.
        zero_init_final_bn: zero γ of the last BN of every residual block.
        norm: ``channels -> nn.Module`` normalisation factory (BatchNorm3d with cfg.BN eps/momentum).
        act_checkpoint: per stage res2..res5, activation-checkpoint its blocks in training (see :class:`ResStage`;
            the last child of res5 always runs plain).
    """

    def __init__(self, *, depths: Sequence[int], bottleneck: bool, width: int, groups: int, arch: ArchSpec,
                 stem_temporal_stride: int, stem_pool_padding: bool, temporal_pool: bool,
                 context: ContextSpec | None, num_classes: int, dropout: float, head_act: str,
                 input_size: tuple[int, int, int], fc_init_std: float, zero_init_final_bn: bool,
                 norm: Norm, act_checkpoint: Sequence[bool] = (False, False, False, False)) -> None:
        super().__init__()
        if len(act_checkpoint) != 4:
            raise UserError(f"act_checkpoint needs one flag per stage res2..res5, got {list(act_checkpoint)}.")
        if not bottleneck and groups != 1:
            raise UserError(f"RESNET.NUM_GROUPS {groups} needs bottleneck blocks (RESNET.DEPTH 50/101/152); "
                            f"ResNet-18/34 basic blocks have no grouped conv.")
        self.stem = VideoStem(dim_out=width, temporal_kernel=arch.stem_kernel, temporal_stride=stem_temporal_stride,
                              pool_temporal=stem_temporal_stride, pool_padding=stem_pool_padding, norm=norm)
        self.context_type = context.type if context is not None else ""
        self._context_prefix = context.prefix if context is not None else ""
        kernels = arch.temporal_kernels(depths)
        dim_in = width
        for j, (stage, n) in enumerate(zip((2, 3, 4, 5), depths)):
            dim_out = width * 2 ** j * (4 if bottleneck else 1)
            children: OrderedDict[str, nn.Module] = OrderedDict()
            for i in range(n):
                stride = 2 if i == 0 and stage > 2 else 1
                if bottleneck:
                    children[f"block{i}"] = Bottleneck(
                        dim_in=dim_in, dim_out=dim_out, dim_inner=width * groups * 2 ** j, stride=stride,
                        temporal_kernel=kernels[j][i], inflate_conv_b=arch.inflate_conv_b, groups=groups, norm=norm)
                else:
                    children[f"block{i}"] = BasicBlock(dim_in=dim_in, dim_out=dim_out, stride=stride,
                                                       temporal_kernel=kernels[j][i], norm=norm)
                dim_in = dim_out
                if context is not None and i in context.locations[j]:
                    children[f"{context.prefix}{i}"] = context.factory(dim_out, stage)
            self.add_module(f"s{stage}", ResStage(children, act_checkpoint=bool(act_checkpoint[j]),
                                                  checkpoint_last=stage != 5))
            if stage == 2:
                pool = temporal_pool and arch.temporal_pool
                self.pool2 = nn.MaxPool3d((2, 1, 1), stride=(2, 1, 1)) if pool else nn.Identity()
        self.input_size = tuple(input_size)
        window = self.output_size(*self.input_size)
        if min(window) < 1:
            raise UserError(f"A {'x'.join(map(str, self.input_size))} (T x H x W) input is too small for this "
                            f"network: its res5 map would be {'x'.join(map(str, window))}. Use more frames "
                            f"(DATA.NUM_FRAMES) or a larger crop (DATA.TRAIN_CROP_SIZE).")
        self.head = ResNetHead(dim_in=dim_in, num_classes=num_classes, pool_size=window, dropout=dropout,
                               act=head_act)
        self._init_weights(fc_init_std=fc_init_std, zero_init_final_bn=zero_init_final_bn)

    def _init_weights(self, *, fc_init_std: float, zero_init_final_bn: bool) -> None:
        """MSRA convs, BN γ=1 β=0 (γ=0 on each block's final BN if asked), Gaussian classifier.

        Context blocks are skipped: they initialise themselves to the identity.
        """
        skip = {id(c.module) for c in self.context_blocks()}
        stack = [self]
        while stack:
            module = stack.pop()
            if isinstance(module, nn.Conv3d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.modules.batchnorm._BatchNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            stack.extend(c for c in module.children() if id(c) not in skip)
        if zero_init_final_bn:
            for block in self.blocks():
                nn.init.zeros_(block.final_bn.weight)
        nn.init.normal_(self.head.fc.weight, std=fc_init_std)
        nn.init.zeros_(self.head.fc.bias)

    def stages(self) -> list[ResStage]:
        """The stages res2..res5."""
        return [self.s2, self.s3, self.s4, self.s5]

    def blocks(self) -> list[Bottleneck | BasicBlock]:
        """Every residual block, in order."""
        return [m for s in self.stages() for m in s if isinstance(m, (Bottleneck, BasicBlock))]

    def context_blocks(self) -> list[ContextBlockInfo]:
        """Every context block in forward order."""
        out = []
        for stage, s in zip((2, 3, 4, 5), self.stages()):
            channels = 0
            for name, module in s.named_children():
                if isinstance(module, (Bottleneck, BasicBlock)):
                    channels = module.final_bn.num_features
                else:
                    index = int(name[len(self._context_prefix):])
                    out.append(ContextBlockInfo(f"s{stage}.{name}", self.context_type, stage, index, channels, module))
        return out

    def forward_res5(self, x: torch.Tensor) -> torch.Tensor:
        """``B×3×T×H×W -> B×C×T'×H'×W'`` res5 feature map (before the head)."""
        x = self.s2(self.stem(x))
        return self.s5(self.s4(self.s3(self.pool2(x))))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``B×3×T×H×W -> B×C`` globally average-pooled res5 features (before dropout and fc)."""
        return self.forward_res5(x).mean(dim=(2, 3, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``B×3×T×H×W -> B×K`` logits (log mean-probabilities in fully-convolutional eval)."""
        return self.head(self.forward_res5(x))

    def _stage_strides(self) -> list[tuple[int, int, int]]:
        """Cumulative input→output stride at the end of each stage res2..res5."""
        stride = list(self.stem.stride)
        out = []
        for stage in (2, 3, 4, 5):
            if stage == 3 and isinstance(self.pool2, nn.MaxPool3d):
                stride[0] *= 2
            if stage > 2:
                stride[1] *= 2
                stride[2] *= 2
            out.append(tuple(stride))
        return out  # type: ignore[return-value]

    def feature_strides(self) -> dict[str, tuple[int, int, int]]:
        """Input→feature stride ``(st, sh, sw)`` of the input of every context block (by name).

        Only the strides are given here. Cell centres (receptive-field centres) also need each axis'
        offset: with the default padded stem, spatial cell ``y`` is centred on input pixel ``y·sh`` and,
        after the 2×1×1 temporal pool of c2d/i3d, temporal cell ``t`` on frames ``2t`` and ``2t+1``;
        ``video_nl.viz.mapping.feature_offsets`` derives the offsets for every stem/pool variant (tested
        against receptive fields measured by back-propagation).
        """
        strides = self._stage_strides()
        return {c.name: strides[c.stage - 2] for c in self.context_blocks()}

    def output_size(self, t: int, h: int, w: int) -> tuple[int, int, int]:
        """The res5 map ``(T', H', W')`` for a ``t×h×w`` input."""
        t, h, w = self.stem.output_size(t, h, w)
        if isinstance(self.pool2, nn.MaxPool3d):
            t = conv_out(t, 2, 2, 0)
        for _ in range(3):  # res3..res5: 3×3 conv (and 1×1 shortcut) with stride 2, padding 1
            h, w = conv_out(h, 3, 2, 1), conv_out(w, 3, 2, 1)
        return t, h, w
