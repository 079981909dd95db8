from pathlib import Path

import pytest
import torch

from models.checkpoint import CheckpointError, load_checkpoint, read_checkpoint, save_checkpoint
from models.config import resolve
from models.imf import build_model


@pytest.fixture
def saved(tmp_path, kg):
    """A model with features attached, saved as a checkpoint, and its scores on a few queries."""
    config = resolve(
        {
            "model": {"dim": 8, "feature_mode": "project", "fusion": "learned-per-relation"},
            "train": {"fused_loss_weight": 1.0},
        }
    )
    model_args = {"num_entities": kg.num_entities, "num_relations": kg.num_relations, "feature_dims": kg.feature_dims}
    model = build_model(config.model, **model_args)
    for modality, (matrix, mask) in kg.features.items():
        model.set_features(modality, matrix, mask)
    with torch.no_grad():
        model.decision.logits.normal_()
    model.eval()
    path = tmp_path / "model.pt"
    save_checkpoint(path, {"model": model.state_dict(), "model_args": model_args, "config": config.to_dict()})
    heads, relations = torch.arange(10), torch.arange(10) % 6
    return path, model(heads, relations), (heads, relations)


def test_round_trip_gives_identical_scores(saved, kg):
    path, expected, (heads, relations) = saved
    model, config = load_checkpoint(path, features=kg.features)
    assert not model.training
    assert config["model"]["feature_mode"] == "project"
    scores = model(heads, relations)
    assert torch.equal(scores.fused, expected.fused)
    assert all(torch.equal(scores.branches[name], expected.branches[name]) for name in expected.branches)
    # The frozen features do not travel inside the state dict: the feature files are their record.
    assert not any(key.endswith((".features", ".reduced")) for key in torch.load(path, weights_only=True)["model"])


def test_a_project_mode_model_needs_its_features_back(saved, kg):
    path, _, _ = saved
    with pytest.raises(CheckpointError, match="needs its features"):
        load_checkpoint(path)
    visual, mask = kg.features["visual"]
    with pytest.raises(CheckpointError, match="do not fit"):
        load_checkpoint(path, features={**kg.features, "visual": (visual[:, :3], mask)})


def test_checkpoint_loads_with_weights_only(saved):
    payload = torch.load(saved[0], weights_only=True)
    assert payload["format"] == "imf-checkpoint" and payload["version"] == 1


def test_a_corrupt_file_raises_checkpoint_error_naming_it(saved, tmp_path):
    path = saved[0]
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="truncated.pt") as error:
        load_checkpoint(truncated)
    assert error.value.path == truncated
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="garbage.pt.*corrupt"):
        load_checkpoint(garbage)
    with pytest.raises(CheckpointError, match="no such file"):
        read_checkpoint(tmp_path / "absent.pt")


@pytest.mark.parametrize("kind", ["pickle-opcodes", "foreign-global", "empty", "not-zip", "text"])
def test_a_damaged_or_hostile_checkpoint_gets_one_short_line_without_unsafe_advice(tmp_path, kind):
    import collections
    import pickle

    path = tmp_path / "best.pt"
    if kind == "pickle-opcodes":
        path.write_bytes(pickle.dumps({"a": 1})[:2] + bytes(range(236, 256)) * 20)
    elif kind == "foreign-global":
        torch.save({"x": collections.OrderedDict(a=print)}, path)
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":  # read as torch's old format, it failed as "the safe loader refused it: Unsupported operand"
        path.write_text("not a checkpoint at all\n")
    else:
        path.write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(CheckpointError) as error:
        read_checkpoint(path)
    message = str(error.value)
    assert "best.pt" in message and "corrupt or unreadable" in message
    assert "\n" not in message and len(message) < 400
    assert "weights_only" not in message and "safe_globals" not in message  # never advise the unsafe load
    if kind in ("pickle-opcodes", "empty", "text"):
        assert "not the zip archive torch.save writes" in message


def test_a_foreign_or_mismatched_checkpoint_raises_checkpoint_error(saved, tmp_path):
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    with pytest.raises(CheckpointError, match="not an IMF checkpoint"):
        load_checkpoint(foreign)
    payload = torch.load(saved[0], weights_only=True)
    payload["model_args"]["num_entities"] += 1
    mismatched = tmp_path / "mismatched.pt"
    torch.save(payload, mismatched)
    with pytest.raises(CheckpointError, match="does not rebuild"):
        load_checkpoint(mismatched)


