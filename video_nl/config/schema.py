"""The typed config schema: every key, its type, its default and a one-line doc, in one place.

Key names follow PySlowFast where the concept is the same. Each entry is a :class:`Key`;
sections are nested dicts. ``video_nl.config.loader`` turns this tree into a :class:`CfgNode`,
merges YAML files and ``KEY VALUE`` overrides into it and checks every value against its type.

Types understood by the checker (see ``loader._check``):
``int``, ``float``, ``bool``, ``str``, ``list[int]``, ``list[float]``, ``list[str]``,
``list[list[int]]`` and ``any`` (free-form). A key with ``choices`` only takes those values.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Key:
    """One config key: default value, type name, one-line doc and optional allowed values."""

    default: Any
    type: str
    doc: str
    choices: tuple = field(default=())


SCHEMA: dict[str, Any] = {
    # ------------------------------------------------------------------ top level
    "OUTPUT_DIR": Key("outputs/run", "str", "Directory for checkpoints, logs, TensorBoard events and test results."),
    "RNG_SEED": Key(0, "int", "Seed for python, numpy and torch RNGs (each rank adds its rank)."),
    "DEVICE": Key("auto", "str", "Compute device: auto (cuda if available), cpu or cuda.", ("auto", "cpu", "cuda")),
    "LOG_PERIOD": Key(10, "int", "Iterations between train_iter json_stats lines."),
    "LOG_MODEL_INFO": Key(True, "bool", "Log params and GFLOPs of the model at the start of train/test."),
    "DIST_BACKEND": Key("auto", "str", "torch.distributed backend: auto (nccl on cuda, gloo on cpu), nccl or gloo.",
                        ("auto", "nccl", "gloo")),
    "DIST_TIMEOUT_S": Key(600, "int", "Timeout in seconds of collective operations (a dead peer becomes an error)."),
    # ------------------------------------------------------------------ model
    "MODEL": {
        "ARCH": Key("c2d", "str", "Backbone: c2d (1x1x1 temporal), i3d (3x1x1 on first 1x1 conv, released pattern), "
                    "i3d_3x3x3 (3x3x3 on the 3x3 conv), slow (3x1x1 in res4/res5 only, no temporal pool).",
                    ("c2d", "i3d", "i3d_3x3x3", "slow")),
        "NUM_CLASSES": Key(400, "int", "Number of output classes."),
        "DROPOUT_RATE": Key(0.5, "float", "Dropout before the classifier (train only)."),
        "FC_INIT_STD": Key(0.01, "float", "Std of the Gaussian init of the classifier weights (bias 0)."),
        "HEAD_ACT": Key("softmax", "str", "Test-time class scores: softmax, sigmoid (per class, multi-label; "
                        "applied per position in fully-convolutional eval before averaging positions) or none "
                        "(positions' logits averaged, then softmax).", ("softmax", "sigmoid", "none")),
        "LOSS_FUNC": Key("cross_entropy", "str", "Training loss: cross_entropy (softmax, one label per video) or "
                         "bce_logit (per-class sigmoid + binary cross-entropy; multi-label, or one-hot targets).",
                         ("cross_entropy", "bce_logit")),
        "CLASS_WEIGHTS": Key([], "any", "Per-class loss weights (both losses): [] (none), a list of NUM_CLASSES "
                             "floats, or balanced (inverse frequency in the train list: mean count / class count)."),
        "INPUT_CONVENTION": Key("rgb_0.45_0.225", "str", "Input convention the weights expect (recorded in checkpoints)."),
        "ACT_CHECKPOINT": Key("none", "any", "Activation checkpointing (torch.utils.checkpoint, non-reentrant) of "
                              "every residual and context block of the chosen stages while training: none, all, or "
                              "4 booleans for res2..res5 (e.g. [False, True, True, False]). Saves activation memory "
                              "for one extra forward of those blocks (res5's last block runs plain: backward "
                              "would rebuild it at once); BN running statistics are updated once."),
    },
    "RESNET": {
        "DEPTH": Key(50, "int", "ResNet depth: 18/34 (basic block) or 50/101/152 (bottleneck).", (18, 34, 50, 101, 152)),
        "WIDTH_PER_GROUP": Key(64, "int", "Width of the stem and of res2's inner convs (64 = standard; small for tests)."),
        "NUM_GROUPS": Key(1, "int", "Groups of the 3x3 conv (1 = ResNet)."),
        "ZERO_INIT_FINAL_BN": Key(True, "bool", "Initialise the last BN gamma of each residual block to zero."),
        "STEM": Key("default", "str", "Stem: default (temporal stride 1, for 8x8 input) or paper (temporal stride 2 "
                    "in conv1 and a 2x3x3 stride-2 pool1, for 32x2 input).", ("default", "paper")),
        "STEM_POOL_PADDING": Key(True, "bool", "Pad pool1 by (0,1,1) as PySlowFast/PyTorchVideo; False = the Caffe2 "
                                 "release's unpadded pool (used when importing its weights)."),
        "TEMPORAL_POOL": Key(True, "bool", "Temporal 2x1x1 max-pool after res2 for c2d/i3d archs (slow never pools)."),
    },
    "BN": {
        "EPS": Key(1e-5, "float", "BatchNorm epsilon."),
        "MOMENTUM": Key(0.1, "float", "BatchNorm momentum (PyTorch convention; 0.1 == Caffe2's 0.9)."),
        "WEIGHT_DECAY": Key(0.0, "float", "Weight decay on BN (and LayerNorm) parameters."),
        "NORM_TYPE": Key("batchnorm", "str", "batchnorm, or sync_batchnorm (converted under DDP).",
                         ("batchnorm", "sync_batchnorm")),
        "USE_PRECISE_STATS": Key(False, "bool", "Recompute BN statistics over training batches before each "
                                 "evaluation and each epoch-end checkpoint."),
        "NUM_BATCHES_PRECISE": Key(200, "int", "Training batches used by precise BN."),
    },
    # ------------------------------------------------------------------ context blocks
    "CONTEXT": {
        "TYPE": Key("nonlocal", "str", "Block inserted at NONLOCAL.LOCATION: nonlocal, gc, snl, se or latentgnn.",
                    ("nonlocal", "gc", "snl", "se", "latentgnn")),
    },
    "NONLOCAL": {
        "LOCATION": Key([[], [], [], []], "list[list[int]]", "Per stage (res2..res5), indices of the residual blocks "
                        "after which a context block is inserted. PySlowFast's per-pathway nesting is accepted."),
        "PRESET": Key("", "str", "Placement preset overriding LOCATION: '' (use LOCATION), 1 (res4, before its last "
                      "block), 5 (res3 {1,3}, res4 {1,3,5}), 5_caffe2 (R101: res4 {6,13,20}), 10 (every block of "
                      "res3 plus 6 evenly spaced res4 blocks: all of res4 for R50, {2,6,...,22} for R101).",
                      ("", "1", "5", "5_caffe2", "10")),
        "INSTANTIATION": Key("softmax", "str", "Pairwise function: softmax (= embedded_gaussian), gaussian, "
                             "dot_product or concatenation.",
                             ("softmax", "embedded_gaussian", "gaussian", "dot_product", "concatenation")),
        "POOL": Key([[1, 2, 2], [1, 2, 2], [1, 2, 2], [1, 2, 2]], "list[list[int]]",
                    "Per stage, max-pool kernel (= stride) applied to keys/values before phi and g."),
        "GROUP": Key([1, 1, 1, 1], "list[int]", "Per stage, temporal groups: T is split into this many groups "
                     "attended separately (memory for long clips)."),
        "USE_SCALE": Key(True, "bool", "Multiply softmax logits by dim_inner^-0.5 (as every released model); "
                         "softmax instantiation only (gaussian is unscaled, as in the paper)."),
        "MODE": Key("spacetime", "str", "Keys attended: spacetime, space (same frame; needs POOL t=1) or time (same "
                     "pixel; only the temporal part of POOL applies).",
                    ("spacetime", "space", "time")),
        "INNER_RATIO": Key(0.5, "float", "Inner (theta/phi/g) channels as a fraction of the input channels."),
        "USE_BN": Key(True, "bool", "BN (gamma=0) after the output conv; False = zero-init the output conv instead."),
        "FAST_PATH": Key(True, "bool", "Use scaled_dot_product_attention when no attention map is requested."),
    },
    "GC": {
        "POOL": Key("att", "str", "Context modelling: att (attention pooling) or avg (global average).", ("att", "avg")),
        "FUSION": Key(["channel_add"], "list[str]", "Fusion of the context: channel_add and/or channel_mul."),
        "RATIO": Key(0.25, "float", "Bottleneck ratio of the transform (P = C * RATIO)."),
    },
    "SE": {
        "RATIO": Key(0.0625, "float", "Squeeze ratio of the SE bottleneck (C * RATIO hidden units)."),
    },
    "LATENTGNN": {
        "NUM_NODES": Key(100, "int", "Latent nodes d per kernel."),
        "NUM_KERNELS": Key(1, "int", "Number of latent kernels (mixture of low-rank relations)."),
        "CHANNEL_STRIDE": Key(8, "int", "Channel reduction of the visible features before propagation."),
        "SYMMETRIC": Key(False, "bool", "Share the visible->latent and latent->visible projections."),
        "GRAPH_CONV": Key(True, "bool", "Apply the latent->latent propagation (d x d affinity)."),
    },
    # ------------------------------------------------------------------ data
    "DATA": {
        "PATH_TO_DATA_DIR": Key("", "str", "Directory holding {train,val,test}.csv (or the list files named below)."),
        "PATH_PREFIX": Key("", "str", "Prefix prepended to every video path in the lists."),
        "PATH_LABEL_SEPARATOR": Key(" ", "str", "Separator between path and label in csv lists."),
        "LIST_FORMAT": Key("auto", "str", "List format: auto, csv (PySlowFast), mmaction2 (*_list_videos.txt) or "
                           "caffe2 (trainlist.txt/vallist.txt).", ("auto", "csv", "mmaction2", "caffe2")),
        "TRAIN_LIST": Key("", "str", "Train list file (default: PATH_TO_DATA_DIR/train.csv)."),
        "VAL_LIST": Key("", "str", "Val list file (default: PATH_TO_DATA_DIR/val.csv)."),
        "TEST_LIST": Key("", "str", "Test list file (default: PATH_TO_DATA_DIR/test.csv)."),
        "MULTI_LABEL": Key(False, "bool", "Multi-label lists (`path l1,l2,...` or `path l1 l2 ...`; a video may have "
                           "no label). Needs MODEL.LOSS_FUNC bce_logit and MODEL.HEAD_ACT sigmoid; metrics become mAP."),
        "CLASSNAMES_FILE": Key("", "str", "Class names (json name->id or txt one per line); default "
                               "PATH_TO_DATA_DIR/classnames.json if present."),
        "NUM_FRAMES": Key(8, "int", "Frames per clip."),
        "SAMPLING_RATE": Key(8, "int", "Stride between sampled frames."),
        "TARGET_FPS": Key(0.0, "float", "If > 0, SAMPLING_RATE is in frames at this fps (videos at other rates are "
                          "resampled in time); 0 = native frame rate."),
        "TRAIN_JITTER_SCALES": Key([256, 320], "list[int]", "Random short-side scale range for training."),
        "TRAIN_CROP_SIZE": Key(224, "int", "Training crop size."),
        "TEST_CROP_SIZE": Key(256, "int", "Test crop size (short side is scaled to this, fully-convolutional)."),
        "RANDOM_FLIP": Key(True, "bool", "Random horizontal flip at training time."),
        "MEAN": Key([0.45, 0.45, 0.45], "list[float]", "Per-channel mean on [0,1] RGB."),
        "STD": Key([0.225, 0.225, 0.225], "list[float]", "Per-channel std on [0,1] RGB."),
        "DECODING_BACKEND": Key("decord", "str", "Video decoder: decord (PyAV fallback per file) or pyav (skips "
                                "non-reference frames before a clip: faster on long-GOP video).",
                                ("decord", "pyav")),
        "DECODE_THREADS": Key(1, "int", "Decoder threads per video reader."),
        "DECODE_TIMEOUT_S": Key(30.0, "float", "Per-video decode timeout in seconds (damaged files can hang)."),
        "FRAME_INDEX_DIR": Key("", "str", "Folder caching each video's frame index (true frame count, timestamps, "
                               "keyframes, exact routing; docs/data.md 'Frame exactness'); empty = a frame_index "
                               "folder beside the list file if it can be written there, else "
                               "~/.cache/video_nl/frame_index."),
        "MAX_FAILURE_RATIO": Key(0.5, "float", "Stop with an error when more than this fraction of a list fails."),
        "TEST_OFFSET_FORMULA": Key("pyslowfast", "str", "Temporal offsets of test clips: pyslowfast (Delta*k/K), "
                                   "mmaction2 (1.x: round(Delta*k/(K-1))) or caffe2 (floor(N/K*k)).",
                                   ("pyslowfast", "mmaction2", "caffe2")),
        "SAMPLING_PROTOCOL": Key("caffe2", "str", "Clip frame and crop formulas (docs/data.md): caffe2 (the Caffe2 "
                                 "release: exact stride SAMPLING_RATE, short videos loop, test short side -> "
                                 "TEST_CROP_SIZE) or pyslowfast (PySlowFast, index for index: linspace over "
                                 "SAMPLING_RATE*NUM_FRAMES*fps/TARGET_FPS frames, last frame repeated, 1-crop test "
                                 "at short side TRAIN_JITTER_SCALES[0], its one-pixel rounding).",
                                 ("caffe2", "pyslowfast")),
    },
    "DATA_LOADER": {
        "NUM_WORKERS": Key(2, "int", "DataLoader worker processes (0 = load in the main process)."),
        "PIN_MEMORY": Key(True, "bool", "Pin host memory of batches (only takes effect on cuda)."),
        "PERSISTENT_WORKERS": Key(True, "bool", "Keep workers alive between epochs."),
        "PREFETCH_FACTOR": Key(2, "int", "Batches prefetched per worker."),
    },
    # ------------------------------------------------------------------ optimisation
    "SOLVER": {
        "BASE_LR": Key(0.1, "float", "Base learning rate for TRAIN.BATCH_SIZE (linear scaling is the user's choice)."),
        "LR_POLICY": Key("cosine", "str", "cosine (with linear warmup) or steps_with_relative_lrs.",
                         ("cosine", "steps_with_relative_lrs")),
        "STEPS": Key([], "list[float]", "Epochs at which steps_with_relative_lrs changes LR (first must be 0)."),
        "LRS": Key([], "list[float]", "Relative LRs for the steps of steps_with_relative_lrs."),
        "MAX_EPOCH": Key(196, "int", "Training epochs."),
        "MOMENTUM": Key(0.9, "float", "SGD momentum."),
        "NESTEROV": Key(True, "bool", "Nesterov momentum."),
        "DAMPENING": Key(0.0, "float", "SGD dampening."),
        "WEIGHT_DECAY": Key(1e-4, "float", "Weight decay on non-BN parameters."),
        "WARMUP_EPOCHS": Key(0.0, "float", "Linear warmup length in epochs."),
        "WARMUP_START_LR": Key(0.01, "float", "LR at the start of the warmup."),
        "COSINE_END_LR": Key(0.0, "float", "Final LR of the cosine policy."),
        "CLIP_GRAD_L2NORM": Key(0.0, "float", "Clip gradients to this global L2 norm (0 = off)."),
    },
    # ------------------------------------------------------------------ train / test
    "TRAIN": {
        "ENABLE": Key(True, "bool", "Run training in `video-nl train`."),
        "BATCH_SIZE": Key(64, "int", "Global batch size (all ranks together); must divide by the world size."),
        "EVAL_PERIOD": Key(10, "int", "Epochs between 1-clip validations (0 = never)."),
        "CHECKPOINT_PERIOD": Key(1, "int", "Epochs between checkpoints."),
        "CHECKPOINT_PERIOD_ITERS": Key(0, "int", "Also checkpoint every this many iterations (0 = off)."),
        "KEEP_CHECKPOINTS": Key(3, "int", "Number of newest checkpoints kept (0 = keep all)."),
        "AUTO_RESUME": Key(True, "bool", "Resume from the newest readable checkpoint in OUTPUT_DIR/checkpoints."),
        "CHECKPOINT_FILE_PATH": Key("", "str", "Initial weights (video_nl checkpoint or 2D ImageNet weights)."),
        "CHECKPOINT_INFLATE": Key(False, "bool", "Inflate 2D weights in CHECKPOINT_FILE_PATH to 3D."),
        "CHECKPOINT_REINIT_HEAD": Key(False, "bool", "Fine-tuning: do not load the classifier (head.*) of "
                                      "CHECKPOINT_FILE_PATH, re-initialise it (logged). Without it a classifier of "
                                      "another shape is an error."),
        "MIXED_PRECISION": Key("none", "str", "none, bf16 (autocast on cpu/cuda) or fp16 (cuda, with GradScaler).",
                               ("none", "bf16", "fp16")),
        "DETERMINISTIC": Key(False, "bool", "Deterministic algorithms (bitwise-repeatable CPU runs)."),
        "LABEL_SMOOTHING": Key(0.0, "float", "Label smoothing of the cross-entropy loss."),
        "SKIP_NONFINITE": Key(False, "bool", "Skip steps with a NaN/inf loss instead of stopping."),
        "CHANNELS_LAST": Key(False, "bool", "Use channels_last_3d memory format (recommended with bf16)."),
        "COMPILE": Key("none", "str", "torch.compile the model for training and for test/predict/feature extraction: "
                       "none, default or max-autotune (inductor; one warning and eager where unavailable).",
                       ("none", "default", "max-autotune")),
        "ACCUM_STEPS": Key(1, "int", "Gradient accumulation: each global batch TRAIN.BATCH_SIZE runs as this many "
                           "equal micro-batches per rank, one optimizer step per batch (BN statistics are over a "
                           "micro-batch; LR and checkpoints count optimizer steps)."),
    },
    "TEST": {
        "ENABLE": Key(True, "bool", "Run multi-view testing at the end of `video-nl train`."),
        "BATCH_SIZE": Key(8, "int", "Views per forward pass in testing (global)."),
        "CHECKPOINT_FILE_PATH": Key("", "str", "Checkpoint to test (default: newest in OUTPUT_DIR/checkpoints)."),
        "NUM_ENSEMBLE_VIEWS": Key(10, "int", "Temporal clips per video."),
        "NUM_SPATIAL_CROPS": Key(3, "int", "Spatial crops per clip: 3 (left/centre/right) or 1 (centre).", (1, 3)),
        "ENSEMBLE_METHOD": Key("sum", "str", "Aggregation of per-view scores (softmax, or sigmoid with HEAD_ACT "
                               "sigmoid): sum (reported as the mean) or max (Charades protocol).", ("sum", "max")),
        "VIEWS_SWEEP": Key(False, "bool", "Also report 1/3/5/10-clip accuracies from the same pass."),
        "DECODE_ONCE": Key(True, "bool", "Decode the union of all views' frames once per video."),
    },
    "TENSORBOARD": {
        "ENABLE": Key(True, "bool", "Write TensorBoard events under TENSORBOARD.LOG_DIR."),
        "LOG_DIR": Key("", "str", "Event directory (default OUTPUT_DIR/tensorboard)."),
        "MODEL_GRAPH": Key(False, "bool", "Add the model graph to TensorBoard."),
        "ATTENTION": Key(False, "bool", "Log a few attention montages during `video-nl test`."),
    },
}
