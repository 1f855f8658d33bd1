"""Make ``tests/`` importable so tests can ``from helpers.videos import write_mp4``; skip ``cuda`` tests without a
GPU; keep frame indexes that tests build without an index folder out of the user's cache; share the
frame-exactness corpus."""
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


@pytest.fixture(scope="session", autouse=True)
def _frame_index_cache(tmp_path_factory):
    """``VIDEO_NL_CACHE_DIR`` for the session (inherited by decode helpers and CLI subprocesses)."""
    before = os.environ.get("VIDEO_NL_CACHE_DIR")
    os.environ["VIDEO_NL_CACHE_DIR"] = str(tmp_path_factory.mktemp("video_nl_cache"))
    yield
    if before is None:
        os.environ.pop("VIDEO_NL_CACHE_DIR", None)
    else:
        os.environ["VIDEO_NL_CACHE_DIR"] = before


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> dict[str, str]:
    """Every file of ``helpers.corpus.CORPUS``, made once per session: ``{name: path}``."""
    from helpers.corpus import make_corpus

    return make_corpus(tmp_path_factory.mktemp("corpus"))
