"""A corpus of small videos on which random access goes wrong, made for real with PyAV (64×64, 40 frames, 25 fps).

Each file is a class that real datasets contain and that broke frame-exact decoding somewhere (see
/work/shared/reference/frame-exactness.md). Every frame is distinct (a texture moving one pixel per frame plus a
grey ramp), so any index mix-up changes pixels. :data:`CORPUS` names each file and what makes it hard;
:func:`make_corpus` writes them all (about a second); :func:`sequential_frames` is the reference decode.
"""
from __future__ import annotations

import os
import struct
from collections.abc import Callable
from fractions import Fraction

import av
import numpy as np

from helpers.videos import block_frames, write_mp4

SIZE, FRAMES, FPS = 64, 40, 25
X264_GOP = "keyint=12:min-keyint=12:scenecut=0"


def corpus_frames(num_frames: int = FRAMES, seed: int = 0) -> np.ndarray:
    """The source frames: blocky texture moving one pixel right per frame, top-left 8×8 grey ramp."""
    frames = block_frames(num_frames, SIZE, seed)
    frames[:, :8, :8] = (np.arange(num_frames) * 255 // max(num_frames - 1, 1))[:, None, None, None]
    return frames


def sequential_frames(path: str) -> np.ndarray:
    """The definition of frame ``i``: every frame a plain sequential PyAV decode yields, RGB ``T×H×W×3``."""
    with av.open(path) as container:
        return np.stack([f.to_ndarray(format="rgb24", threads=1) for f in container.decode(video=0)])


def _x264(path: str, params: str = X264_GOP, **kwargs) -> str:
    return write_mp4(path, corpus_frames(), fps=FPS, options={"x264-params": params}, **kwargs)


def _avi_mpeg4_bframes(path: str) -> str:
    return write_mp4(path, corpus_frames(), fps=FPS, codec="mpeg4", gop=12, bframes=2)


def _vop_starts(data: bytes) -> list[int]:
    out, i = [], data.find(b"\x00\x00\x01\xb6")
    while i >= 0:
        out.append(i)
        i = data.find(b"\x00\x00\x01\xb6", i + 4)
    return out


def _n_vop(time_increment_bits: int) -> bytes:
    """A not-coded MPEG-4 VOP (the DivX placeholder): P type, no modulo time, vop_coded = 0, stuffing."""
    bits = "01" + "0" + "1" + "0" * time_increment_bits + "1" + "0"
    bits += "0" + "1" * ((8 - (len(bits) + 1) % 8) % 8)
    return b"\x00\x00\x01\xb6" + int(bits, 2).to_bytes(len(bits) // 8, "big")


def _avi_mpeg4_packed(path: str) -> str:
    """DivX-style packed B-frames: each P packet carries the following B-VOP too, an N-VOP fills the next slot,
    and the user data says ``DivX503b1393p`` (what DivX 5 / Xvid wrote into UCF101/HMDB51-era AVI files)."""
    source = write_mp4(path + ".src.avi", corpus_frames(), fps=FPS, codec="mpeg4", gop=12, bframes=1)
    with av.open(source) as c:
        packets = [(bytes(p), p.is_keyframe) for p in c.demux(video=0) if p.size]
    chunks, i = [], 0
    while i < len(packets):
        data, key = packets[i]
        nxt = packets[i + 1][0] if i + 1 < len(packets) else b""
        if nxt and nxt[_vop_starts(nxt)[0] + 4] >> 6 == 2:  # the next VOP is a B-VOP: pack it in
            chunks += [(data + nxt, key), (_n_vop((FPS - 1).bit_length()), False)]
            i += 2
        else:
            chunks.append((data, key))
            i += 1
    first, key = chunks[0]
    at = _vop_starts(first)[0]
    chunks[0] = (first[:at] + b"\x00\x00\x01\xb2DivX503b1393p" + first[at:], key)
    with av.open(source) as c, av.open(path, "w", format="avi") as out:
        stream = out.add_stream_from_template(c.streams.video[0])
        for n, (data, key) in enumerate(chunks):
            packet = av.Packet(data)
            packet.stream, packet.pts, packet.dts = stream, n, n
            packet.time_base, packet.is_keyframe = Fraction(1, FPS), key
            out.mux(packet)
    os.remove(source)
    return path


def _program_stream(path: str, codec: str, *, parts: int) -> str:
    """MPEG-1/2 program stream with B-frames; ``parts > 1`` concatenates files (``cat a.mpg b.mpg``): the
    timestamps restart, so the duration and any frame count derived from it are wrong."""
    frames, fmt = corpus_frames(), "mpeg" if codec == "mpeg1video" else "vob"
    data = b""
    for k, chunk in enumerate(np.array_split(frames, parts)):
        part = write_mp4(f"{path}.{k}", chunk, fps=FPS, codec=codec, gop=12, bframes=2, container_format=fmt)
        with open(part, "rb") as f:
            data += f.read()
        os.remove(part)
    with open(path, "wb") as f:
        f.write(data)
    return path


def _vfr(path: str) -> str:
    gaps = np.random.default_rng(0).integers(1, 5, size=FRAMES - 1)  # 10..40 ms between frames
    pts = [0] + [int(x) for x in np.cumsum(gaps) * 10]
    return _x264(path, pts=pts, time_base=Fraction(1, 1000))


def _find_box(data: bytes, path: list[bytes], start: int = 0, end: int | None = None) -> int:
    end = len(data) if end is None else end
    while start + 8 <= end:
        size, kind = struct.unpack(">I4s", data[start:start + 8])
        if kind == path[0]:
            return start if len(path) == 1 else _find_box(data, path[1:], start + 8, start + size)
        start += size
    raise ValueError(f"no {path[0]!r} box")


def _mp4_edit_list_cut(path: str, cut: int = 3) -> str:
    """An edit list that starts the presentation 3 frames into the media: the demuxer marks those packets
    discarded and the decoder drops their frames (37 frames decode; the header says 40)."""
    source = _x264(path + ".src.mp4", X264_GOP + ":bframes=0")
    with open(source, "rb") as f:
        data = bytearray(f.read())
    os.remove(source)
    elst = _find_box(data, [b"moov", b"trak", b"edts", b"elst"])
    mdhd = _find_box(data, [b"moov", b"trak", b"mdia", b"mdhd"])
    mvhd = _find_box(data, [b"moov", b"mvhd"])
    assert data[elst + 8] == 0 and data[mdhd + 8] == 0 and data[mvhd + 8] == 0  # version 0 boxes
    track_scale = struct.unpack(">I", data[mdhd + 20:mdhd + 24])[0]
    movie_scale = struct.unpack(">I", data[mvhd + 20:mvhd + 24])[0]
    duration, media_time = struct.unpack(">Ii", data[elst + 16:elst + 24])
    struct.pack_into(">Ii", data, elst + 16, duration - cut * movie_scale // FPS, media_time + cut * track_scale // FPS)
    with open(path, "wb") as f:
        f.write(bytes(data))
    return path


def _mkv_repeated_pts(path: str) -> str:
    """Frame 17 carries frame 16's timestamp (a muxer bug seen in screen recordings)."""
    source = _x264(path + ".src.mkv", X264_GOP + ":bframes=0")
    with av.open(source) as c, av.open(path, "w") as out:
        stream = out.add_stream_from_template(c.streams.video[0])
        time_base = c.streams.video[0].time_base
        for n, packet in enumerate(p for p in c.demux(video=0) if p.size):
            t = (n - (n == 17)) * 1000 // FPS
            packet.stream, packet.pts, packet.dts, packet.time_base = stream, t, t, time_base
            out.mux(packet)
    os.remove(source)
    return path


def _av1(path: str) -> str:
    os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints its configuration to stderr otherwise
    return write_mp4(path, corpus_frames(), fps=FPS, codec="libsvtav1", options={"svtav1-params": "keyint=12"})


OPEN_GOP = X264_GOP + ":open-gop=1:bframes=3:b-pyramid=normal"

#: name -> (file name, maker, what makes it hard)
CORPUS: dict[str, tuple[str, Callable[[str], str], str]] = {
    "mp4_h264": ("h264.mp4", _x264, "plain H.264 with B-frames, closed GOP 12 (control: decord is exact)"),
    "avi_mpeg4_bframes": ("mpeg4_bframes.avi", _avi_mpeg4_bframes,
                          "MPEG-4 Part 2 with B-frames in AVI: no stored pts, decode order in the file"),
    "avi_mpeg4_packed": ("mpeg4_packed.avi", _avi_mpeg4_packed, "DivX-style packed B-frames and N-VOPs"),
    "avi_msmpeg4": ("msmpeg4.avi", lambda p: write_mp4(p, corpus_frames(), fps=FPS, codec="msmpeg4v3", gop=12),
                    "MS-MPEG4 v3 (DivX 3) in AVI, no B-frames"),
    "avi_mjpeg": ("mjpeg.avi", lambda p: write_mp4(p, corpus_frames(), fps=FPS, codec="mjpeg", pix_fmt="yuvj420p"),
                  "Motion JPEG in AVI: every frame a keyframe"),
    "mpeg1_ps_concat": ("mpeg1_concat.mpg", lambda p: _program_stream(p, "mpeg1video", parts=2),
                        "MPEG-1 program stream, two files concatenated: duration says 16 frames, 40 decode"),
    "mpeg2_ps": ("mpeg2.mpg", lambda p: _program_stream(p, "mpeg2video", parts=1),
                 "MPEG-2 program stream with B-frames: no index, seeks land on non-keyframes"),
    "mpeg2_ps_concat": ("mpeg2_concat.mpg", lambda p: _program_stream(p, "mpeg2video", parts=2),
                        "MPEG-2 program stream, concatenated: timestamps restart, duration misleading"),
    "mkv_vfr": ("vfr.mkv", _vfr, "variable frame rate (10-40 ms gaps), H.264 in Matroska"),
    "mp4_vfr": ("vfr.mp4", _vfr, "variable frame rate (10-40 ms gaps), H.264 in mp4"),
    "mp4_start_offset": ("start_offset.mp4", lambda p: _x264(p, pts=[i + 7 for i in range(FRAMES)]),
                         "first frame at 0.28 s (an edit list with an empty edit, non-zero start time)"),
    "mp4_edit_list_cut": ("edit_list_cut.mp4", _mp4_edit_list_cut,
                          "edit list skipping the first 3 frames (discarded packets; header says 40, 37 decode)"),
    "mp4_h264_open_gop": ("open_gop.mp4", lambda p: _x264(p, OPEN_GOP),
                          "H.264 open GOP with a B-pyramid: keyframes decode before frames shown earlier"),
    "mkv_h264_open_gop": ("open_gop.mkv", lambda p: _x264(p, OPEN_GOP), "the same in Matroska"),
    "mp4_hevc": ("hevc.mp4", lambda p: write_mp4(p, corpus_frames(), fps=FPS, codec="libx265", options={
        "x265-params": "keyint=12:min-keyint=12:scenecut=0:bframes=3:log-level=error"}), "HEVC with B-frames"),
    "webm_vp9": ("vp9.webm", lambda p: write_mp4(p, corpus_frames(), fps=FPS, codec="libvpx-vp9", gop=12),
                 "VP9 in WebM (hidden alt-ref frames)"),
    "webm_av1": ("av1.webm", _av1, "AV1 in WebM (decord cannot open it)"),
    "mkv_repeated_pts": ("repeated_pts.mkv", _mkv_repeated_pts, "two frames share one timestamp"),
    "h264_raw": ("raw.h264", lambda p: _x264(p, container_format="h264"), "raw H.264 stream: no timestamps at all"),
    "ts_h264": ("h264.ts", lambda p: _x264(p, container_format="mpegts"),
                "H.264 in MPEG-TS: decord's frame list looks right but its frames are a GOP late"),
    "asf_wmv2": ("wmv2.wmv", lambda p: write_mp4(p, corpus_frames(), fps=FPS, codec="wmv2", gop=12,
                                                 container_format="asf"),
                 "WMV2 in ASF: decord's frame list looks right but its seeks land in other GOPs"),
}


def make_corpus(folder: str | os.PathLike, names: list[str] | None = None) -> dict[str, str]:
    """Write the corpus files (all, or ``names``) into ``folder``; returns ``{name: path}``."""
    folder = os.fspath(folder)
    os.makedirs(folder, exist_ok=True)
    return {name: CORPUS[name][1](os.path.join(folder, CORPUS[name][0])) for name in (names or list(CORPUS))}
