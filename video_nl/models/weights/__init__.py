"""Weights in and out: importers for other codebases' checkpoints and 2D→3D inflation.

One module per source (``torchvision2d``, ``pytorchvideo``, ``slowfast``, ``caffe2``, ``mmaction2``), each
defining a :class:`~video_nl.models.weights.common.SourceFormat`; ``common`` maps and reports, ``convert``
implements ``video-nl convert`` and ``inflate`` serves ``TRAIN.CHECKPOINT_INFLATE``.
"""
