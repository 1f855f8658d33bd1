"""Decoding: decord and PyAV agree frame-exactly, only needed frames are decoded, bad inputs give DecodeError."""
import logging
import os

import numpy as np
import pytest
from helpers.videos import random_video, write_audio_only, write_mp4

from video_nl.data import decoding
from video_nl.data.decoding import DecodeError, FixedIndices, decode_clip, decode_frames, probe


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("dec") / "clip.mp4"
    frames = random_video(path, num_frames=24, size=(32, 48), seed=3)
    return str(path), frames


def test_probe(clip):
    info = probe(clip[0])
    assert (info.num_frames, info.fps, info.height, info.width) == (24, 8.0, 32, 48)


@pytest.mark.parametrize("timeout_s", [0.0, 20.0])
def test_decord_and_pyav_identical(clip, timeout_s):
    # Both backends wrap the same libavcodec H.264 decoder, which is bit-exact, and both convert
    # yuv420p -> rgb24 with swscale: the frames must be equal, not merely close.
    indices = [0, 5, 23, 5, 11, 12, 1]
    a = decode_frames(clip[0], indices, backend="decord", timeout_s=timeout_s)
    b = decode_frames(clip[0], indices, backend="pyav", timeout_s=timeout_s)
    assert a.shape == (7, 32, 48, 3) and a.dtype == b.dtype
    assert np.array_equal(a.numpy(), b.numpy())
    full = decode_frames(clip[0], range(24), backend="pyav", timeout_s=0)
    assert np.array_equal(full.numpy()[indices], b.numpy())  # seeking gives the same frames as a full pass
    # and the decoded frames are the source frames (up to H.264 loss), in the right order
    err = np.abs(full.numpy().astype(int) - clip[1].astype(int)).mean(axis=(1, 2, 3))
    assert err.max() < 20


def test_pyav_decodes_only_up_to_last_needed_frame(tmp_path):
    path = str(tmp_path / "gop.mp4")
    random_video(path, num_frames=24, size=32, seed=1)
    write_mp4(path, decode_frames(path, range(24), backend="pyav", timeout_s=0).numpy(), gop=4)
    result = decode_clip(path, FixedIndices((9, 10)), backend="pyav", timeout_s=0)
    assert result.decoded <= 4 + 2  # from the keyframe at 8 to frame 10, never the whole video


