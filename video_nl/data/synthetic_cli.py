"""``video-nl make-synthetic OUT [--classes K ...] [--multi-label ...]``: writes the single-label synthetic set
(:mod:`video_nl.data.synthetic`) or, with ``--multi-label``, the multi-label one
(:mod:`video_nl.data.synthetic_multilabel`)."""
from __future__ import annotations

import argparse
import os

from . import synthetic, synthetic_multilabel


def main(args: argparse.Namespace) -> None:
    """Write the set the arguments ask for; options left unset take the generator's defaults."""
    multi = getattr(args, "multi_label", False)
    defaults = synthetic_multilabel.DEFAULTS if multi else synthetic.DEFAULTS
    make = synthetic_multilabel.make_synthetic_multilabel if multi else synthetic.make_synthetic
    options = {k: getattr(args, k) for k in defaults if getattr(args, k, None) is not None}
    lists = make(args.out, seed=args.seed, workers=args.workers, **{**defaults, **options})
    out = os.path.abspath(args.out)
    extra = " DATA.MULTI_LABEL True; configs/Synthetic/*_multilabel.yaml" if multi else ""
    print(f"wrote {len(lists['train'])} train and {len(lists['val'])} val {'multi-label ' if multi else ''}videos to "
          f"{out} (set DATA.PATH_TO_DATA_DIR {out}{extra})")
