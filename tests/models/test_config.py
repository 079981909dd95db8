import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from models.config import ADDED_KEYS, ConfigError, ModelConfig, RunConfig, TrainConfig, load_yaml, resolve


def test_defaults_follow_the_reference():
    config = resolve()
    assert config.model == ModelConfig()
    assert (config.model.dim, config.train.lr, config.train.batch_size) == (256, 5e-4, 256)
    assert config.train.label_smoothing == 0.1
    assert config.train.seed is None


def test_layers_override_in_order_and_none_flags_are_skipped():
    file_values = {"model": {"dim": 64, "fusion": "mean"}, "train": {"lr": "1e-3", "seed": 3}}
    flags = {"train.lr": 0.01, "train.epochs": None, "model.modalities": "structure,text"}
    config = resolve(file_values, flags)
    assert config.model.dim == 64 and config.model.fusion == "mean"
    assert config.train.lr == 0.01 and config.train.seed == 3
    assert config.train.epochs == TrainConfig().epochs
    assert config.model.modalities == ("structure", "text")


@pytest.mark.parametrize(
    ("layer", "named"),
    [
        ({"train": {"learning_rate": 0.1}}, "'train.learning_rate'"),
        ({"train.lrr": 0.1}, "did you mean 'train.lr'"),
        ({"optimizer": {"lr": 0.1}}, "'optimizer'"),
        ({"modle.dim": 3}, "'modle.dim'"),
    ],
)
def test_an_unknown_key_fails_with_a_message_naming_it(layer, named):
    with pytest.raises(ConfigError, match="unknown config key") as error:
        resolve(layer)
    assert named in str(error.value)
    with pytest.raises(ConfigError):
        resolve(None, layer)


@pytest.mark.parametrize(
    ("layer", "message"),
    [
        ({"model": {"dim": "big"}}, "'model.dim' expects int"),
        ({"model": {"dim": 2.5}}, "'model.dim' expects int"),
        ({"train": {"lr": True}}, "'train.lr' expects a finite float"),
        ({"train": {"lr": float("inf")}}, "'train.lr' expects a finite float"),
        ({"train": {"lr": ".inf"}}, "'train.lr' expects a finite float"),
        ({"train": {"temperature": float("nan")}}, "'train.temperature' expects a finite float"),
        ({"train": {"epochs": float("inf")}}, "'train.epochs' expects int"),
        ({"model": {"fusion": "max"}}, "model.fusion must be one of"),
        ({"model": {"input_dropout": 1.5}}, "input_dropout must be in"),
        ({"train": {"batch_size": 1}}, "at least 2"),
        ({"train": {"epochs": 10**20}}, "train.epochs must be at most 2147483647"),
        ({"train": {"patience": 2**31}}, "train.patience must be at most"),
        ({"train": "fast"}, "section 'train' must hold its keys"),
    ],
)
def test_bad_values_fail_clearly(layer, message):
    with pytest.raises(ConfigError, match=message):
        resolve(layer)


def test_dict_round_trip_through_yaml(tmp_path):
    config = resolve({"model": {"dim": 32, "feature_mode": "project"}, "train": {"seed": 11}})
    plain = config.to_dict()
    assert plain["model"]["modalities"] == ["structure", "visual", "text"]
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(plain))
    assert RunConfig.from_dict(load_yaml(path)) == config
    assert config.with_seed(5).train.seed == 5


def test_a_stored_config_that_predates_a_key_keeps_the_old_behaviour():
    stored = resolve({"model": {"fusion": "learned-per-relation"}, "train": {"fused_loss_weight": 1.0}}).to_dict()
    for key in ADDED_KEYS:
        section, name = key.split(".")
        del stored[section][name]
    config = RunConfig.from_dict(stored)
    for key, value in ADDED_KEYS.items():
        section, name = key.split(".")
        assert getattr(getattr(config, section), name) == value, key
    assert "fusion_residual" not in stored["model"]  # the caller's dict is not changed
    assert resolve({}).model.fusion_residual and resolve({}).train.fused_loss_weight == 0.0  # new runs: today's defaults


