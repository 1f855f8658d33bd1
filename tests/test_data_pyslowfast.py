"""``DATA.SAMPLING_PROTOCOL pyslowfast``: index for index and crop box for crop box against PySlowFast.

The ``psf_*`` functions below are a transcription, written for these tests, of the code PySlowFast
(facebookresearch/SlowFast at 287ec00) runs for Kinetics with its defaults (``TRAIN_CROP_NUM_*`` 1, no
multigrid, ``USE_OFFSET_SAMPLING`` / ``INV_UNIFORM_SAMPLE`` False, no AUG), on a video it decoded whole:

* ``slowfast/datasets/decoder.py``: ``temporal_sampling``, ``get_start_end_idx`` and the clip size of ``decode``;
* ``slowfast/datasets/transform.py``: ``random_short_side_scale_jitter``, ``random_crop``, ``horizontal_flip``,
  ``uniform_crop``;
* ``slowfast/datasets/utils.py``: ``spatial_sampling``;
* ``slowfast/datasets/kinetics.py``: ``Kinetics.__getitem__``'s choice of clip / crop index, scales and crop size.

They draw from the global ``random`` / ``np.random`` as PySlowFast does; the only addition is ``box``, a dict the
spatial functions fill with the resized size, crop offsets and flip they used.
"""
import math
import random

import numpy as np
import pytest
import torch
from helpers.videos import random_video

from video_nl.config import ConfigError, get_default_config, load_config, merge_overrides
from video_nl.config.loader import validate
from video_nl.data.datasets import MultiViewDataset, VideoClipDataset, item_seed
from video_nl.data.decoders import VideoInfo
from video_nl.data.decoding import decode_frames, probe
from video_nl.data.sampling import MultiClipSampler, TrainSampler, linspace_indices
from video_nl.data.transforms import (multi_view_boxes, multi_view_scale, multi_view_transform,
                                      pyslowfast_train_crop, pyslowfast_train_transform)

MEAN, STD = [0.45, 0.4, 0.35], [0.225, 0.2, 0.25]


# ----------------------------------------------------------------------------------- transcription of PySlowFast
def psf_temporal_sampling(frames, start_idx, end_idx, num_samples):
    """decoder.py temporal_sampling."""
    index = torch.linspace(start_idx, end_idx, num_samples)
    index = torch.clamp(index, 0, frames.shape[0] - 1).long()
    return torch.index_select(frames, 0, index)


def psf_get_start_end_idx(video_size, clip_size, clip_idx, num_clips):
    """decoder.py get_start_end_idx (use_offset False)."""
    delta = max(video_size - clip_size, 0)
    if clip_idx == -1:
        start_idx = random.uniform(0, delta)
    else:
        start_idx = delta * clip_idx / num_clips
    end_idx = start_idx + clip_size - 1
    return start_idx, end_idx


def psf_decode(frames, sampling_rate, num_frames, clip_idx, num_clips, target_fps, fps):
    """decoder.py decode, after a whole-video decode: the clip's frames."""
    clip_size = np.maximum(1.0, sampling_rate * num_frames / target_fps * fps)
    start_idx, end_idx = psf_get_start_end_idx(frames.shape[0], clip_size, clip_idx, num_clips)
    return psf_temporal_sampling(frames, start_idx, end_idx, num_frames)


def psf_random_short_side_scale_jitter(images, min_size, max_size, box):
    """transform.py random_short_side_scale_jitter (inverse_uniform_sampling False)."""
    size = int(round(np.random.uniform(min_size, max_size)))
    height, width = images.shape[2], images.shape[3]
    if (width <= height and width == size) or (height <= width and height == size):
        box["size"] = (height, width)
        return images
    new_width, new_height = size, size
    if width < height:
        new_height = int(math.floor((float(height) / width) * size))
    else:
        new_width = int(math.floor((float(width) / height) * size))
    box["size"] = (new_height, new_width)
    return torch.nn.functional.interpolate(images, size=(new_height, new_width), mode="bilinear",
                                           align_corners=False)


