"""Video ResNet backbones with context blocks: ``build_model(cfg) -> VideoResNet``."""
from .build import ARCHS, build_model
from .resnet import ContextBlockInfo, VideoResNet

__all__ = ["ARCHS", "ContextBlockInfo", "VideoResNet", "build_model"]
