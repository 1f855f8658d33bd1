"""Where context blocks go: NONLOCAL.PRESET / NONLOCAL.LOCATION → block indices per stage (res2..res5).

A context block placed at index ``i`` of stage ``s`` runs right after residual block ``i`` of that stage
(0-indexed, after the block's output ReLU). Presets (paper §5.1 / Caffe2 / PySlowFast):

* ``1``: one block in res4, right before its last residual block (after block ``depth4 - 2``).
* ``5``: res3 {1, 3} and res4 {1, 3, 5} (the released R50 models and every PySlowFast *_NLN_* config,
  R101 included).
* ``5_caffe2``: Caffe2's R101 placement, res3 {1, 3} and res4 {6, 13, 20} (every 7th block); for a res4
  of at most 6 blocks (R50/R34) it equals ``5``, as in Caffe2.
* ``10``: every block of res3 plus 6 evenly spaced res4 blocks ending with the last one — every res4
  block for R50/R34 (the paper's 10-block model), ``{2, 6, 10, 14, 18, 22}`` for R101 (every 4th block).
"""
from __future__ import annotations

from collections.abc import Sequence

from ..errors import UserError

STAGES = (2, 3, 4, 5)


def preset_locations(preset: str, depths: Sequence[int]) -> list[list[int]]:
    """Block indices per stage (res2..res5) for a ``NONLOCAL.PRESET`` given the stage depths."""
    d3, d4 = depths[1], depths[2]
    if preset == "1":
        return [[], [], [d4 - 2], []]
    if preset == "5" or (preset == "5_caffe2" and d4 <= 6):
        return [[], [1, 3], [1, 3, 5], []]
    if preset == "5_caffe2":
        return [[], [1, 3], [i for i in range(d4) if i % 7 == 6][:3], []]
    if preset == "10":
        n = min(6, d4)
        return [[], list(range(d3)), [(j + 1) * d4 // n - 1 for j in range(n)], []]
    raise UserError(f"Unknown NONLOCAL.PRESET {preset!r}; valid presets are '', 1, 5, 5_caffe2 and 10.")


def resolve_locations(*, preset: str, location: Sequence[Sequence[int]], depths: Sequence[int],
                      depth: int) -> list[list[int]]:
    """The validated, sorted block indices per stage: the preset when given, else ``NONLOCAL.LOCATION``.

    Raises:
        UserError: an index is outside a stage (the message names the stage depth) or repeated.
    """
    source = f"NONLOCAL.PRESET {preset}" if preset else "NONLOCAL.LOCATION"
    locations = preset_locations(preset, depths) if preset else [list(x) for x in location]
    if len(locations) != len(STAGES):
        raise UserError(f"{source} needs one list per stage res2..res5 (4 lists), got {locations}.")
    for stage, indices, n in zip(STAGES, locations, depths):
        bad = [i for i in indices if not 0 <= i < n]
        if bad:
            raise UserError(f"{source} puts a context block after block(s) {bad} of res{stage}, but res{stage} of "
                            f"a ResNet-{depth} has {n} blocks (valid indices 0..{n - 1}).")
        if len(set(indices)) != len(indices):
            raise UserError(f"{source} repeats a block index in res{stage}: {list(indices)}.")
    return [sorted(x) for x in locations]