def psf_random_crop(images, size, box):
    """transform.py random_crop."""
    box["top"] = box["left"] = 0
    if images.shape[2] == size and images.shape[3] == size:
        return images
    height, width = images.shape[2], images.shape[3]
    y_offset = 0
    if height > size:
        y_offset = int(np.random.randint(0, height - size))
    x_offset = 0
    if width > size:
        x_offset = int(np.random.randint(0, width - size))
    box["top"], box["left"] = y_offset, x_offset
    return images[:, :, y_offset:y_offset + size, x_offset:x_offset + size]


def psf_horizontal_flip(prob, images, box):
    """transform.py horizontal_flip."""
    box["flip"] = False
    if np.random.uniform() < prob:
        images = images.flip((-1))
        box["flip"] = True
    return images


def psf_uniform_crop(images, size, spatial_idx, box):
    """transform.py uniform_crop (scale_size None)."""
    height, width = images.shape[2], images.shape[3]
    y_offset = int(math.ceil((height - size) / 2))
    x_offset = int(math.ceil((width - size) / 2))
    if height > width:
        if spatial_idx == 0:
            y_offset = 0
        elif spatial_idx == 2:
            y_offset = height - size
    else:
        if spatial_idx == 0:
            x_offset = 0
        elif spatial_idx == 2:
            x_offset = width - size
    box["top"], box["left"] = y_offset, x_offset
    return images[:, :, y_offset:y_offset + size, x_offset:x_offset + size]


def psf_spatial_sampling(frames, spatial_idx, min_scale, max_scale, crop_size, random_horizontal_flip, box):
    """utils.py spatial_sampling (aspect_ratio and scale None)."""
    if spatial_idx == -1:
        frames = psf_random_short_side_scale_jitter(frames, min_scale, max_scale, box)
        frames = psf_random_crop(frames, crop_size, box)
        if random_horizontal_flip:
            frames = psf_horizontal_flip(0.5, frames, box)
    else:
        assert len({min_scale, max_scale}) == 1
        frames = psf_random_short_side_scale_jitter(frames, min_scale, max_scale, box)
        frames = psf_uniform_crop(frames, crop_size, spatial_idx, box)
    return frames


def psf_kinetics_item(all_frames, cfg, mode, index, fps, box=None):
    """kinetics.py Kinetics.__getitem__ for a video decoded whole (``all_frames`` uint8 N×H×W×3); ``index`` is the
    dataset index (in test mode video·views + view). Returns C×T×H×W."""
    data, test = cfg.DATA, cfg.TEST
    if mode in ["train", "val"]:
        temporal_sample_index, spatial_sample_index = -1, -1
        min_scale, max_scale = data.TRAIN_JITTER_SCALES
        crop_size = data.TRAIN_CROP_SIZE
    else:
        spatial_temporal_idx = index % (test.NUM_ENSEMBLE_VIEWS * test.NUM_SPATIAL_CROPS)
        temporal_sample_index = spatial_temporal_idx // test.NUM_SPATIAL_CROPS
        spatial_sample_index = (spatial_temporal_idx % test.NUM_SPATIAL_CROPS) if test.NUM_SPATIAL_CROPS > 1 else 1
        min_scale, max_scale, crop_size = ([data.TEST_CROP_SIZE] * 3 if test.NUM_SPATIAL_CROPS > 1
                                           else [data.TRAIN_JITTER_SCALES[0]] * 2 + [data.TEST_CROP_SIZE])
    frames = psf_decode(all_frames, data.SAMPLING_RATE, data.NUM_FRAMES, temporal_sample_index,
                        test.NUM_ENSEMBLE_VIEWS, data.TARGET_FPS, fps)
    frames = frames.float() / 255.0
    frames = (frames - torch.tensor(data.MEAN)) / torch.tensor(data.STD)  # utils.tensor_normalize
    frames = frames.permute(3, 0, 1, 2)
    return psf_spatial_sampling(frames, spatial_sample_index, min_scale, max_scale, crop_size, data.RANDOM_FLIP,
                                {} if box is None else box)


