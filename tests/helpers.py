"""Helpers shared by tests: tiny datasets written to disk, and access to ../shared datasets."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATASETS = REPO.parent / "shared" / "datasets"


def shared_dataset(name: str) -> Path:
    """Path of a shared benchmark dataset, skipping the test cleanly when it is absent."""
    path = SHARED_DATASETS / name
    if not path.is_dir():
        pytest.skip(f"shared dataset {name} not available at {path}")
    return path


def write_tsv_dataset(
    root: Path,
    *,
    train: list[tuple[str, str, str]],
    valid: list[tuple[str, str, str]] = (),
    test: list[tuple[str, str, str]] = (),
    entities: list[dict] | None = None,
) -> Path:
    """Write a dataset in the ``tsv`` layout and return its directory."""
    root.mkdir(parents=True, exist_ok=True)
    for split, rows in (("train", train), ("valid", valid), ("test", test)):
        (root / f"{split}.txt").write_text("".join("\t".join(row) + "\n" for row in rows), encoding="utf-8")
    if entities is not None:
        columns = ["id", "name", "description", "image"]
        lines = ["\t".join(columns)]
        lines += ["\t".join(str(e.get(c) or "") for c in columns) for e in entities]
        (root / "entities.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


TINY_TRAIN = [
    ("paris", "capital_of", "france"),
    ("berlin", "capital_of", "germany"),
    ("france", "borders", "germany"),
    ("germany", "borders", "france"),
    ("france", "in", "europe"),
    ("germany", "in", "europe"),
    ("madrid", "capital_of", "spain"),
    ("spain", "borders", "france"),
]
TINY_VALID = [("spain", "in", "europe")]
TINY_TEST = [("france", "borders", "spain")]


def cli(*args: str):
    """Run ``imf ARGS`` in-process (Typer's CliRunner); the result has ``exit_code``, ``output`` and ``stdout``."""
    from typer.testing import CliRunner

    from imf_cli.main import app

    return CliRunner().invoke(app, list(args))


def cli_ok(*args: str):
    """``cli(*args)``, asserting that it succeeded."""
    result = cli(*args)
    assert result.exit_code == 0, result.output
    return result


#: What ``imf train`` says before it starts (the branches it trains and skips): information, not an error.
PLAN_LINES = ("Training branches: ", "Skipped ")


def _is_context(line: str) -> bool:
    """A line that is not part of an error: the branch plan, or a progress line (``Ranking … …``)."""
    return line.startswith(PLAN_LINES) or line.rstrip().endswith(" …")


def error_line(result, code: int = 2) -> str:
    """The one line a failed command printed (asserting its exit code, and that there is no traceback).

    ``imf train``'s branch plan and the progress lines printed without a terminal are not part of it.
    """
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip() and not _is_context(line)]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


#: The word pieces of :func:`make_tiny_bert`'s tokenizer.
TINY_VOCAB = (
    "[PAD] [UNK] [CLS] [SEP] [MASK] the a an of in with and is to country island north south sea "
    "flag red blue green small region organisation countries only seen test split alpha beta gamma "
    "delta epsilon zeta united nations city capital republic kingdom state europe western central "
    "southern"
).split()


def make_tiny_bert(root: Path) -> Path:
    """Save a randomly initialised 2-layer BERT (hidden size 32) with a word-piece tokenizer under ``root``.

    Returns the model directory, for the encoder id ``hf:<directory>``. Nothing is downloaded.
    """
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    root.mkdir(parents=True, exist_ok=True)
    vocab = root / "vocab.txt"
    vocab.write_text("\n".join(TINY_VOCAB) + "\n", encoding="utf-8")
    tokenizer = BertTokenizer(vocab=str(vocab))
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(TINY_VOCAB),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=64,
    )
    model = BertModel(config)
    directory = root / "model"
    tokenizer.save_pretrained(directory)
    model.save_pretrained(directory)
    return directory


def tiny_cnn_class() -> type:
    """``tiny-cnn``: a small randomly initialised CNN image encoder (8-d, 16×16 inputs), not yet registered."""
    import torch
    from torch import nn

    from kgdata.encoders import ImageEncoder

    class TinyCNNEncoder(ImageEncoder):
        name = "tiny-cnn"
        output_dim = 8
        image_size = 16
        resize_size = 16

        def __init__(self, *, width: int = 4):
            super().__init__(width=width)

        def build(self) -> nn.Module:
            torch.manual_seed(0)
            width = self.options["width"]
            return nn.Sequential(
                nn.Conv2d(3, width, 3, padding=1),
                nn.ReLU(),
                nn.AdaptiveAvgPool2d(1),
                nn.Flatten(),
                nn.Linear(width, self.output_dim),
            )

    return TinyCNNEncoder
