"""video_nl: spacetime non-local video classification in PyTorch.

Public API::

    from video_nl import load_config, build_model, load_checkpoint
    cfg = load_config("configs/Kinetics/I3D_NLN_8x8_R50.yaml", overrides=["MODEL.NUM_CLASSES", "10"])
    model = build_model(cfg)            # B x 3 x T x H x W float -> B x num_classes logits
    load_checkpoint(model, "model.pyth")
"""
from .config import load_config

__version__ = "0.1.0"
__all__ = ["load_config", "build_model", "load_checkpoint", "__version__"]


def build_model(cfg):  # noqa: D103 - documented in video_nl.models.build
    from .models.build import build_model as _build

    return _build(cfg)


def load_checkpoint(model, path, **kwargs):  # noqa: D103 - documented in video_nl.engine.checkpoint
    from .engine.checkpoint import load_checkpoint as _load

    return _load(model, path, **kwargs)


build_model.__doc__ = "Build the model described by ``cfg`` (see :func:`video_nl.models.build.build_model`)."
load_checkpoint.__doc__ = "Load weights into ``model`` (see :func:`video_nl.engine.checkpoint.load_checkpoint`)."