def psf_seed(seed):
    """Seed the generators PySlowFast draws from the way our pyslowfast protocol seeds its own."""
    random.seed(seed)
    np.random.seed(seed % 2**32)


# ----------------------------------------------------------------------------------------------- temporal indices
def _torch_linspace_is_fused() -> bool:
    """torch's CPU linspace kernel fuses multiply-add in its AVX2/AVX-512 and arm64 builds but not in the DEFAULT one
    (``ATEN_CPU_CAPABILITY=default`` or a CPU without AVX2): linspace(152.56, 316.08, 8)[4] is 245.99998 fused and
    246.0 unfused. Where a clip frame's exact position is an integer (e.g. 21 = 32/9 + 5·157/45 for a 16×4 clip at
    25 fps), the two builds truncate to different frames, so PySlowFast's indices depend on the build; ours follow
    the fused builds, the ones PySlowFast runs on in practice."""
    return torch.linspace(152.56, 316.08000000000004, 8)[4].item() < 246.0


fused_torch = pytest.mark.skipif(not _torch_linspace_is_fused(), reason="this torch's CPU linspace kernel is the "
                                 "unfused DEFAULT build; our pyslowfast indices follow the fused (AVX2+/arm64) ones")
FPS = [30.0, 25.0, 30000 / 1001, 60.0, 15.0]
LENGTHS = [1, 7, 20, 63, 64, 65, 100, 300, 301, 997]
CLIPS = [(8, 8), (4, 16), (32, 2), (16, 4), (1, 8)]


def _psf_indices(n, fps, num_frames, rate, clip_idx, num_clips, target_fps=30.0):
    return psf_decode(torch.arange(n), rate, num_frames, clip_idx, num_clips, target_fps, fps).tolist()


def _grid():
    """(video info, frames per clip, rate) over LENGTHS × FPS × CLIPS."""
    return [(VideoInfo(n, fps, 32, 32), t, r) for n in LENGTHS for fps in FPS for t, r in CLIPS]


@fused_torch
def test_test_clips_match_pyslowfast_index_for_index():
    for info, t, r in _grid():
        for k in (1, 3, 10):
            clips = MultiClipSampler(t, r, 30.0, k, "pyslowfast", protocol="pyslowfast").clips(info)
            assert clips == [_psf_indices(info.num_frames, info.fps, t, r, i, k) for i in range(k)], (info, t, r, k)


def test_issue_example_8x8_spans_64_frames_at_spacing_9_and_short_videos_repeat_the_last_frame():
    clips = MultiClipSampler(8, 8, 30.0, 10, "pyslowfast", protocol="pyslowfast").clips(VideoInfo(300, 30.0, 8, 8))
    assert clips[0] == list(range(0, 64, 9))  # linspace(0, 63, 8): spacing 63/7 = 9
    assert clips[1] == [23 + 9 * i for i in range(8)]  # start Δ·1/10 = 23.6 with Δ = 300 − 64
    assert clips[9] == [212 + 9 * i for i in range(8)]  # 212.4
    caffe2 = MultiClipSampler(8, 8, 0.0, 10, "pyslowfast").clips(VideoInfo(300, 30.0, 8, 8))
    assert caffe2[0] == list(range(0, 57, 8))  # today's default: stride 8 over 57 frames
    short = MultiClipSampler(8, 8, 30.0, 1, "pyslowfast", protocol="pyslowfast").clips(VideoInfo(20, 30.0, 8, 8))
    assert short == [[0, 9, 18, 19, 19, 19, 19, 19]]  # clamped, where caffe2 loops
    assert MultiClipSampler(8, 8, 0.0, 1, "pyslowfast").clips(VideoInfo(20, 30.0, 8, 8)) == [[0, 8, 16, 4, 12, 0, 8,
                                                                                              16]]


