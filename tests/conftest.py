"""Make ``tests/`` importable so tests can ``from helpers.videos import write_mp4``; skip ``cuda`` tests without a GPU."""
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

NO_GPU = "needs a CUDA GPU and torch sees none (run `bash scripts/gpu_check.sh` on a GPU machine; docs/performance.md)"


def pytest_collection_modifyitems(config, items):
    """Tests marked ``cuda`` are skipped, with the reason, where ``torch.cuda.is_available()`` is False."""
    if torch.cuda.is_available():
        return
    for item in items:
        if item.get_closest_marker("cuda") is not None:  # not item.keywords: it holds names and ids too
            item.add_marker(pytest.mark.skip(reason=NO_GPU))
