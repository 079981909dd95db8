"""``imf encode`` and ``imf features`` through Typer's CliRunner: output, JSON, and one-line errors."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from imf_cli.main import app

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args))


def flat(text: str) -> str:
    """Rich output as one line: box-drawing borders and line breaks become single spaces."""
    return " ".join(re.sub(r"[│┃╭╮╰╯─━]", " ", text).split())


def one_error_line(result) -> str:
    """The single non-empty stderr line of a failed command (exit status 2)."""
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture
def tiny_mm(mm_store):
    return mm_store.name


def test_encode_then_no_op_then_features_listing(tiny_mm, tiny_bert_dir):
    encoder = f"hf:{tiny_bert_dir}"
    result = invoke("encode", tiny_mm, "--modality", "text", "--encoder", encoder, "--pooling", "cls")
    assert result.exit_code == 0, result.output
    assert f"Stored text features of {tiny_mm} from {encoder}: 32-d, 9 of 10 entities covered, 1 missing" in flat(result.stdout)

    again = invoke("encode", tiny_mm, "-m", "text", "-e", encoder, "--pooling", "cls")
    assert again.exit_code == 0 and "Unchanged: text features" in flat(again.stdout) and "--force" in again.stdout

    forced = invoke("encode", tiny_mm, "-m", "text", "-e", encoder, "--pooling", "cls", "--force", "--json")
    report = json.loads(forced.stdout)
    assert report["status"] == "written" and report["dim"] == 32 and report["missing"] == 1

    listing = invoke("features", tiny_mm, "--json")
    (entry,) = json.loads(listing.stdout)
    assert (entry["modality"], entry["encoder"], entry["dim"], entry["covered"], entry["missing"]) == (
        "text", encoder, 32, 9, 1
    )
    assert entry["input_hash"] == report["input_hash"] and entry["extra"]["options"]["pooling"] == "cls"
    table = invoke("features", tiny_mm)
    assert table.exit_code == 0 and "text" in table.stdout and report["input_hash"][:10] in table.stdout
    assert "9/10" in table.stdout and "hf:/" in table.stdout


def test_features_of_a_dataset_without_any(tiny_mm):
    result = invoke("features", tiny_mm)
    assert result.exit_code == 0 and f"imf encode {tiny_mm} --modality text" in flat(result.stdout)
    assert json.loads(invoke("features", tiny_mm, "--json").stdout) == []


def test_image_encode_warns_about_unreadable_images(tiny_mm, tiny_cnn):
    result = invoke("encode", tiny_mm, "-m", "image", "-e", "tiny-cnn", "--json")
    assert result.exit_code == 0, result.output
    assert "1 image(s) could not be read" in flat(result.stderr)
    assert json.loads(result.stdout)["missing"] == 5


def test_structure_options_reach_the_encoder(tiny_mm):
    result = invoke("encode", tiny_mm, "-m", "structure", "--dim", "8", "--epochs", "2", "--seed", "7",
                    "--negatives", "2", "--lr", "0.01", "--margin", "0.5", "--batch-size", "8", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["extra"]["seed"] == 7
    assert report["extra"]["options"] == {
        "encoder": "gat", "dim": 8, "epochs": 2, "seed": 7, "negatives": 2, "lr": 0.01, "margin": 0.5,
        "batch_size": 8, "heads": 2, "layers": 2,
    }


def test_from_file_import_and_its_errors(tiny_mm, tmp_path):
    good = tmp_path / "vgg.npy"
    np.save(good, np.ones((10, 4), np.float32))
    result = invoke("encode", tiny_mm, "-m", "image", "--from-file", str(good), "--encoder", "vgg16-paper")
    assert result.exit_code == 0, result.output
    assert "Stored image features of tiny-mm from vgg16-paper: 4-d, 10 of 10" in flat(result.stdout)

    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.ones((4, 4), np.float32))
    line = one_error_line(invoke("encode", tiny_mm, "-m", "text", "--from-file", str(wrong)))
    assert line.startswith("Error: ") and "has 4 rows but dataset 'tiny-mm' has 10 entities" in line

    keys = tmp_path / "keys.txt"
    keys.write_text("country:alpha\nnobody\ncountry:beta\nregion:north\n")
    line = one_error_line(invoke("encode", tiny_mm, "-m", "text", "--from-file", str(wrong), "--keys", str(keys)))
    assert f"{keys}:2: entity key 'nobody' is not in the dataset" in line


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["encode", "nope", "-m", "text"], "no dataset named 'nope'"),
        (["encode", "{ds}", "-m", "text", "-e", "clip"], "unknown encoder 'clip' for text"),
        (["encode", "{ds}", "-m", "image", "-e", "minilm"], "encodes text, not image"),
        (["encode", "{ds}", "-m", "image", "--pooling", "cls"], "option --pooling does not apply to encoder 'efficientnet-lite0'"),
        (["encode", "{ds}", "-m", "text", "--keys", "k.txt"], "--keys names the rows of a --from-file file"),
        (["encode", "{ds}", "-m", "text", "--from-file", "x.npy", "--dim", "4"], "--dim cannot be combined with --from-file"),
        # ignored without a word before: a file's vectors are not computed on a device or downloaded
        (["encode", "{ds}", "-m", "text", "--from-file", "x.npy", "--device", "cuda"], "--device cannot be combined with --from-file"),
        (["encode", "{ds}", "-m", "text", "--from-file", "x.npy", "--download"], "--download cannot be combined with --from-file"),
        (["encode", "{ds}", "-m", "structure", "--from-file", "x.npy"], "text or image features, not 'structure'"),
        (["encode", "{ds}", "-m", "text", "-e", "bert-base-uncased"], "needs the Hugging Face model 'bert-base-uncased'"),
        (["features", "nope"], "no dataset named 'nope'"),
    ],
)
def test_bad_input_is_one_clear_line_and_exit_2(tiny_mm, tmp_path, monkeypatch, args, message):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    (tmp_path / "x.npy").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    line = one_error_line(invoke(*[a.replace("{ds}", tiny_mm) for a in args]))
    assert line.startswith("Error: ") and message in line


def test_bad_option_values_are_usage_errors(tiny_mm):
    for args in (["-m", "audio"], ["-m", "text", "--device", "tpu"], ["-m", "text", "--batch-size", "0"]):
        result = invoke("encode", tiny_mm, *args)
        assert result.exit_code == 2


def test_help_ends_with_an_example_and_mentions_the_pickle_caveat():
    encode_help = invoke("encode", "--help")
    assert encode_help.exit_code == 0
    assert "Example: imf encode countries-mm --modality text" in encode_help.stdout
    text = flat(encode_help.stdout)
    for name in ("minilm", "bert-base-uncased", "efficientnet-lite0", "vgg16", "gat", "hf:"):
        assert name in text
    assert "arbitrary code" in text and "weights_only=True" in text
    assert "Example: imf features countries-mm --json" in invoke("features", "--help").stdout


def test_the_cli_root_still_imports_no_torch():
    code = "import sys, imf_cli.main; sys.exit(int('torch' in sys.modules or 'transformers' in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
