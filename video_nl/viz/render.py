"""Pictures of attention: heatmap overlays, PNG montages (one column per frame) and animated GIF/MP4.

Everything is drawn with Pillow (fast, no display backend); colours come from a matplotlib colormap.
Frames are ``uint8 T×H×W×3`` (RGB, the clip as shown to the model), heatmaps ``float T×H×W`` on the same grid.
"""
from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..utils.io import atomic_write

COLORMAP = "inferno"
ALPHA = 0.6
MARK = (0, 255, 255)
TEXT = (20, 20, 20)
BACKGROUND = (255, 255, 255)


@dataclass(frozen=True)
class Marker:
    """A query drawn on the frames: position ``(t, y, x)`` and the ``box`` ``(t0, t1, y0, y1, x0, x1)`` (inclusive)
    of its feature cell in input indices."""

    t: int
    y: int
    x: int
    box: tuple[int, int, int, int, int, int]


@dataclass(frozen=True)
class HeatRow:
    """One montage row: a ``label``, a heatmap ``T×H×W`` and an optional ``reference`` level (e.g. uniform 1/N')
    ticked on the colour bar. Each row has its own colour scale, 0 to the row's maximum."""

    label: str
    heat: np.ndarray
    reference: float | None = None


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


@functools.cache
def _lut() -> np.ndarray:
    import matplotlib

    return (matplotlib.colormaps[COLORMAP](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.uint8)


def thumb_size(height: int, width: int, num_frames: int) -> tuple[int, int]:
    """``(h, w)`` of one montage cell: 96–256 px wide, narrower for long clips, aspect kept."""
    w = max(96, min(256, 4096 // max(num_frames, 1)))
    return max(1, round(w * height / width)), w


def overlay(frame: np.ndarray, heat: np.ndarray, vmax: float, size: tuple[int, int]) -> Image.Image:
    """Frame ``H×W×3`` blended with the colour-mapped ``heat`` ``H×W`` (scale 0..vmax), resized to ``size`` (h, w).

    The frame is resized bilinearly, the heatmap with nearest neighbour (each block is one attention cell).
    """
    h, w = size
    base = np.asarray(Image.fromarray(frame).resize((w, h), Image.BILINEAR), dtype=np.float32)
    level = np.clip(heat / vmax if vmax > 0 else np.zeros_like(heat), 0, 1)
    index = Image.fromarray((level * 255).round().astype(np.uint8)).resize((w, h), Image.NEAREST)
    colour = _lut()[np.asarray(index)].astype(np.float32)
    return Image.fromarray((base * (1 - ALPHA) + colour * ALPHA).round().astype(np.uint8))


def _draw_marker(draw: ImageDraw.ImageDraw, marker: Marker, t: int, scale: tuple[float, float],
                 origin: tuple[int, int]) -> None:
    """Cell box on the frames of the query's cell, a cross at the query pixel (bold in the query frame)."""
    sy, sx = scale
    oy, ox = origin
    t0, t1, y0, y1, x0, x1 = marker.box
    cy, cx = oy + (marker.y + 0.5) * sy, ox + (marker.x + 0.5) * sx
    if t0 <= t <= t1:
        draw.rectangle([ox + x0 * sx, oy + y0 * sy, ox + (x1 + 1) * sx - 1, oy + (y1 + 1) * sy - 1], outline=MARK)
    r, width = (6, 3) if t == marker.t else (3, 1)
    draw.line([cx - r, cy, cx + r, cy], fill=MARK, width=width)
    draw.line([cx, cy - r, cx, cy + r], fill=MARK, width=width)


def _colour_bar(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], vmax: float, reference: float | None,
                font: ImageFont.ImageFont) -> None:
    """Vertical colour bar in ``box`` (x0, y0, x1, y1), labelled 0 and vmax, with a tick at ``reference``."""
    x0, y0, x1, y1 = box
    lut = _lut()
    for y in range(y0, y1 + 1):
        level = (y1 - y) / max(y1 - y0, 1)
        draw.line([x0, y, x1, y], fill=tuple(int(c) for c in lut[round(level * 255)]))
    draw.text((x1 + 4, y0), f"{vmax:.3g}", fill=TEXT, font=font)
    draw.text((x1 + 4, y1 - font.size), "0", fill=TEXT, font=font)
    if reference is not None and 0 < reference < vmax:
        y = y1 - round(reference / vmax * (y1 - y0))
        draw.line([x0 - 3, y, x1 + 3, y], fill=(0, 200, 0), width=2)
        draw.text((x1 + 4, y - font.size // 2), "uniform", fill=(0, 140, 0), font=font)


def montage(frames: np.ndarray, rows: Sequence[HeatRow], *, title: str, marker: Marker | None = None) -> Image.Image:
    """A grid image: one column per frame, one row per :class:`HeatRow`, a colour bar per row.

    Args:
        frames: ``uint8 T×H×W×3`` clip frames.
        rows: heatmaps on the clip grid; each row is scaled 0..its maximum.
        title: text above the grid (block, query, ...).
        marker: query to draw on every row.
    """
    t_len, height, width = frames.shape[:3]
    ch, cw = thumb_size(height, width, t_len)
    font, small = _font(14), _font(11)
    label_h, header_h, gap, bar_w = 20, 16, 4, 90
    top = 8 + font.size * (title.count("\n") + 1) + 6 + header_h
    row_h = label_h + ch + gap
    canvas = Image.new("RGB", (t_len * (cw + gap) + bar_w + 8, top + len(rows) * row_h + 4), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    draw.multiline_text((8, 6), title, fill=TEXT, font=font)
    for t in range(t_len):
        query = marker is not None and t == marker.t
        draw.text((t * (cw + gap) + 2, top - header_h), f"t={t}" + (" query" if query else ""),
                  fill=(200, 0, 0) if query else TEXT, font=small)
    for r, row in enumerate(rows):
        y = top + r * row_h
        vmax = float(row.heat.max())
        draw.text((2, y + 2), row.label, fill=TEXT, font=small)
        for t in range(t_len):
            x = t * (cw + gap)
            canvas.paste(overlay(frames[t], row.heat[t], vmax, (ch, cw)), (x, y + label_h))
            if marker is not None:
                _draw_marker(draw, marker, t, (ch / height, cw / width), (y + label_h, x))
        bx = t_len * (cw + gap) + 4
        _colour_bar(draw, (bx, y + label_h, bx + 12, y + label_h + ch - 1), vmax, row.reference, small)
    return canvas


def animation_frames(frames: np.ndarray, heat: np.ndarray, *, title: str, marker: Marker | None = None,
                     min_size: int = 256) -> list[Image.Image]:
    """One image per clip frame: the overlay (at least ``min_size`` px high) under a header with title and frame."""
    t_len, height, width = frames.shape[:3]
    scale = max(1.0, min_size / height)
    h, w = round(height * scale), round(width * scale)
    font = _font(13)
    header = 6 + 2 * (font.size + 3)
    vmax = float(heat.max())
    out = []
    for t in range(t_len):
        image = Image.new("RGB", (w, h + header), BACKGROUND)
        draw = ImageDraw.Draw(image)
        draw.text((4, 3), title, fill=TEXT, font=font)
        draw.text((4, 6 + font.size), f"frame {t}/{t_len - 1}  max {vmax:.3g}", fill=TEXT, font=font)
        image.paste(overlay(frames[t], heat[t], vmax, (h, w)), (0, header))
        if marker is not None:
            _draw_marker(draw, marker, t, (h / height, w / width), (header, 0))
        out.append(image)
    return out


def write_png(image: Image.Image, path: str | os.PathLike) -> None:
    """Save ``image`` as PNG atomically."""
    with atomic_write(path, "wb") as f:
        image.save(f, format="PNG")


def write_gif(images: Sequence[Image.Image], path: str | os.PathLike, *, fps: float = 4.0) -> None:
    """Animated GIF (looping), one GIF frame per image, atomically."""
    with atomic_write(path, "wb") as f:
        images[0].save(f, format="GIF", save_all=True, append_images=list(images[1:]), loop=0,
                       duration=round(1000 / fps), disposal=1)


def write_mp4(images: Sequence[Image.Image], path: str | os.PathLike, *, fps: float = 4.0) -> None:
    """H.264 MP4 (sizes padded to even), one video frame per image, atomically (``data.encoding.write_video``)."""
    from ..data.encoding import write_video

    w, h = images[0].size
    canvas = Image.new("RGB", (w + w % 2, h + h % 2), BACKGROUND)
    frames = []
    for image in images:
        canvas.paste(image, (0, 0))
        frames.append(np.asarray(canvas).copy())
    write_video(os.fspath(path), frames, fps=fps)