@fused_torch
def test_train_and_val_clips_match_pyslowfast_for_the_same_seed():
    """Train and val both use clip_idx −1 (a random start) in PySlowFast; ours draws it the same way."""
    for info, t, r in _grid():
        for seed in range(0, 4000, 97):
            ours = TrainSampler(t, r, 30.0, seed, "pyslowfast")(info)
            psf_seed(seed)
            assert ours == _psf_indices(info.num_frames, info.fps, t, r, -1, 10), (info, t, r, seed)


@fused_torch
def test_target_fps_zero_spans_rate_times_frames_native_frames():
    info = VideoInfo(500, 25.0, 32, 32)
    ours = MultiClipSampler(8, 8, 0.0, 10, "pyslowfast", protocol="pyslowfast").clips(info)
    assert ours == [_psf_indices(500, 30.0, 8, 8, i, 10) for i in range(10)]  # as if fps == TARGET_FPS


@fused_torch
def test_linspace_indices_equal_torch_linspace():
    """Our torch-free linspace (it runs in the decode helper) against torch.linspace on random clips."""
    rng = np.random.default_rng(0)
    for _ in range(3000):
        n = int(rng.integers(1, 2000))
        start = float(rng.uniform(0, n))
        size = float(rng.choice([64.0, 64 / 30 * 25.0, 64 / 30 * (30000 / 1001), rng.uniform(1, 300)]))
        num = int(rng.choice([1, 2, 3, 4, 8, 16, 32]))
        expected = torch.linspace(start, start + size - 1, num).clamp(0, n - 1).long().tolist()
        assert linspace_indices(start, start + size - 1, num, n) == expected, (start, size, num, n)


# -------------------------------------------------------------------------------------------------- crop boxes
SIZES = [(40, 56), (56, 40), (48, 48), (37, 53), (53, 37), (32, 48), (33, 32)]


def _frames(h, w, t=3, seed=0):
    return torch.randint(0, 256, (t, h, w, 3), generator=torch.Generator().manual_seed(h * w + seed),
                         dtype=torch.uint8)


def _psf_normalised(frames):
    """Kinetics.__getitem__'s input to spatial_sampling: /255, normalise, C×T×H×W."""
    return ((frames.float() / 255.0 - torch.tensor(MEAN)) / torch.tensor(STD)).permute(3, 0, 1, 2)


@pytest.mark.parametrize("jitter", [(32, 48), (32, 33), (36, 36)])
def test_train_crops_match_pyslowfast_box_for_box(jitter):
    """Same draws → same resized size, crop offsets (randint's exclusive range) and flip; pixels within 0.01 grey."""
    for h, w in SIZES:
        frames = _frames(h, w)
        for seed in range(40):
            box = {}
            psf_seed(seed)
            expected = psf_spatial_sampling(_psf_normalised(frames), -1, *jitter, 32, True, box)
            ours = pyslowfast_train_crop(h, w, jitter_scales=jitter, crop_size=32, flip=True,
                                         rng=np.random.RandomState(seed))
            assert (ours.size, ours.top, ours.left, ours.flip) == (box["size"], box["top"], box["left"],
                                                                   box["flip"]), (h, w, seed)
            out = pyslowfast_train_transform(frames, jitter_scales=jitter, crop_size=32, flip=True, mean=MEAN,
                                             std=STD, rng=np.random.RandomState(seed))
            assert out.shape == expected.shape == (3, 3, 32, 32)
            torch.testing.assert_close(out, expected, atol=0.01 / (255 * 0.2), rtol=0)


def test_train_crop_details_differ_from_caffe2_where_the_issue_says():
    rng = np.random.RandomState(3)
    lefts = {pyslowfast_train_crop(32, 48, jitter_scales=(32, 32), crop_size=32, flip=False, rng=rng).left
             for _ in range(400)}
    assert lefts == set(range(16))  # randint(0, 48 − 32) never draws the last offset, 16 (caffe2's range has it)
    box = pyslowfast_train_crop(40, 56, jitter_scales=(32, 32), crop_size=32, flip=False, rng=rng)
    assert box.size == (32, 44) and box.top == 0  # long side floor(44.8) (caffe2: 45); no draw along the crop side
    shorts = [min(pyslowfast_train_crop(256, 340, jitter_scales=(256, 320), crop_size=224, flip=False,
                                        rng=rng).size) for _ in range(20000)]
    assert set(shorts) == set(range(256, 321))
    assert 0.35 < shorts.count(256) / shorts.count(288) < 0.65  # int(round(uniform)): end points half as likely


