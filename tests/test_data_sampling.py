"""Sampling formulas and clip transforms."""
import pytest
import torch

from video_nl.data.decoders import VideoInfo
from video_nl.data.sampling import MultiClipSampler, TrainSampler, clip_span, frame_step, multi_clip_starts
from video_nl.data.transforms import multi_view_boxes, multi_view_transform, short_side_resize, train_transform


def test_train_sampler_range_and_loop():
    info = VideoInfo(100, 30.0, 32, 32)
    starts = {TrainSampler(8, 8, 0.0, seed)(info)[0] for seed in range(200)}
    assert min(starts) == 0 and max(starts) == 100 - clip_span(8, 8) == 43
    for seed in range(20):
        idx = TrainSampler(8, 8, 0.0, seed)(info)
        assert [b - a for a, b in zip(idx, idx[1:])] == [8] * 7
    assert TrainSampler(8, 8, 0.0, 0)(info) == TrainSampler(8, 8, 0.0, 0)(info)  # deterministic
    short = TrainSampler(8, 4, 0.0, 0)(VideoInfo(10, 30.0, 32, 32))  # 29-frame span > 10 frames: loop
    assert short == [0, 4, 8, 2, 6, 0, 4, 8]


def test_target_fps_normalises_duration():
    assert frame_step(8, 60.0, 30.0) == 16.0
    idx = TrainSampler(4, 2, 30.0, 1)(VideoInfo(1000, 15.0, 32, 32))
    assert [b - a for a, b in zip(idx, idx[1:])] == [1, 1, 1]


def test_multi_clip_formulas():
    n, span, k = 300, clip_span(8, 8), 10  # span 57, delta 243
    assert multi_clip_starts(video_frames=n, span=span, num_clips=k, formula="pyslowfast") == \
        [243 * i // 10 for i in range(10)]
    mm = multi_clip_starts(video_frames=n, span=span, num_clips=k, formula="mmaction2")
    assert mm[0] == 0 and mm[-1] == 243 and mm[1] == 27  # round(243/9 * k)
    assert multi_clip_starts(video_frames=n, span=span, num_clips=1, formula="mmaction2") == [121]
    assert multi_clip_starts(video_frames=n, span=span, num_clips=k, formula="caffe2") == [30 * i for i in range(10)]
    sampler = MultiClipSampler(8, 8, 0.0, 10, "caffe2")
    clips = sampler.clips(VideoInfo(n, 30.0, 32, 32))
    assert clips[9] == [(270 + 8 * i) % 300 for i in range(8)]  # caffe2 wraps around the end
    assert sampler(VideoInfo(n, 30.0, 32, 32)) == [i for c in clips for i in c]
    with pytest.raises(ValueError):
        multi_clip_starts(video_frames=n, span=span, num_clips=k, formula="nope")


def _frames(seed=0, t=4, h=40, w=56):
    return torch.randint(0, 256, (t, h, w, 3), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def test_train_transform_shapes_ranges_determinism():
    kw = dict(jitter_scales=[40, 48], crop_size=32, flip=True, mean=[0.45] * 3, std=[0.225] * 3)
    a = train_transform(_frames(), generator=torch.Generator().manual_seed(5), **kw)
    b = train_transform(_frames(), generator=torch.Generator().manual_seed(5), **kw)
    assert a.shape == (3, 4, 32, 32) and a.dtype == torch.float32 and torch.equal(a, b)
    assert a.min() >= -0.45 / 0.225 - 1e-5 and a.max() <= 0.55 / 0.225 + 1e-5
    outs = {train_transform(_frames(), generator=torch.Generator().manual_seed(s), **kw).sum().item() for s in range(6)}
    assert len(outs) > 1


@pytest.mark.parametrize("shape", [(3, 37, 53), (2, 61, 40), (2, 48, 48)])
def test_train_transform_equals_whole_frame_resize_then_crop_and_flip(shape):
    """The sparse crop-first path gives the pixels of the obvious recipe: resize whole frames, crop, flip."""
    t, h, w = shape
    frames = torch.randint(0, 256, (t, h, w, 3), generator=torch.Generator().manual_seed(h), dtype=torch.uint8)
    kw = dict(jitter_scales=[40, 72], crop_size=32, flip=True, mean=[0.45, 0.4, 0.35], std=[0.225, 0.2, 0.25])
    for seed in range(12):
        out = train_transform(frames, generator=torch.Generator().manual_seed(seed), **kw)
        g = torch.Generator().manual_seed(seed)  # the same draws, in the documented order
        scale = int(torch.randint(40, 73, (1,), generator=g))
        resized = short_side_resize(frames.permute(0, 3, 1, 2).float(), scale)
        top = int(torch.randint(0, resized.shape[-2] - 32 + 1, (1,), generator=g))
        left = int(torch.randint(0, resized.shape[-1] - 32 + 1, (1,), generator=g))
        crop = resized[..., top:top + 32, left:left + 32]
        if bool(torch.rand((), generator=g) < 0.5):
            crop = crop.flip(-1)
        mean, std = torch.tensor(kw["mean"]).view(3, 1, 1) * 255, torch.tensor(kw["std"]).view(3, 1, 1) * 255
        expected = ((crop - mean) / std).transpose(0, 1)
        assert out.shape == expected.shape and out.is_contiguous()
        torch.testing.assert_close(out, expected, atol=0.01 / (255 * 0.2), rtol=0)  # < 0.01 grey level


def test_multi_view_transform_crops_cover_long_side():
    frames = torch.zeros(2, 32, 64, 3, dtype=torch.uint8)
    frames[..., :, :32, 0] = 255  # left half red
    views = multi_view_transform(frames, crop_size=32, num_crops=3, mean=[0, 0, 0], std=[1, 1, 1])
    assert views.shape == (3, 3, 2, 32, 32)
    assert views[0, 0].min() == 1 and views[2, 0].max() == 0 and 0 < views[1, 0].mean() < 1  # left/centre/right
    assert multi_view_boxes(32, 64, scale=32, crop_size=32, num_crops=3, protocol="caffe2") == \
        ((32, 64), [(0, 0), (0, 16), (0, 32)])
    assert multi_view_boxes(32, 64, scale=32, crop_size=32, num_crops=1, protocol="caffe2") == ((32, 64), [(0, 16)])
    clips = torch.stack([frames, frames.flip(2)])
    both = multi_view_transform(clips, crop_size=32, num_crops=3, mean=[0, 0, 0], std=[1, 1, 1])
    assert both.shape == (6, 3, 2, 32, 32) and torch.equal(both[:3], views)  # clip-major
