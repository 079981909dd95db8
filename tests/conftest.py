"""Project-wide fixtures: every test runs in its own temporary IMF_HOME."""

from __future__ import annotations

import os
from pathlib import Path

# As the imf command does (imf_cli.runtime.yield_idle_threads): OpenMP threads sleep when idle, so a
# busy CI machine is not slowed further by spinning threads. Set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest

from helpers import TINY_TEST, TINY_TRAIN, TINY_VALID, write_tsv_dataset


@pytest.fixture(autouse=True)
def imf_home(tmp_path_factory, monkeypatch) -> Path:
    """A fresh, empty workspace per test; nothing is written to the user's real data directory."""
    home = tmp_path_factory.mktemp("imf-home")
    monkeypatch.setenv("IMF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    return home


@pytest.fixture
def tiny_tsv(tmp_path) -> Path:
    """A 7-entity KG in the tsv layout with names and descriptions for some entities."""
    names = ["paris", "berlin", "madrid", "france", "germany", "spain", "europe"]
    entities = [{"id": n, "name": n.title()} for n in names]
    entities[3]["description"] = "Republic in Western Europe, capital Paris"
    entities[4]["description"] = "Federal republic in Central Europe"
    return write_tsv_dataset(tmp_path / "tiny", train=TINY_TRAIN, valid=TINY_VALID, test=TINY_TEST, entities=entities)


@pytest.fixture
def fake_text_encoder(monkeypatch):
    """Register ``fake-text``: 8 numbers per text from its SHA-256; no weights, instant, deterministic.

    ``fake_text_encoder.encoded`` lists every text it was asked to encode, in order.
    """
    import hashlib

    import numpy as np
    import torch

    from kgdata.encoders import REGISTRY, Encoder

    class FakeTextEncoder(Encoder):
        name = "fake-text"
        modality = "text"
        encoded: list[str] = []

        def __init__(self, *, width: int = 8):
            super().__init__(width=width)

        @property
        def dim(self) -> int:
            return self.options["width"]

        def load(self, device) -> None:
            self.device = device

        def encode(self, batch):
            type(self).encoded.extend(batch)
            rows = [np.frombuffer(hashlib.sha256(text.encode()).digest()[: self.dim], np.uint8) for text in batch]
            return torch.tensor(np.stack(rows), dtype=torch.float32) / 255

    FakeTextEncoder.encoded = []
    monkeypatch.setitem(REGISTRY, FakeTextEncoder.name, FakeTextEncoder)
    return FakeTextEncoder


@pytest.fixture(scope="session")
def places_run(tmp_path_factory):
    """``(home, run_dir)``: a trained four-branch run on ``places``, whose store also holds two entities
    added after training (``lyon`` with text and image, ``blank`` with neither); see ``unseen_helpers``.
    Trained once per session; tests point ``IMF_HOME`` at ``home`` themselves."""
    import torch

    from unseen_helpers import build_run

    home = tmp_path_factory.mktemp("places-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("IMF_HOME", str(home))
        patch.setenv("HF_HUB_OFFLINE", "1")
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            yield home, build_run(home, tmp_path_factory.mktemp("places-data"), patch)
        finally:
            torch.set_num_threads(threads)