@pytest.mark.parametrize("num_crops", [3, 1])
def test_test_crops_match_pyslowfast_box_for_box(num_crops):
    scale = multi_view_scale(protocol="pyslowfast", num_crops=num_crops, crop_size=32, jitter_scales=[36, 48])
    assert scale == (32 if num_crops == 3 else 36)  # 1 crop: TRAIN_JITTER_SCALES[0], then a centre crop
    for h, w in SIZES:
        frames = _frames(h, w)
        spatial = [0, 1, 2] if num_crops == 3 else [1]
        expected, boxes = [], []
        for idx in spatial:  # kinetics.py: spatial_sample_index, min = max scale, crop size
            box = {}
            mn, mx, crop = [32] * 3 if num_crops > 1 else [36, 36, 32]
            expected.append(psf_spatial_sampling(_psf_normalised(frames), idx, mn, mx, crop, True, box))
            boxes.append(box)
        size, ours = multi_view_boxes(h, w, scale=scale, crop_size=32, num_crops=num_crops, protocol="pyslowfast")
        assert all(b["size"] == size for b in boxes) and ours == [(b["top"], b["left"]) for b in boxes], (h, w)
        views = multi_view_transform(frames, crop_size=32, num_crops=num_crops, mean=MEAN, std=STD, scale=scale,
                                     protocol="pyslowfast")
        torch.testing.assert_close(views, torch.stack(expected), atol=1e-4, rtol=0)


def test_test_crop_details_differ_from_caffe2():
    # 37×53 → short side 32: long side floor(45.8) = 45 (caffe2 rounds to 46); centre ceil(13/2) = 7 vs floor 7
    assert multi_view_boxes(37, 53, scale=32, crop_size=32, num_crops=1, protocol="pyslowfast") == ((32, 45),
                                                                                                    [(0, 7)])
    assert multi_view_boxes(37, 53, scale=32, crop_size=32, num_crops=1, protocol="caffe2") == ((32, 46), [(0, 7)])
    # 32×45 already at the scale: centre offset ceil(6.5) = 7 where caffe2 takes floor = 6
    assert multi_view_boxes(32, 45, scale=32, crop_size=32, num_crops=3, protocol="pyslowfast")[1] == [(0, 0), (0, 7),
                                                                                                      (0, 13)]
    assert multi_view_boxes(32, 45, scale=32, crop_size=32, num_crops=3, protocol="caffe2")[1] == [(0, 0), (0, 6),
                                                                                                  (0, 13)]


# ------------------------------------------------------------------------------------ whole pipeline on real mp4s
@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("psf")
    specs = [(90, (36, 52), 30), (50, (52, 40), 25), (20, (40, 40), 30)]  # the last is shorter than a clip
    paths = [str(root / f"v{i}.mp4") for i in range(len(specs))]
    for i, (n, size, fps) in enumerate(specs):
        random_video(paths[i], num_frames=n, size=size, seed=i, fps=fps)
    lines = "\n".join(f"{p} {i % 2}" for i, p in enumerate(paths)) + "\n"
    for split in ("train", "val", "test"):
        (root / f"{split}.csv").write_text(lines)
    return root, paths


def _cfg(root, *overrides):
    """A pyslowfast-protocol config over ``root``'s lists: 4×6 clips at TARGET_FPS 30, 32² crops, 3 clips × 3 crops."""
    return merge_overrides(get_default_config(), [
        "DATA.PATH_TO_DATA_DIR", str(root), "MODEL.NUM_CLASSES", "2", "DATA.SAMPLING_PROTOCOL", "pyslowfast",
        "DATA.TARGET_FPS", "30.0", "DATA.NUM_FRAMES", "4", "DATA.SAMPLING_RATE", "6",
        "DATA.TRAIN_JITTER_SCALES", "[32, 44]", "DATA.TRAIN_CROP_SIZE", "32", "DATA.TEST_CROP_SIZE", "32",
        "DATA.MEAN", str(MEAN), "DATA.STD", str(STD), "TEST.NUM_ENSEMBLE_VIEWS", "3", "TEST.NUM_SPATIAL_CROPS", "3",
        "DATA_LOADER.NUM_WORKERS", "0", *overrides])


