"""Shared test set-up: the repo root on sys.path, GPU tests skipped where no GPU is present, the
session's single-process reference runs."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
sys.path.insert(0, str(REPO))


def _has_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    if _has_cuda():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def reference_runs(tmp_path_factory):
    """Each single-process reference (tests/helpers.py: single_process_reference) trains once a session."""
    from tests import helpers

    helpers.REFERENCES = helpers.ReferenceRuns(lambda: tmp_path_factory.mktemp("references"))
    yield helpers.REFERENCES
    helpers.REFERENCES = None