def test_load_yaml_rejects_non_mappings(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_yaml(path)
    path.write_text("")
    assert load_yaml(path) == {}


def test_config_module_does_not_import_torch():
    code = "import sys; import models.config; import models; print('torch' in sys.modules)"
    repo = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=repo)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize(
    ("text", "where", "what"),
    [
        ("model: {dim: 8}\ntrain:\n  lr: 0.1\n  epochs: 3\n  lr: 0.2\n", "line 5, column 3", "key 'lr' is given twice"),
        ("model: {dim: 8}\nmodel: {dim: 9}\n", "line 2, column 1", "key 'model' is given twice"),
        ("model:\n\tdim: 8\n", "line 2, column 1", "cannot start any token"),
        ("model: {dim: 8\n", "line 2", "expected ',' or '}'"),
        ("!!python/object/apply:os.system [echo]\n", "line 1, column 1", "could not determine a constructor"),
    ],
)
def test_a_config_file_error_names_its_line_and_no_key_is_dropped_silently(tmp_path, text, where, what):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as error:
        load_yaml(path)
    message = str(error.value)
    assert message.startswith(f"{path}, {where}") and what in message and "\n" not in message


@pytest.mark.parametrize(("written", "read"), [
    ("010", 10), ("08", 8), ("0o17", 15), ("0x10", 16), ("-3", -3), ("1e-1", 0.1), ("3e-3", 0.003), ("1:0", "1:0"),
])
def test_config_file_numbers_are_read_as_yaml_1_2_reads_them(tmp_path, written, read):
    """PyYAML's YAML 1.1 read `dim: 010` as octal 8 and `dim: 1:0` as base-60 60: runs trained numbers that
    were not the ones written. Files imf writes itself are read back as written."""
    from models.config import parse_yaml

    path = tmp_path / "c.yaml"
    path.write_text(f"model:\n  dim: {written}\n")
    assert load_yaml(path)["model"]["dim"] == read
    if written == "1:0":
        with pytest.raises(ConfigError, match="model.dim"):
            resolve(load_yaml(path))
    assert parse_yaml("a: 010\n", path, written_by_imf=True) == {"a": 8}  # yaml.safe_dump never writes 010 for 10


def test_an_empty_section_sets_nothing_and_a_merged_key_is_placed_at_its_section(tmp_path):
    """`model:` with nothing under it said "must be a mapping, got NoneType"; a bad key merged in with
    `<<: *anchor` was named with no file or line."""
    path = tmp_path / "c.yaml"
    path.write_text("model:\ntrain:\n  lr: 0.01\n")
    assert resolve(load_yaml(path)).train.lr == 0.01
    path.write_text("model: &m {dim: 8}\ntrain:\n  <<: *m\n")
    values = load_yaml(path)
    with pytest.raises(ConfigError, match="unknown config key 'train.dim'") as error:
        resolve(values)
    assert values.locate(error.value) == f"{path}, line 2: "


@pytest.mark.parametrize("text", ["model:\n  dim: !!int abc\n", "model:\n  dim: !!int 0b1\n", "model:\n  dim: !!int\n"])
def test_a_tagged_value_that_does_not_read_is_a_config_error_not_a_traceback(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=f"{path}: not valid YAML: a tagged value does not read"):
        load_yaml(path)


def test_a_merge_key_may_be_overridden(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("base: &base {dim: 8, fusion: mean}\nmodel:\n  <<: *base\n  dim: 16\n")
    assert load_yaml(path)["model"] == {"dim": 16, "fusion": "mean"}


@pytest.mark.parametrize(
    ("layer", "message"),
    [
        ({1: 2}, "unknown config key 1: keys are names"),
        ({None: 2}, "unknown config key None: keys are names"),
        ({True: 1}, "unknown config key True: keys are names"),
        ({"train": {"lr": 0.1}, "train.lr": 0.2}, "config key 'train.lr' is given twice (dotted and in its section)"),
        ({"model": {"modalities": ["audio"]}}, "model.modalities holds the unknown branch 'audio'"),
    ],
)
def test_keys_that_are_not_names_or_are_given_twice_and_unknown_branches_are_config_errors(layer, message):
    with pytest.raises(ConfigError) as error:
        resolve(layer)
    assert message in str(error.value)


def test_a_value_built_from_aliases_is_quoted_short_in_the_error():
    """A few hundred bytes of YAML aliases make a list that would print as gigabytes."""
    text = "a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
    for level in range(1, 9):
        text += f"a{level}: &a{level} [{', '.join([f'*a{level - 1}'] * 9)}]\n"
    bomb = yaml.safe_load(text)["a8"]
    with pytest.raises(ConfigError) as error:
        resolve({"train": {"epochs": bomb}})
    assert len(str(error.value)) < 200 and "config key 'train.epochs' expects int" in str(error.value)