@pytest.mark.parametrize("codec", ["libx264", "libx265", "mpeg4", "libvpx-vp9"])
def test_pyav_skips_non_reference_run_up_frames_without_changing_the_clip(tmp_path, codec):
    """Frames before the first wanted one are decoded only if other frames reference them (skip_frame NONREF):
    the clip must equal the one a full sequential decode gives, for B-frame codecs and for VP9."""
    path = str(tmp_path / f"{codec}.mp4")
    source = random_video(tmp_path / "src.mp4", num_frames=48, size=64, seed=7)  # x265 needs ≥ 64 px
    write_mp4(path, source, codec=codec, gop=250, bframes=3 if codec == "mpeg4" else None)
    full = decode_frames(path, range(48), backend="pyav", timeout_s=0).numpy()  # from frame 0: nothing skipped
    assert full.shape[0] == 48
    for window in ([30, 33, 36, 39], [17, 18], [47], [5, 40]):
        result = decode_clip(path, FixedIndices(tuple(window)), backend="pyav", timeout_s=0)
        assert np.array_equal(result.frames, full[window]), (codec, window)
        if codec in ("libx264", "mpeg4"):  # B-frames are non-reference: part of the run-up is skipped
            assert result.decoded < window[-1] + 1, (codec, window, result.decoded)


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_bad_inputs(tmp_path, clip, backend):
    good = open(clip[0], "rb").read()
    (tmp_path / "zero.mp4").write_bytes(b"")
    (tmp_path / "trunc.mp4").write_bytes(good[: len(good) // 2])
    (tmp_path / "text.mp4").write_text("not a video\n" * 20)
    write_audio_only(tmp_path / "audio.mp4")
    expected = {"missing.mp4": "missing", "zero.mp4": "zero-byte", "trunc.mp4": "truncated",
                "text.mp4": "not a video", "audio.mp4": "audio-only"}
    for name, reason in expected.items():
        with pytest.raises(DecodeError) as e:
            decode_frames(str(tmp_path / name), [0], backend=backend, timeout_s=10)
        assert reason in e.value.reason and name in str(e.value)


def test_undecodable_frames(tmp_path, clip):
    data = bytearray(open(clip[0], "rb").read())
    start = data.find(b"mdat") + 4
    end = data.find(b"moov")
    data[start:end] = bytes(end - start)  # keep the container index, zero every coded frame
    path = tmp_path / "garbage.mp4"
    path.write_bytes(bytes(data))
    with pytest.raises(DecodeError) as e:
        decode_frames(str(path), [0, 20], backend="pyav", timeout_s=10)
    assert "undecodable" in e.value.reason


def test_decord_failure_falls_back_to_pyav_once(tmp_path, caplog, monkeypatch):
    path = str(tmp_path / "fresh.mp4")
    random_video(path, num_frames=8, size=32, seed=5)
    expected = decode_frames(path, [3, 4], backend="pyav", timeout_s=0).numpy()

    def broken_decord(path, wanted, index, threads=1):  # stands in for decord's get_batch failures
        raise DecodeError(path, "decord get_batch failed (simulated)")

    monkeypatch.setattr("video_nl.data.decoders.decode_decord", broken_decord)
    with caplog.at_level(logging.WARNING, logger="video_nl.data.decoding"):
        for _ in range(2):
            frames = decode_frames(path, [3, 4], backend="decord", timeout_s=0)
    assert np.array_equal(frames.numpy(), expected)
    assert sum("PyAV instead" in r.message for r in caplog.records) == 1


def test_timeout_kills_hung_decode(tmp_path):
    fifo, video = tmp_path / "never.mp4", tmp_path / "ok.mp4"
    random_video(video, num_frames=4, size=32, seed=0)

    os.mkfifo(fifo)  # opening a FIFO with no writer blocks forever, like decord's hang on damaged files
    with pytest.raises(DecodeError) as e:
        decode_frames(str(fifo), [0], backend="pyav", timeout_s=1.0)
    assert "timeout" in e.value.reason
    assert decoding.current_helper().proc.poll() is not None  # the hung helper was killed
    assert decode_frames(str(video), [1], backend="decord", timeout_s=30).shape == (1, 32, 32, 3)  # a new one works


def test_a_dead_helper_is_closed_once_and_never_closes_reused_descriptors(tmp_path):
    fifo, video = tmp_path / "never.mp4", tmp_path / "ok.mp4"
    random_video(video, num_frames=4, size=32, seed=0)
    os.mkfifo(fifo)
    with pytest.raises(DecodeError):  # the timeout kills the helper and closes its three descriptors
        decode_frames(str(fifo), [0], backend="pyav", timeout_s=1.0)
    dead = decoding.current_helper()
    numbers = {dead._to_child, dead._from_child, dead._frames}
    # Whatever the process opens next reuses the lowest free numbers: here, the dead helper's.
    reused = [fd for _ in range(3) for fd in os.pipe()]
    try:
        assert numbers <= set(reused)
        assert decode_frames(str(video), [1], backend="decord", timeout_s=30).shape == (1, 32, 32, 3)
        assert decoding.current_helper() is not dead  # replaced, and the dead one closed again on the way
        for fd in reused:
            os.fstat(fd)  # still open: the second close touched nothing (EBADF here before the fix)
    finally:
        for fd in reused:
            try:
                os.close(fd)
            except OSError:
                pass


def test_decode_helper_never_imports_torch():
    """Index functions are unpickled in the decode helper: doing so (and importing the helper) must not pull
    in torch, which would add seconds to each helper's first decode and hundreds of MB to every helper."""
    import pickle
    import subprocess
    import sys

    from video_nl.data.sampling import MultiClipSampler, TrainSampler

    samplers = [FixedIndices((1, 2)), TrainSampler(8, 8, 0.0, 3), MultiClipSampler(8, 8, 0.0, 10, "pyslowfast")]
    payload = pickle.dumps(samplers)
    code = ("import pickle, sys; import video_nl.data._decode_server; pickle.loads(sys.stdin.buffer.read()); "
            "print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], input=payload, capture_output=True, check=True)
    assert result.stdout.strip() == b"False"
