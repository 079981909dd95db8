"""Per-dataset locks: concurrent imports, --replace under readers, and stale temporary files."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest
from typer.testing import CliRunner

from helpers import REPO
from imf_cli.main import app
from kgdata import importing
from kgdata.errors import DatasetExistsError
from kgdata.importing import ImportReport, import_dataset
from kgdata.locking import DatasetBusyError, clean_stale_temporaries, dataset_lock

runner = CliRunner()


def test_two_imports_of_one_new_name_never_both_succeed(tiny_tsv, imf_home, monkeypatch):
    """The second import waits for the first, then sees the dataset and refuses: no silent loss."""
    writing, finish = threading.Event(), threading.Event()
    real_write = importing.write_store

    def slow_write(path, parsed, metadata):
        writing.set()
        finish.wait(20)
        real_write(path, parsed, metadata)

    monkeypatch.setattr(importing, "write_store", slow_write)
    results, waits = {}, []

    def run(tag: str) -> None:
        try:
            results[tag] = import_dataset(tiny_tsv, name="race", on_wait=waits.append)
        except Exception as error:  # noqa: BLE001 - the test inspects it
            results[tag] = error

    first = threading.Thread(target=run, args=("first",))
    first.start()
    assert writing.wait(20)
    second = threading.Thread(target=run, args=("second",))
    second.start()
    time.sleep(0.5)
    assert second.is_alive(), "the second import must wait for the first"
    assert waits and "Waiting for another imf command" in waits[0]
    finish.set()
    first.join(20)
    second.join(20)
    assert isinstance(results["first"], ImportReport)
    assert isinstance(results["second"], DatasetExistsError)
    assert "pass --replace" in str(results["second"])


def test_replace_fails_at_once_while_a_reader_holds_the_store(tiny_tsv, imf_home):
    import_dataset(tiny_tsv)
    store = imf_home / "datasets" / "tiny" / "store.db"
    before = store.read_bytes()
    with dataset_lock("tiny", "read"):  # what train, eval, predict and the TUI's service take
        started = time.monotonic()
        result = runner.invoke(app, ["import", str(tiny_tsv), "--replace"])
        assert time.monotonic() - started < 10
    assert result.exit_code == 1, result.output
    assert "dataset 'tiny' is in use by another imf process" in result.output
    assert "Traceback" not in result.output and store.read_bytes() == before
    result = runner.invoke(app, ["import", str(tiny_tsv), "--replace"])  # free again
    assert result.exit_code == 0, result.output


def test_lock_modes(tiny_tsv, imf_home):
    with dataset_lock("tiny", "write"):  # encode or entities add in progress
        with dataset_lock("tiny", "read"):  # readers do not wait for an encode
            pass
        with pytest.raises(DatasetBusyError, match="busy: another imf command writing it"):
            dataset_lock("tiny", "write", timeout=0.2).acquire()
        with pytest.raises(DatasetBusyError, match="busy"):
            dataset_lock("tiny", "replace", timeout=0.2).acquire()
    with dataset_lock("tiny", "replace"):
        with pytest.raises(DatasetBusyError, match="an import replacing it"):
            dataset_lock("tiny", "read", timeout=0.2).acquire()
    with dataset_lock("tiny", "read"), dataset_lock("tiny", "read"):
        with pytest.raises(DatasetBusyError, match="in use"):
            dataset_lock("tiny", "replace", timeout=5).acquire()
    with dataset_lock("other", "replace"):  # locks are per dataset
        with dataset_lock("tiny", "replace"):
            pass


def test_encode_waits_for_an_import_of_the_same_dataset(tiny_tsv, imf_home, monkeypatch):
    import_dataset(tiny_tsv)
    monkeypatch.setenv("IMF_LOCK_TIMEOUT", "0.3")
    with dataset_lock("tiny", "replace"):
        result = runner.invoke(app, ["encode", "tiny", "-m", "structure", "--epochs", "1"])
    assert result.exit_code == 1 and "dataset 'tiny' is busy" in result.output
    assert "IMF_LOCK_TIMEOUT" in result.output


def test_a_killed_holder_releases_its_lock(tiny_tsv, imf_home):
    code = (
        "import os, sys; from kgdata.locking import dataset_lock; "
        "lock = dataset_lock('tiny', 'write').acquire(); print('held', flush=True); sys.stdin.readline()"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code], cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(DatasetBusyError):
            dataset_lock("tiny", "write", timeout=0.1).acquire()
    finally:
        holder.kill()
        holder.wait(20)
    with dataset_lock("tiny", "write", timeout=5):
        pass


def test_stale_temporaries_of_killed_writers_are_cleaned_at_the_next_command(tiny_tsv, imf_home):
    import_dataset(tiny_tsv)
    dataset = imf_home / "datasets" / "tiny"
    store_temp = dataset / ".store.db.4242.tmp"
    journal = dataset / ".store.db.4242.tmp-journal"
    features_temp = dataset / "features" / ".text-x.safetensors.4242.tmp"
    features_temp.parent.mkdir()
    for path in (store_temp, journal, features_temp):
        path.write_bytes(b"x" * 1000)

    with dataset_lock("tiny", "write"):  # a live writer: its temporaries stay
        assert runner.invoke(app, ["datasets"]).exit_code == 0
        assert store_temp.exists() and features_temp.exists()
    result = runner.invoke(app, ["datasets"])  # any command, not only an import of that name
    assert result.exit_code == 0
    assert not store_temp.exists() and not journal.exists() and not features_temp.exists()
    assert (dataset / "store.db").is_file()
    assert clean_stale_temporaries() == []
