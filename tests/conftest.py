"""Shared fixtures: a small generated GLR dataset and the real photographs in ../shared/data."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """Real test photographs (never copied into the repository); may be absent."""
    return Path(os.environ.get("LANDMARK_RETRIEVAL_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = shared_data_dir()
    if not (path / "groups.csv").is_file():
        pytest.skip(f"real photographs not available at {path}")
    return path


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory) -> Path:
    """A small GLR-layout dataset generated from the demo photographs (seeded)."""
    from landmark_retrieval.demo import DemoSpec, build_demo_dataset

    root = tmp_path_factory.mktemp("small") / "data"
    return build_demo_dataset(root, DemoSpec(train_views=2, test_views=1, distractor_views=1, seed=3))


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture(autouse=True)
def _package_logger(caplog):
    """Capture the package logger (it does not propagate) and undo a CLI run's ``-q``."""
    import logging

    logger = logging.getLogger("landmark_retrieval")
    level = logger.level
    logger.addHandler(caplog.handler)
    caplog.set_level(logging.INFO, logger="landmark_retrieval")
    yield
    logger.removeHandler(caplog.handler)
    logger.setLevel(level)


@pytest.fixture
def offline(monkeypatch):
    """No network at all: any socket connection or torch hub download fails the test."""
    import socket

    def refuse(*args, **kwargs):
        raise AssertionError("a network connection was attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    try:
        import torch.hub
    except ImportError:
        return
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
