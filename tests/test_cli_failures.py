"""Every failure is one line on stderr with exit 2 (bad input) or 1 (environment, bug); never a traceback.

Also: no orphan run directories after failed starts, torn trace lines tolerated on resume.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from helpers import REPO, error_line
from imf_cli import runs as imf_runs
from imf_cli.main import app
from kgdata.importing import import_dataset
from kgdata.store import EntityStore

runner = CliRunner()
SMALL = ["--dim", "8", "--batch-size", "4", "--eval-every", "1", "--seed", "3", "--device", "cpu", "--no-progress"]


def runs(imf_home: Path) -> list[str]:
    directory = imf_home / "runs"
    return sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []


# ------------------------------------------------------------------------------ the one handler
def test_an_unexpected_exception_is_one_line_and_a_log_with_the_traceback(monkeypatch, imf_home):
    def broken(*args, **kwargs):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr("kgdata.store.dataset_summaries", broken)
    line = error_line(runner.invoke(app, ["datasets"]), code=1)
    assert "unexpected RuntimeError: boom" in line and "a bug in imf" in line
    log = Path(line.split("the traceback is in ")[1].rstrip(")"))
    assert log.is_file() and log.is_relative_to(imf_home)
    text = log.read_text()
    assert "Traceback (most recent call last)" in text and "RuntimeError: boom" in text


def test_an_os_error_is_one_line_naming_the_path_and_exit_1(monkeypatch):
    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied", "/srv/imf/datasets")

    monkeypatch.setattr("kgdata.store.dataset_summaries", denied)
    line = error_line(runner.invoke(app, ["datasets"]), code=1)
    assert line == "Error: Permission denied: /srv/imf/datasets"


def test_ctrl_c_outside_training_says_interrupted_and_exits_130(monkeypatch, imf_home):
    """An import interrupted by Ctrl+C exited 130 without a word."""
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("kgdata.store.dataset_summaries", interrupted)
    result = runner.invoke(app, ["datasets"])
    assert result.exit_code == 130 and result.output.strip() == "Interrupted."
    assert not (imf_home / "logs").exists()  # not a bug: no crash log


def test_python_warnings_are_one_line_without_their_source(monkeypatch):
    def noisy(*args, **kwargs):
        warnings.warn("careful now", UserWarning, stacklevel=1)
        return []

    monkeypatch.setattr("kgdata.store.dataset_summaries", noisy)
    result = runner.invoke(app, ["datasets"])
    assert result.exit_code == 0
    assert "Warning: careful now" in result.output
    assert "warnings.warn" not in result.output and "UserWarning" not in result.output


@pytest.mark.parametrize("how", ["--home", "IMF_HOME"])
def test_a_home_that_is_a_regular_file(tmp_path, monkeypatch, how):
    home = tmp_path / "home-file"
    home.write_text("not a directory")
    if how == "IMF_HOME":
        monkeypatch.setenv("IMF_HOME", str(home))
        result = runner.invoke(app, ["import", "countries-mm"])
    else:
        result = runner.invoke(app, ["--home", str(home), "import", "countries-mm"])
    line = error_line(result)
    assert f"{home} is not a directory" in line


# ------------------------------------------------------------------------------ store and search
def test_search_with_a_huge_limit(tiny_tsv):
    import_dataset(tiny_tsv)
    result = runner.invoke(app, ["search", "tiny", "paris", "--limit", "100000000000000000000", "--json"])
    assert result.exit_code == 0, result.output
    assert [e["key"] for e in json.loads(result.stdout)] == ["paris", "france"]  # france: "capital Paris"


def test_a_store_without_its_full_text_index(tiny_tsv, imf_home):
    import_dataset(tiny_tsv)
    store = imf_home / "datasets" / "tiny" / "store.db"
    with sqlite3.connect(store) as conn:
        conn.execute("DROP TABLE entities_fts")
    line = error_line(runner.invoke(app, ["search", "tiny", "republic"]))
    assert str(store) in line and "full-text index (entities_fts) is missing" in line and "--replace" in line


@pytest.mark.parametrize("damage", ["DELETE FROM metadata WHERE key = 'counts'", "UPDATE metadata SET value = '[1]'"])
def test_a_store_with_damaged_metadata(tiny_tsv, imf_home, damage):
    import_dataset(tiny_tsv)
    store = imf_home / "datasets" / "tiny" / "store.db"
    with sqlite3.connect(store) as conn:
        conn.execute(damage)
    for args in (["search", "tiny", "paris"], ["train", "tiny", "--epochs", "1", "--no-progress"]):
        line = error_line(runner.invoke(app, args))
        assert str(store) in line and "re-import the dataset" in line


# ------------------------------------------------------------------------------ train: refused inputs
@pytest.fixture
def tiny(tiny_tsv):
    import_dataset(tiny_tsv)
    return "tiny"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--device", "cudaXYZ"], "train.device must be 'auto', 'cpu' or 'cuda[:i]', got 'cudaXYZ'"),
        (["--device", "cuda:abc"], "train.device must be 'auto', 'cpu' or 'cuda[:i]', got 'cuda:abc'"),
        (["--seed", "100000000000000000000000"], "train.seed must be an integer from 0 to 9223372036854775807"),
        (["--seed", "-1"], "train.seed must be an integer from 0"),
        (["--dim", "100000"], "model.dim 100000 asks for a model of"),
        # dim³ overflows even the meta device's size arithmetic: the one-core lower bound refuses it
        (["--dim", "100000000"], "model.dim 100000000 asks for a model of at least 10^24 parameters"),
        # 111 digits: the byte count overflowed a float in its formatting ("a bug in imf")
        (["--dim", "1" + "0" * 110], "asks for a model of at least 10^330 parameters"),
        (["--batch-size", "100000000000000000000"], "train.batch_size must be at most 2147483647, got 100000000000000000000 (given by --batch-size)"),
        (["--lr", "nan"], "config key 'train.lr' expects a finite float, got nan (given by --lr)"),
        (["--max-minutes", "inf"], "'train.max_minutes' expects a finite float, got inf (given by --max-minutes)"),
        (["--device", "cuda:99999999999999999999"], "unknown device 'cuda:99999999999999999999'"),
    ],
)
def test_refused_train_options_leave_no_run_directory(tiny, imf_home, args, message):
    result = runner.invoke(app, ["train", tiny, "--epochs", "1", "--no-progress", *args])
    line = error_line(result)
    assert message in line
    if "--seed" in args:
        assert args[-1] in line  # the seed is named
    if args == ["--dim", "100000"]:
        assert "needs about 16.0 PB of memory" in line
    if args[-1].startswith("1" + "0" * 100):
        assert "needs about 10^331 B of memory" in line
    if "--dim" in args:
        assert "choose a smaller --dim" in line
    assert runs(imf_home) == []


def test_a_fusion_rank_too_large_for_memory_is_refused_by_name_before_training(monkeypatch):
    """`model.fusion_rank: 1000000000` at dim 8 passed the check (it looked at dim³ only) and failed in
    training with "out of memory …; choose a smaller --dim or --batch-size"."""
    from types import SimpleNamespace

    import kgdata.encoders.base as base
    from imf_cli.pipeline import check_model_fits
    from kgdata.errors import ImfError
    from models.config import RunConfig

    monkeypatch.setattr(base, "available_memory", lambda device: 8 * 10**9)
    tensors = SimpleNamespace(num_entities=500, num_relations=9, feature_dims={"text": 384})
    config = RunConfig.from_dict({"model": {"dim": 8, "modalities": ["structure", "text"], "fusion_rank": 10**7}})
    with pytest.raises(ImfError, match=r"model.fusion_rank 10000000 at model.dim 8 asks for a model of [\d,]+ "
                       r"parameters.*choose a smaller model.fusion_rank"):
        check_model_fits(config, tensors, torch.device("cpu"))
    check_model_fits(RunConfig.from_dict({"model": {"dim": 8, "modalities": ["structure", "text"]}}), tensors,
                     torch.device("cpu"))  # the default rank fits


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_train_on_cuda_without_cuda(tiny, imf_home):
    line = error_line(runner.invoke(app, ["train", tiny, "--epochs", "1", "--device", "cuda", "--no-progress"]))
    assert "CUDA is not available" in line and "--device cpu" in line
    assert runs(imf_home) == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_resume_on_cuda_without_cuda_changes_nothing(trained):
    before = (trained / "config.yaml").read_bytes(), (trained / "last.pt").read_bytes()
    line = error_line(runner.invoke(app, ["train", "--resume", str(trained), "--epochs", "3", "--device", "cuda", "--no-progress"]))
    assert "CUDA is not available" in line and "--device cpu" in line
    assert ((trained / "config.yaml").read_bytes(), (trained / "last.pt").read_bytes()) == before


def test_run_dir_that_is_a_regular_file(tiny, tmp_path):
    target = tmp_path / "a-file"
    target.write_text("x")
    line = error_line(runner.invoke(app, ["train", tiny, "--epochs", "1", *SMALL, "--run-dir", str(target)]))
    assert f"run directory {target} is not a directory" in line
    assert target.read_text() == "x"


def test_a_run_dir_below_a_file_is_refused_naming_the_file(tiny, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    target = blocker / "sub" / "run"
    line = error_line(runner.invoke(app, ["train", tiny, "--epochs", "1", *SMALL, "--run-dir", str(target)]), code=2)
    assert f"cannot create run directory {target}: {blocker} is a file, not a directory" in line


def test_a_config_file_that_is_not_utf8(tiny, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_bytes(b"train:\n  epochs: 1\n  seed: 3 # caf\xe9\n")
    line = error_line(runner.invoke(app, ["train", tiny, "--config", str(config), "--no-progress"]))
    assert f"{config}:3: not valid UTF-8" in line


@pytest.mark.parametrize(
    ("content", "line_number", "message"),
    [
        ("# a comment\ntrain:\n  epochs: 1\n  lr: -1\n", 4, "train.lr must be positive"),
        ("model:\n  dim: abc\n", 2, "config key 'model.dim' expects int, got 'abc'"),
        ("train:\n  epochs: 1\nmodel:\n  dimm: 8\n", 4, "unknown config key 'model.dimm' (did you mean 'model.dim'?)"),
        ("train:\n  epochs: 1\nmodel: [8]\n", 3, "config section 'model' must hold its keys"),
        ("train.epochs: 1\ntrain.batch_size: 1\n", 2, "train.batch_size must be at least 2"),
    ],
)
def test_a_bad_value_in_a_config_file_names_the_file_and_line(tiny, tmp_path, content, line_number, message):
    config = tmp_path / "run.yaml"
    config.write_text(content)
    line = error_line(runner.invoke(app, ["train", tiny, "--config", str(config), "--device", "cpu", "--no-progress"]))
    assert f"{config}, line {line_number}: {message}" in line


def test_a_bad_flag_is_not_blamed_on_the_config_file(tiny, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("train:\n  epochs: 1\n  lr: 0.01\n")
    line = error_line(runner.invoke(app, ["train", tiny, "--config", str(config), *SMALL, "--batch-size", "1"]))
    assert "train.batch_size must be at least 2" in line and str(config) not in line


def test_the_cpu_allocators_failure_is_reported_as_out_of_memory(tiny, imf_home, monkeypatch):
    # torch's CPU allocator raises a plain RuntimeError ("DefaultCPUAllocator: can't allocate memory"),
    # not MemoryError: it must read as the environment's fault, not as a bug with a crash log
    from models import training

    def exhausted(self):
        raise RuntimeError(
            "[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: you tried "
            "to allocate 196800000000 bytes. Error code 12 (Cannot allocate memory)"
        )

    monkeypatch.setattr(training._Trainer, "initialise", exhausted)
    line = error_line(runner.invoke(app, ["train", tiny, "--epochs", "1", *SMALL]), code=1)
    assert line.startswith("Error: out of memory while training (model.dim 8, batch size 4)")
    assert "--dim or --batch-size" in line and "a bug in imf" not in line
    assert not (imf_home / "logs").exists() or not list((imf_home / "logs").iterdir())
    assert runs(imf_home) == []


def test_allocation_failures_outside_training_are_out_of_memory_too():
    from imf_cli.output import report_failure
    from kgdata.errors import is_out_of_memory

    allocator = RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory: 8 bytes")
    assert is_out_of_memory(allocator) and is_out_of_memory(MemoryError()) and is_out_of_memory(torch.OutOfMemoryError())
    assert not is_out_of_memory(RuntimeError("shape mismatch")) and not is_out_of_memory(ValueError("memory"))
    assert report_failure(allocator) == 1


def test_a_failure_after_the_run_directory_is_created_removes_it(tiny, imf_home, monkeypatch):
    from models import training

    def broken(self):
        raise RuntimeError("initialisation failed")

    monkeypatch.setattr(training._Trainer, "initialise", broken)
    line = error_line(runner.invoke(app, ["train", tiny, "--epochs", "1", *SMALL]), code=1)
    assert "unexpected RuntimeError: initialisation failed" in line
    assert runs(imf_home) == []


def overflowing_features(store, path_of) -> Path:
    """Replace a valid text feature file by one whose values are 3e38 (as an old --from-file allowed)."""
    from safetensors.numpy import load_file, save_file

    from kgdata.features import read_header

    path = path_of
    metadata = read_header(path)["metadata"]
    tensors = load_file(str(path))
    tensors["features"] = np.full_like(tensors["features"], 3e38)
    save_file(tensors, str(path), metadata=metadata)
    return path


def test_training_on_features_of_magnitude_3e38_is_refused(tiny):
    from kgdata.features import save_features

    with EntityStore.open(tiny) as store:
        n = store.num_entities
        path = save_features(store, "text", "big", np.ones((n, 4)), np.ones(n, bool), input_hash="x")
        overflowing_features(store, path)
    line = error_line(runner.invoke(app, ["train", tiny, "--modalities", "structure,text", "--epochs", "1", *SMALL]))
    assert str(path) in line and "as large as 3e+38" in line and "rescale" in line


def test_zero_width_features_are_refused_by_encode(tiny, tmp_path):
    source = tmp_path / "zero.npy"
    np.save(source, np.zeros((7, 0), np.float32))
    line = error_line(runner.invoke(app, ["encode", tiny, "-m", "text", "--from-file", str(source)]))
    assert str(source) in line and "zero-width" in line


def test_encode_gat_with_a_huge_dim_says_what_it_needs(tiny):
    line = error_line(runner.invoke(app, ["encode", tiny, "-m", "structure", "--dim", "100000"]))
    assert "the GAT at --dim 100000" in line and "needs about" in line and "choose a smaller --dim" in line


def test_encode_gat_with_a_huge_seed(tiny):
    line = error_line(runner.invoke(app, ["encode", tiny, "-m", "structure", "--seed", str(10**23)]))
    assert f"--seed {10**23} is out of range" in line


# ------------------------------------------------------------------------------ runs on disk
@pytest.fixture
def trained(tiny, imf_home):
    result = runner.invoke(app, ["train", tiny, "--epochs", "2", *SMALL, "--json"])
    assert result.exit_code == 0, result.output
    return Path(json.loads(result.stdout)["run_dir"])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"- a\n- b\n", "expected a mapping (config, metadata, \u2026), got list"),
        (b"metadata:\n  dataset: 12345\nconfig: {}\n", "metadata.dataset must be a dataset name, got 12345"),
        (b"metadata:\n  dataset: tiny\nconfig: {}\n# caf\xe9\n", "config.yaml:4: not valid UTF-8"),
        (b"metadata: [1, 2]\nconfig: {}\n", "'metadata' must be a mapping"),
        (b"metadata:\n  dataset: ../../etc\nconfig: {}\n", "invalid dataset name"),
        (b"metadata:\n  dataset: tiny\nconfig: 5\n", "'config' must be a mapping"),
        (b"config: [\n", "not valid YAML"),
        (b"config: " + b"[" * 5000 + b"]" * 5000 + b"\n", "nested too deeply"),
    ],
)
def test_a_malformed_run_config_is_one_line_for_eval_and_resume(trained, content, message):
    (trained / "config.yaml").write_bytes(content)
    for args in (["eval", str(trained)], ["train", "--resume", str(trained), "--no-progress"]):
        line = error_line(runner.invoke(app, args))
        assert message in line and "config.yaml" in line, args


def test_resume_with_a_run_config_that_does_not_resolve(trained):
    import yaml

    document = yaml.safe_load((trained / "config.yaml").read_text())
    document["config"]["model"]["dim"] = -1
    (trained / "config.yaml").write_text(yaml.safe_dump(document))
    line = error_line(runner.invoke(app, ["train", "--resume", str(trained), "--no-progress"]))
    assert "config.yaml" in line and "model.dim must be positive" in line


@pytest.mark.parametrize("damage", ["random", "truncated", "directory"])
def test_resume_refuses_a_run_whose_best_checkpoint_cannot_be_loaded(trained, damage):
    best = trained / "best.pt"
    whole = best.read_bytes()
    best.unlink()
    if damage == "directory":
        best.mkdir()
    else:
        best.write_bytes(os.urandom(5000) if damage == "random" else whole[: len(whole) // 2])
    trace = (trained / "trace.jsonl").read_text()
    last = (trained / "last.pt").read_bytes()
    line = error_line(runner.invoke(app, ["train", "--resume", str(trained), "--epochs", "3", "--no-progress"]))
    assert f"cannot load checkpoint {best}" in line and "best model is lost" in line
    assert (trained / "trace.jsonl").read_text() == trace and (trained / "last.pt").read_bytes() == last
    line = error_line(runner.invoke(app, ["eval", str(trained)]))
    assert f"cannot load checkpoint {best}" in line
    assert ("not a regular file" if damage == "directory" else "corrupt or unreadable") in line
    assert "its last.pt reads: add --checkpoint last to use that one" in line  # the way on


def test_resume_refuses_another_runs_best_checkpoint_as_eval_does(trained, tiny):
    """A best.pt copied from another run (here another --dim) resumed and was listed as finished, while
    imf eval refused it as another run's checkpoint."""
    other = runner.invoke(app, ["train", tiny, "--epochs", "1", *SMALL, "--dim", "12", "--json"])
    assert other.exit_code == 0, other.output
    foreign = Path(json.loads(other.stdout)["run_dir"]) / "best.pt"
    (trained / "best.pt").write_bytes(foreign.read_bytes())
    trace = (trained / "trace.jsonl").read_text()
    line = error_line(runner.invoke(app, ["train", "--resume", str(trained), "--epochs", "3", "--no-progress"]))
    assert f"--resume {trained}" in line and "another run's checkpoint" in line and "--checkpoint last" in line
    assert (trained / "trace.jsonl").read_text() == trace  # nothing trained
    assert "another run's checkpoint" in error_line(runner.invoke(app, ["eval", str(trained)]))


