"""Hostile dataset files: control characters, FIFOs, link loops, escaping image paths, id typos, odd names."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from helpers import REPO, TINY_TEST, TINY_TRAIN, TINY_VALID, write_tsv_dataset
from imf_cli.main import app
from kgdata.errors import DataError, ImfError
from kgdata.importing import import_dataset

runner = CliRunner()


def tiny(tmp_path, **kwargs):
    return write_tsv_dataset(tmp_path / "tiny", train=TINY_TRAIN, valid=TINY_VALID, test=TINY_TEST, **kwargs)


@pytest.mark.parametrize(
    ("file_name", "line_bytes", "shown"),
    [
        ("train.txt", b"paris\tcapital_of\tfra\x00nce\n", "U+0000"),
        ("train.txt", b"paris\tcapi\rtal_of\tfrance\n", "U+000D"),
        ("valid.txt", b"spain\tin\teu\x1b[31mrope\n", "U+001B"),
        ("test.txt", b"spain\tin\teurope\x7f\n", "U+007F"),
        ("entities.tsv", b"paris\tPar\x0bis\tcity\t\n", "U+000B"),
        # a line separator inside a field: rich and splitlines break the row there
        ("entities.tsv", "paris\tParis\tcapital\u2028of France\t\n".encode(), "U+2028 (LINE SEPARATOR)"),
        ("train.txt", "paris\tcapital\u2029of\tfrance\n".encode(), "U+2029 (PARAGRAPH SEPARATOR)"),
        # bidirectional overrides and isolates reorder a name on screen (Trojan Source)
        ("entities.tsv", "paris\t\u202esiraP\tcity\t\n".encode(), "U+202E (RIGHT-TO-LEFT OVERRIDE)"),
        ("valid.txt", "spain\tin\teu\u2067rope\n".encode(), "U+2067 (RIGHT-TO-LEFT ISOLATE)"),
    ],
)
def test_control_characters_in_a_field_are_refused_with_file_and_line(tmp_path, imf_home, file_name, line_bytes, shown):
    names = ["paris", "berlin", "madrid", "france", "germany", "spain", "europe"]
    root = tiny(tmp_path, entities=[{"id": n} for n in names])
    path = root / file_name
    lines = path.read_bytes().splitlines(keepends=True)
    lines.insert(1, line_bytes)
    path.write_bytes(b"".join(lines))
    with pytest.raises(DataError, match=re.escape(shown)) as error:
        import_dataset(root)
    assert (error.value.path, error.value.line) == (path, 2)
    assert "control character" in str(error.value)
    assert not (imf_home / "datasets" / "tiny").exists()


def test_right_to_left_names_and_their_marks_import_as_written(tmp_path, imf_home):
    """Only the overrides and isolates are refused: Arabic and Hebrew text, the implicit marks
    U+200E/U+200F, zero-width and no-break spaces are ordinary text."""
    from kgdata.store import EntityStore

    names = {"paris": "باريس\u200f", "berlin": "ברלין", "madrid": "Ma\u200bdrid\u00a0(ES)"}
    others = ["france", "germany", "spain", "europe"]
    root = tiny(tmp_path, entities=[{"id": key, "name": name} for key, name in names.items()] + [{"id": k} for k in others])
    import_dataset(root)
    with EntityStore.open("tiny") as store:
        assert {key: store.entity(key).name for key in names} == names


def test_a_trailing_carriage_return_is_a_line_ending_not_a_control_character(tmp_path):
    root = tiny(tmp_path)
    train = root / "train.txt"
    train.write_bytes(train.read_bytes().replace(b"\n", b"\r\n"))
    assert import_dataset(root).train == len(TINY_TRAIN)


def run_import(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """`imf import` in a subprocess, so that a reader that blocks on a FIFO fails the test instead of hanging it."""
    return subprocess.run(
        [sys.executable, "-m", "imf_cli", "import", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


@pytest.mark.parametrize("file_name", ["train.txt", "entities.tsv", "relations.tsv"])
def test_a_fifo_in_place_of_a_dataset_file_is_refused_by_name(tmp_path, imf_home, file_name):
    root = tiny(tmp_path)
    (root / file_name).unlink(missing_ok=True)
    os.mkfifo(root / file_name)
    result = run_import(str(root))
    assert result.returncode == 2, result.stderr
    assert f"{root / file_name}" in result.stderr and "FIFO" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_a_symlink_loop_in_place_of_train_is_named(tmp_path, imf_home):
    root = tiny(tmp_path)
    (root / "train.txt").unlink()
    os.symlink("train.txt", root / "train.txt")
    with pytest.raises(DataError, match="symbolic link loop") as error:
        import_dataset(root)
    assert error.value.path == root / "train.txt"


@pytest.mark.parametrize(
    ("image", "message"),
    [
        ("../../../../../../../../etc/hostname", "leads outside"),
        ("/etc/hostname", "is absolute"),
        ("images/outside-link.png", "leads outside"),
        ("images/fifo.png", "FIFO"),
        ("images", "is a directory"),
    ],
)
def test_image_paths_must_stay_inside_the_dataset_directory(tmp_path, image, message):
    outside = tmp_path / "secret.png"
    outside.write_bytes(b"not yours")
    root = tiny(tmp_path, entities=[{"id": "paris", "image": image}])
    (root / "images").mkdir()
    os.symlink(outside, root / "images" / "outside-link.png")
    os.mkfifo(root / "images" / "fifo.png")
    with pytest.raises(DataError, match=message) as error:
        import_dataset(root)
    assert (error.value.path, error.value.line) == (root / "entities.tsv", 2)


def test_an_image_inside_the_dataset_is_stored_by_its_absolute_path(tmp_path, imf_home):
    names = ["berlin", "madrid", "france", "germany", "spain", "europe"]
    root = tiny(tmp_path, entities=[{"id": "paris", "image": "images/../images/p.png"}, *({"id": n} for n in names)])
    (root / "images").mkdir()
    (root / "images" / "p.png").write_bytes(b"png")
    import_dataset(root)
    from kgdata.store import EntityStore

    with EntityStore.open("tiny") as store:
        assert store.entity("paris").image == str((root / "images" / "p.png").resolve())


def write_ids(root, train: str, relation2id: str | None = None):
    root.mkdir()
    (root / "entity2id.txt").write_text("a 0\nb 1\nc 2\n")
    if relation2id is not None:
        (root / "relation2id.txt").write_text(relation2id)
    (root / "train.txt").write_text(train)
    (root / "valid.txt").write_text("0\t0\t2\n")
    (root / "test.txt").write_text("1\t0\t2\n")
    return root


@pytest.mark.parametrize("typo", ["10000000", "300000000", "100000000000000000000"])
def test_a_typo_in_an_ids_relation_id_is_an_error_not_millions_of_relations(tmp_path, imf_home, typo):
    root = write_ids(tmp_path / "ids", f"0\t0\t1\n1\t1\t2\n2\t{typo}\t0\n")
    with pytest.raises(DataError, match="relation ids must be dense, or declared in relation2id.txt") as error:
        import_dataset(root)
    assert (error.value.path, error.value.line) == (root / "train.txt", 3)
    assert f"relation id {typo}" in str(error.value)
    assert not (imf_home / "datasets" / "ids").exists()


def test_dense_and_declared_relation_ids_still_import(tmp_path):
    assert import_dataset(write_ids(tmp_path / "dense", "0\t0\t1\n1\t2\t2\n"), name="dense").relations == 3
    declared = write_ids(tmp_path / "declared", "0\t0\t1\n1\t4\t2\n", relation2id="".join(f"r{i} {i}\n" for i in range(5)))
    assert import_dataset(declared, name="declared").relations == 5


@pytest.mark.parametrize("name", ["crlf\n", "crlf\r\n", "", " ", "../evil", "a/b", "x" * 65, "-dash", ".hidden"])
def test_bad_dataset_names_are_refused(tmp_path, imf_home, name):
    root = tiny(tmp_path)
    with pytest.raises(ImfError, match="invalid dataset name"):
        import_dataset(root, name=name)
    result = runner.invoke(app, ["import", str(root), "--name", name])
    assert result.exit_code == 2 and "invalid dataset name" in result.output
    assert not (imf_home / "datasets").exists() or not any((imf_home / "datasets").glob("*/store.db"))


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b"paris\t\tfrance\n", "the relation field is empty"),
        (b" \t\tfrance\n", "the head and relation fields are empty"),
        (b"\t\t\n", "the head and relation and tail fields are empty"),  # was skipped as a blank line
        (b" \t \t \n", "the head and relation and tail fields are empty"),
        (b"paris\tcapital_of\tfrance\t\n", "expected 3 tab-separated fields (head, relation, tail), got 4"),
    ],
)
def test_an_empty_or_extra_field_is_named(tmp_path, imf_home, line, message):
    root = write_tsv_dataset(tmp_path / "d", train=TINY_TRAIN, valid=TINY_VALID, test=TINY_TEST)
    (root / "valid.txt").write_bytes(line)
    with pytest.raises(DataError) as caught:
        import_dataset(root)
    assert str(caught.value).startswith(f"{root / 'valid.txt'}:1: {message}")


def test_names_decoded_from_uris_never_hold_control_characters(tmp_path, imf_home):
    from kgdata.files import control_character
    from kgdata.importers.common import name_from_uri
    from kgdata.store import EntityStore

    # Percent escapes still decode to letters; escapes of control characters stay escapes.
    assert name_from_uri("<http://dbpedia.org/resource/Caf%C3%A9_Paris>") == "Café Paris"
    assert name_from_uri("<http://x/Evil%1B%5B31mRED%1B%5B0m>") == "Evil%1B[31mRED%1B[0m"
    assert name_from_uri("<http://x/%E2%80%AEgpj.exe>") == "%E2%80%AEgpj.exe"
    root = write_ids(tmp_path / "uris", "0\t0\t1\n1\t0\t2\n")
    (root / "entity2id.txt").write_text("<http://x/A> 0\n<http://x/n%0Al%00> 1\n<http://x/%E2%80%AEgpj.exe> 2\n")
    (root / "relation2id.txt").write_text("<http://x/r%1B%5B2J> 0\n")
    import_dataset(root, name="uris")
    with EntityStore.open("uris") as store:
        names = [e.name for e in store.entities(range(3))] + [r.name for r in store.relations()]
    assert names == ["A", "n%0Al%00", "%E2%80%AEgpj.exe", "r%1B[2J"]
    assert not any(control_character(name) for name in names)


def test_a_line_longer_than_a_mebibyte_is_refused_without_reading_all_of_it(tmp_path, imf_home):
    import gzip

    from kgdata.importers.common import MAX_LINE_BYTES

    root = tiny(tmp_path)
    (root / "test.txt").unlink()
    with gzip.open(root / "test.txt.gz", "wb") as handle:  # 1.3 MB compressed would be 300 MB here
        handle.write(b"paris\tcapital_of\tfrance\n")
        handle.write(b"a\tr\t" + b"x" * (2 * MAX_LINE_BYTES) + b"\n")
    with pytest.raises(DataError, match=f"longer than {MAX_LINE_BYTES:,} bytes") as error:
        import_dataset(root)
    assert (error.value.path, error.value.line) == (root / "test.txt.gz", 2)
    assert not (imf_home / "datasets" / "tiny").exists()


def test_a_column_named_twice_in_a_header_is_refused_with_file_and_line(tmp_path, imf_home):
    """`id name description name`: read into a dict, the empty last column won, and every entity lost
    its name without a word."""
    names = ["paris", "berlin", "madrid", "france", "germany", "spain", "europe"]
    root = tiny(tmp_path, entities=[{"id": n, "name": n.title()} for n in names])
    path = root / "entities.tsv"
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0] + "\tname", *(line + "\t" for line in lines[1:])]) + "\n")
    with pytest.raises(DataError, match="the header names the column 'name' twice") as error:
        import_dataset(root)
    assert (error.value.path, error.value.line) == (path, 1)
    assert not (imf_home / "datasets" / "tiny").exists()