def _whole(path):
    info = probe(path)
    return decode_frames(path, range(info.num_frames)), info.fps


@fused_torch
@pytest.mark.parametrize("split", ["train", "val"])
def test_train_and_val_items_equal_pyslowfast_kinetics(videos, split):
    root, paths = videos
    cfg = _cfg(root)
    ds = VideoClipDataset(cfg, split)
    for epoch in (0, 3):
        for i, path in enumerate(paths):
            item = ds[(epoch, i)]
            all_frames, fps = _whole(path)
            psf_seed(item_seed(cfg.RNG_SEED, epoch if split == "train" else 0, i, 0))
            expected = psf_kinetics_item(all_frames, cfg, split, i, fps)
            assert item["index"] == i and item["video"].shape == expected.shape == (3, 4, 32, 32)
            torch.testing.assert_close(item["video"], expected, atol=0.01 / (255 * 0.2), rtol=0)


@fused_torch
@pytest.mark.parametrize("num_crops, decode_once", [(3, True), (3, False), (1, True)])
def test_test_views_equal_pyslowfast_kinetics(videos, num_crops, decode_once):
    root, paths = videos
    cfg = _cfg(root, "TEST.NUM_SPATIAL_CROPS", str(num_crops), "DATA.TRAIN_JITTER_SCALES", "[36, 44]")
    ds = MultiViewDataset(cfg, "test", decode_once=decode_once)
    views_per_video = cfg.TEST.NUM_ENSEMBLE_VIEWS * num_crops
    for i, path in enumerate(paths):
        item = ds[i]
        all_frames, fps = _whole(path)
        expected = torch.stack([psf_kinetics_item(all_frames, cfg, "test", i * views_per_video + v, fps)
                                for v in range(views_per_video)])
        assert item["ok"] and item["views"].shape == expected.shape == (views_per_video, 3, 4, 32, 32)
        torch.testing.assert_close(item["views"], expected, atol=1e-4, rtol=0)


# ------------------------------------------------------------------------------------------------------ configs
def test_each_kinetics_config_uses_the_protocol_of_its_published_number():
    import glob
    import os

    root = os.path.join(os.path.dirname(__file__), "..", "configs", "Kinetics")
    for path in sorted(glob.glob(os.path.join(root, "*.yaml"))):
        cfg = load_config(path)
        in1k = path.endswith("_IN1K.yaml")  # the Caffe2 release's ImageNet-init numbers
        assert cfg.DATA.SAMPLING_PROTOCOL == ("caffe2" if in1k else "pyslowfast"), path
        assert cfg.DATA.TARGET_FPS == (0.0 if in1k else 30.0), path
        assert cfg.DATA.TEST_OFFSET_FORMULA == ("caffe2" if in1k else "pyslowfast"), path
    assert get_default_config().DATA.SAMPLING_PROTOCOL == "caffe2"  # today's behaviour for configs that don't say


def test_pyslowfast_single_crop_needs_a_scale_at_least_the_crop():
    cfg = get_default_config()
    cfg.DATA.SAMPLING_PROTOCOL, cfg.TEST.NUM_SPATIAL_CROPS = "pyslowfast", 1
    cfg.DATA.TRAIN_JITTER_SCALES, cfg.DATA.TEST_CROP_SIZE = [224, 288], 256
    with pytest.raises(ConfigError, match="TRAIN_JITTER_SCALES"):
        validate(cfg)
    cfg.DATA.TRAIN_JITTER_SCALES = [256, 320]
    validate(cfg)