def test_a_torn_last_trace_line_is_tolerated_on_resume(trained):
    trace = trained / "trace.jsonl"
    whole = trace.read_text()
    trace.write_text(whole + '{"epoch": 3, "lr": 0.000')  # killed while writing epoch 3's line
    result = runner.invoke(app, ["train", "--resume", str(trained), "--no-progress", "--json"])
    assert result.exit_code == 0, result.output
    assert trace.read_text() == whole


def test_a_damaged_trace_line_is_named_on_resume(trained):
    trace = trace_path = trained / "trace.jsonl"
    lines = trace.read_text().splitlines(keepends=True)
    trace_path.write_text(lines[0] + "garbage\n" + "".join(lines[1:]))
    line = error_line(runner.invoke(app, ["train", "--resume", str(trained), "--no-progress"]))
    assert f"{trace}:2: not a trace record" in line


def test_trace_and_metrics_values_of_the_wrong_type_or_not_finite_are_left_out_not_fatal(trained):
    """A hand-edited trace (a string loss, NaN tokens, a list for the seconds) made `imf runs`, `runs
    show` and `runs compare` crash with a TypeError, and plotext abort the process (std::bad_alloc);
    resume could not write NaN back; a damaged metrics-test.json crashed the listings too. Those values
    are left out; the rest of the run is listed."""
    trace = trained / "trace.jsonl"
    records = [json.loads(line) for line in trace.read_text().splitlines()]
    records[0]["loss"]["total"], records[0]["seconds"] = "abc", ["x"]
    records[0]["lr"], records[0]["best_epoch"] = "fast", True
    records[1]["loss"]["total"], records[1]["best_valid_mrr"] = float("nan"), float("inf")
    records[1]["valid"] = {"fused": {"mrr": "high", "hits@1": float("inf"), "mr": 3.0}, "structure": None}
    trace.write_text("".join(json.dumps(record) + "\n" for record in records))  # NaN and Infinity tokens
    twin = trained.with_name(trained.name + "-twin")
    shutil.copytree(trained, twin)
    for args in (["runs"], ["runs", "show", str(trained)], ["runs", "compare", str(trained), str(twin)],
                 ["runs", "--json"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 0 and "bug in imf" not in result.output, (args, result.output)
    info = imf_runs.run_info(trained)
    assert info.epochs == 2 and info.valid_mrr is None
    series = imf_runs.trace_series(imf_runs.read_trace(trained))
    assert series["loss"] == [None, None] and series["valid"]["fused"][-1] is None
    result = runner.invoke(app, ["train", "--resume", str(trained), "--epochs", "3", "--no-progress", "--json"])
    assert result.exit_code == 0, result.output
    # the same for the metrics that imf eval writes
    for content in ('{"fused": {"mrr": "x"}}', '{"fused": [1, 2]}', '{"fused": {"mrr": NaN}}', '{"branches": 5}'):
        (trained / "metrics-test.json").write_text(content)
        for args in (["runs"], ["runs", "show", str(trained)], ["runs", "compare", str(trained), str(twin)]):
            result = runner.invoke(app, args)
            assert result.exit_code == 0 and "bug in imf" not in result.output, (content, args, result.output)
        assert imf_runs.run_info(trained).test_mrr is None


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [("model", None, 5), ("model", "modalities", [5, "structure"]), ("train", None, [1]), ("train", "epochs", "abc"),
     (None, "seed", [1, 2]), ("model", "modalities", [{"a": [1]}]), (None, "resumed", 5),
     (None, "resumed", [{"set": 5}, 7, {"after_epoch": 1, "set": {"train.epochs": [1]}}])],
)
def test_a_config_value_of_the_wrong_type_does_not_stop_the_listings(trained, section, key, value):
    """`model: 5` or `modalities: [5]` in a run's config.yaml crashed `imf runs`, `runs show` and `runs
    compare` (AttributeError, TypeError); eval and resume name the key instead (tests above)."""
    import yaml

    twin = trained.with_name(trained.name + "-twin")
    shutil.copytree(trained, twin)
    document = yaml.safe_load((trained / "config.yaml").read_text())
    target = document if section is None else document["config"]
    if key is None:
        target[section] = value
    else:
        (target if section is None else target[section])[key] = value
    (trained / "config.yaml").write_text(yaml.safe_dump(document))
    for args in (["runs"], ["runs", "--json"], ["runs", "show", str(trained)], ["runs", "compare", str(trained), str(twin)],
                 ["runs", "compare", str(trained), str(twin), "--by-seed"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 0 and "bug in imf" not in result.output, (args, result.output)
    info = imf_runs.run_info(trained)
    assert info.epochs == 2 and all(isinstance(m, str) for m in info.modalities)


def test_eval_with_huge_sizes_and_odd_devices(trained):
    result = runner.invoke(app, ["eval", str(trained), "--batch-size", "100000000000000000000", "--json"])
    assert result.exit_code == 0, result.output
    line = error_line(runner.invoke(app, ["eval", str(trained), "--device", "cuda:99999999999999999999"]))
    assert "unknown device" in line


def test_resume_of_a_path_that_is_not_a_run(tmp_path):
    target = tmp_path / "file"
    target.write_text("x")
    line = error_line(runner.invoke(app, ["train", "--resume", str(target), "--no-progress"]))
    assert "not a run directory" in line


# ------------------------------------------------------------------------------ the environment
def without_root_powers() -> list[str]:
    """A command prefix under which file permissions apply, also to root: drop the capability to override them."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: file permissions cannot be enforced")
    return [setpriv, "--bounding-set=-dac_override,-dac_read_search"]


def run_cli(*args: str, env: dict, preexec=None, prefix=(), timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*prefix, sys.executable, "-m", "imf_cli", *args], cwd=REPO, capture_output=True, text=True,
        timeout=timeout, env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **env},
        preexec_fn=preexec,
    )


def assert_one_line(result: subprocess.CompletedProcess, code: int) -> str:
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0]


def test_an_imf_home_without_write_permission():
    """import, import --replace and train: one line naming the workspace, exit 1."""
    prefix = without_root_powers()
    root = Path(tempfile.mkdtemp(prefix="imf-readonly-"))
    try:
        home, fresh = root / "home", root / "fresh"
        env = {"IMF_HOME": str(home)}
        assert run_cli("import", "countries-mm", env=env).returncode == 0  # while it is writable
        fresh.mkdir()
        locks = home / "datasets" / ".locks"
        for directory in (home, home / "datasets", home / "datasets" / "countries-mm", locks, fresh):
            if directory.exists():
                os.chmod(directory, 0o555)
        for lock in locks.iterdir() if locks.exists() else ():
            os.chmod(lock, 0o444)
        line = assert_one_line(run_cli("import", "countries-mm", env={"IMF_HOME": str(fresh)}, prefix=prefix), 1)
        assert "cannot write to the imf workspace" in line and str(fresh) in line
        line = assert_one_line(run_cli("import", "countries-mm", "--replace", env=env, prefix=prefix), 1)
        assert "cannot write to the imf workspace" in line and str(home) in line
        line = assert_one_line(
            run_cli("train", "countries-mm", "--modalities", "structure", "--epochs", "1", "--dim", "8",
                    "--device", "cpu", "--no-progress", env=env, prefix=prefix),
            1,
        )
        assert "cannot write to the imf workspace" in line and str(home / "runs") in line
    finally:
        for directory, _, files in os.walk(root):
            os.chmod(directory, 0o755)
            for name in files:
                os.chmod(os.path.join(directory, name), 0o644)
        shutil.rmtree(root, ignore_errors=True)


def test_a_full_disk_during_import_is_one_line_and_keeps_the_old_store(imf_home):
    import resource

    import_dataset("countries-mm", name="keep")
    store = imf_home / "datasets" / "keep" / "store.db"
    before = store.read_bytes()

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (300_000, 300_000))

    result = run_cli("import", "countries-mm", "--name", "keep", "--replace", env={}, preexec=small_files)
    line = assert_one_line(result, 1)
    assert f"could not write the store {store}" in line and "file-size limit" in line
    assert store.read_bytes() == before
    assert sorted(p.name for p in store.parent.iterdir()) == ["store.db"]


# ------------------------------------------------------------------- names that look like rich markup
MARKUP = "[/]x[bold]"


def test_names_relations_and_descriptions_that_look_like_markup_print_as_written(tmp_path, imf_home):
    """A "[/]" in a user's file once raised MarkupError in `imf search` ("a bug in imf"); elsewhere a
    "[bold]" would have styled the output instead of showing. Every command prints them as written."""
    from helpers import write_tsv_dataset

    train = [("a", "r[/]", "b"), ("b", "r[/]", "c"), ("c", "s", "a"), ("a", "s", "c"), ("b", "s", "a")]
    entities = [{"id": "a", "name": MARKUP, "description": "[red]d[/red] [/]"}, {"id": "b", "name": "B"},
                {"id": "c", "name": "C"}]
    root = write_tsv_dataset(tmp_path / "m[/]k", train=train, valid=[("a", "r[/]", "c")], test=[("c", "s", "b")],
                             entities=entities)

    def ok(*args):
        result = runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})
        assert result.exit_code == 0, result.output
        assert "a bug in imf" not in result.output and "MarkupError" not in result.output
        return " ".join(result.output.split())

    assert "Imported mk (tsv)" in ok("import", root, "--name", "mk")
    assert MARKUP in ok("search", "mk", "x") and "[red]d[/red] [/]" in ok("search", "mk", "x")
    assert MARKUP in ok("entities", "list", "mk")
    assert "Trained 1 epoch (seed 3)" in ok("train", "mk", "--epochs", "1", *SMALL)
    assert f"({MARKUP}, r[/], ?)" in ok("predict", "mk@latest", "--head", "a", "--relation", "r[/]")
    assert MARKUP in ok("explain", "mk@latest", "--head", "a", "--relation", "r[/]", "--tail", "b")
    assert "r[/] 1-1" in ok("eval", "mk@latest", "--per-relation", "--no-progress")
    assert "modalities=[structure]" in ok("runs", "show", "mk@latest")
    result = runner.invoke(app, ["predict", "mk@latest", "--head", "[/]nothing", "--relation", "s"])
    assert result.exit_code == 2 and "no entity of dataset 'mk' matches '[/]nothing'" in result.output


def test_a_config_nested_too_deeply_is_one_line(tiny, imf_home, tmp_path):
    deep = tmp_path / "deep.yaml"
    deep.write_text("train: " + "[" * 5000 + "]" * 5000 + "\n")
    line = error_line(runner.invoke(app, ["train", tiny, "--config", str(deep), *SMALL]))
    assert f"{deep}: not valid YAML: collections nested too deeply" in line
    assert runs(imf_home) == []


def test_a_name_longer_than_sqlite_takes_is_unknown_and_shortened_in_the_error(trained):
    huge = "x" * 50_001
    result = runner.invoke(app, ["predict", str(trained), "--head", huge, "--relation", "capital_of"])
    assert result.exit_code == 2
    line = error_line(result)
    assert "no entity of dataset 'tiny' matches" in line and "characters]" in line and len(line) < 600


@pytest.mark.parametrize(("content", "flag", "message"), [
    ("train:\n  seed: abc\n", ["--seed", "1"], "line 2: config key 'train.seed' expects int | None, got 'abc'"),
    ("train:\n  max_minutes: -5\n", ["--max-minutes", "1"], "line 2: train.max_minutes must be non-negative"),
])
def test_a_bad_config_value_is_an_error_even_when_a_flag_overrides_it(tiny, imf_home, tmp_path, content, flag, message):
    config = tmp_path / "bad.yaml"
    config.write_text(content)
    line = error_line(runner.invoke(app, ["train", tiny, "--config", str(config), *SMALL, *flag]))
    assert message in line and "a flag overrides it" in line
    assert runs(imf_home) == []


def test_sigterm_outside_training_stops_like_ctrl_c(capsys):
    """``kill`` during an import, encode or entities add exited 143 without a word or a rollback."""
    import signal
    import time

    import typer

    from imf_cli.output import INTERRUPTED, run_reporting_failures

    def killed():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler interrupts this
        raise AssertionError("SIGTERM did not interrupt the command")

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(typer.Exit) as stopped:
        run_reporting_failures(killed)
    assert stopped.value.exit_code == INTERRUPTED
    assert "Interrupted." in capsys.readouterr().err
    assert signal.getsignal(signal.SIGTERM) is before  # restored for whatever runs next


@pytest.mark.parametrize(
    "args",
    [
        ["search", "tiny", "\udcff"],
        ["entities", "add", "tiny", "k1", "--name", "\udcff"],
        ["entities", "add", "tiny", "k2", "--name", "ok", "--description", "d\udcff"],
        ["predict", "tiny", "--head", "\udcff", "--relation", "r"],
        ["predict", "tiny", "--new-text", "x\udcff", "--relation", "r"],
    ],
)
def test_an_argument_that_is_not_utf8_is_one_usage_error(args):
    # What Python makes of the bytes of a non-UTF-8 argument (os.fsdecode: surrogateescape).
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert "is not UTF-8 text" in result.output and "bug in imf" not in result.output