def test_a_short_write_is_an_os_error_naming_the_checkpoint_and_leaves_no_temporary(tmp_path, monkeypatch):
    """torch.save reports a full disk as a RuntimeError ("unexpected pos …"), which read as a bug in imf."""
    import errno

    from models import checkpoint

    def full_disk(payload, path):
        Path(path).write_bytes(b"PK")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 137728 vs 137680")

    monkeypatch.setattr(checkpoint.torch, "save", full_disk)
    target = tmp_path / "best.pt"
    with pytest.raises(OSError) as raised:
        checkpoint.save_checkpoint(target, {"x": 1})
    assert raised.value.errno == errno.EIO and raised.value.filename == str(target)
    assert "the disk may be full" in raised.value.strerror
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_weights_that_are_not_finite_are_refused(saved, tmp_path, value):
    payload = torch.load(saved[0], weights_only=True)
    name = next(key for key, tensor in payload["model"].items() if tensor.is_floating_point() and tensor.numel() > 1)
    payload["model"][name].view(-1)[1] = value
    damaged = tmp_path / "damaged.pt"
    torch.save(payload, damaged)
    with pytest.raises(CheckpointError, match=rf"holds NaN or infinite weights \({name}\)"):
        load_checkpoint(damaged)


@pytest.mark.parametrize(
    "field, value",
    [("version", None), ("version", "2"), ("model", None), ("model", "x"), ("config", "x"), ("epoch", "x"),
     ("optimizer", None), ("rng", None), ("rng", [1]), ("best_valid_mrr", "0.3"), ("finished", 1), ("progress", 3)],
)
def test_a_field_of_the_wrong_type_is_named_as_damaged(saved, tmp_path, field, value):
    """Each crashed later with a TypeError or AttributeError, reported as "a bug in imf"."""
    payload = torch.load(saved[0], weights_only=True)
    payload[field] = value
    damaged = tmp_path / "damaged.pt"
    torch.save(payload, damaged)
    with pytest.raises(CheckpointError, match=rf"damaged: its (random states|{field!r})"):
        read_checkpoint(damaged)


def test_a_config_section_that_is_not_a_mapping_does_not_rebuild(saved, tmp_path):
    payload = torch.load(saved[0], weights_only=True)
    payload["config"]["model"] = "junk"
    damaged = tmp_path / "damaged.pt"
    torch.save(payload, damaged)
    with pytest.raises(CheckpointError, match="does not rebuild.*section 'model' is a str, not a mapping"):
        load_checkpoint(damaged)


def test_a_checkpoint_of_other_data_is_refused_when_the_data_are_named(saved, tmp_path, kg):
    payload = torch.load(saved[0], weights_only=True)
    payload.update(data_fingerprint="a" * 64, metadata={"dataset": "elsewhere"})
    other = tmp_path / "other.pt"
    torch.save(payload, other)
    load_checkpoint(other, features=kg.features)  # nothing expected: nothing to compare
    load_checkpoint(other, features=kg.features, data_fingerprint="a" * 64)
    with pytest.raises(CheckpointError, match="trained on other data than the run records \\(dataset 'elsewhere'\\)"):
        load_checkpoint(other, data_fingerprint="b" * 64)


def test_a_write_refused_for_permission_is_not_called_a_full_disk(tmp_path):
    """safetensors reports an unwritable folder as its SafetensorError, which read as a short write."""
    from models.atomic import safetensors_short_write, write_atomically

    class SafetensorError(Exception):
        pass

    def refuse(to):
        raise SafetensorError("Error while serializing: IoError(Os { code: 13, kind: PermissionDenied, message: \"Permission denied\" })")

    with pytest.raises(PermissionError, match="is not writable") as refused:
        write_atomically(tmp_path / "f.safetensors", tmp_path / ".f.tmp", refuse, what="the features file",
                         short_write=safetensors_short_write)
    assert "disk may be full" not in str(refused.value)


def test_a_checkpoint_that_cannot_be_read_is_not_called_corrupt(tmp_path, monkeypatch):
    """The zip check swallowed a PermissionError: an intact but unreadable best.pt read "corrupt", and
    eval then suggested the other checkpoint, resume that the best model was lost."""
    import models.checkpoint as checkpoint

    path = tmp_path / "best.pt"
    path.write_bytes(b"PK\x03\x04 whatever")

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(checkpoint, "open", refuse, raising=False)
    with pytest.raises(CheckpointError, match=r"cannot be read \(Permission denied\)"):
        read_checkpoint(path)
