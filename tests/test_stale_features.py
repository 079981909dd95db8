"""Features computed from other inputs than the store holds are refused by train and eval ("re-run imf encode").

Also: the dataset lock keeps `import --replace` from swapping the store under an open service.
"""

from __future__ import annotations

import json

import pytest

from helpers import TINY_TEST, TINY_TRAIN, TINY_VALID, error_line, write_tsv_dataset
from helpers import cli as invoke
from helpers import cli_ok as ok

SMALL = ["--dim", "8", "--batch-size", "4", "--eval-every", "1", "--seed", "3", "--device", "cpu", "--no-progress"]
NAMES = ["paris", "berlin", "madrid", "france", "germany", "spain", "europe"]


def write_tiny(root, *, france: str = "Republic in Western Europe", train=TINY_TRAIN, valid=TINY_VALID):
    entities = [{"id": n, "name": n.title(), "description": f"{n.title()} is a place"} for n in NAMES]
    entities[3]["description"] = france
    return write_tsv_dataset(root, train=train, valid=valid, test=TINY_TEST, entities=entities)


@pytest.fixture
def tiny_text(tmp_path, fake_text_encoder):
    root = write_tiny(tmp_path / "tiny")
    ok("import", str(root))
    ok("encode", "tiny", "-m", "text", "-e", "fake-text")
    return root


def test_text_features_of_old_descriptions_are_refused_after_a_replace(tiny_text, tmp_path, fake_text_encoder):
    write_tiny(tiny_text, france="A country whose description was rewritten")
    ok("import", str(tiny_text), "--replace")

    listing = invoke("features", "tiny")
    assert listing.exit_code == 0 and "stale: computed from other texts" in listing.output
    line = error_line(invoke("train", "tiny", "--modalities", "structure,text", "--epochs", "1", *SMALL))
    assert "re-run imf encode tiny --modality text --encoder fake-text" in line and "text-fake-text" in line

    fake_text_encoder.encoded.clear()
    report = json.loads(ok("encode", "tiny", "-m", "text", "-e", "fake-text", "--json").stdout)
    assert fake_text_encoder.encoded == ["A country whose description was rewritten"]
    assert (report["encoded"], report["reused"]) == (1, 6)
    ok("train", "tiny", "--modalities", "structure,text", "--epochs", "1", *SMALL)


def test_gat_features_of_an_old_train_split_are_refused_after_a_resplit(tmp_path, imf_home):
    root = write_tiny(tmp_path / "tiny")
    ok("import", str(root))
    ok("encode", "tiny", "-m", "structure", "--epochs", "1", "--dim", "8", "--seed", "1")
    moved = TINY_TRAIN[-1]  # a train triple becomes a valid triple: GAT trained on it would leak it
    write_tiny(root, train=TINY_TRAIN[:-1], valid=[*TINY_VALID, moved])
    ok("import", str(root), "--replace")
    line = error_line(
        invoke("train", "tiny", "--modalities", "structure", "--structure-init", "gat", "--epochs", "1", *SMALL)
    )
    assert "computed from other train triples" in line and "re-run imf encode tiny --modality structure" in line


def test_eval_and_predict_refuse_a_run_whose_features_went_stale(tiny_text):
    run = json.loads(ok("train", "tiny", "--modalities", "structure,text", "--epochs", "1", *SMALL, "--json").stdout)
    run_dir = run["run_dir"]
    ok("eval", run_dir)
    write_tiny(tiny_text, france="Edited after training")
    ok("import", str(tiny_text), "--replace")  # same keys and triples: the content hash alone cannot tell
    for args in (["eval", run_dir], ["predict", run_dir, "--head", "paris", "--relation", "capital_of"]):
        line = error_line(invoke(*args))
        assert "trained on text features computed from other texts" in line
        assert "re-run imf encode tiny --modality text" in line


def test_replace_fails_clearly_while_a_service_reads_the_dataset(tiny_text):
    from imf_cli.service import PredictionService

    run = json.loads(ok("train", "tiny", "--modalities", "structure", "--epochs", "1", *SMALL, "--json").stdout)
    with PredictionService.from_run(run["run_dir"], device="cpu") as service:
        result = invoke("import", str(tiny_text), "--replace")
        assert service.resolve_entity("paris").key == "paris"  # still reading the store it opened
    assert error_line(result, code=1).startswith("Error: dataset 'tiny' is in use by another imf process")
    ok("import", str(tiny_text), "--replace")  # closed: free again


def test_images_that_cannot_be_read_now_are_named_not_called_other_images(tmp_path, imf_home):
    """A source folder moved after import: eval said the run was trained on "features computed from
    other images" and to re-encode, which then failed on the same missing files."""
    from PIL import Image

    from imf_cli.runs import check_same_dataset
    from kgdata.errors import ImfError
    from kgdata.importing import import_dataset
    from kgdata.inputs import graph_input_hash
    from kgdata.store import EntityStore

    root = tmp_path / "src"
    (root / "images").mkdir(parents=True)
    entities = [{"id": n, "name": n.title()} for n in NAMES]
    for entity in entities[:3]:
        Image.new("RGB", (8, 8), (len(entity["id"]) * 20, 0, 0)).save(root / "images" / f"{entity['id']}.png")
        entity["image"] = f"images/{entity['id']}.png"
    write_tsv_dataset(root, train=TINY_TRAIN, valid=TINY_VALID, test=TINY_TEST, entities=entities)
    import_dataset(root, name="moved")
    with EntityStore.open("moved") as store:
        meta = {"dataset_hash": store.content_hash, "features": [
            {"modality": "image", "computed_from": "images", "graph_input_hash": graph_input_hash(store, "images")}
        ]}
        check_same_dataset(store, meta, "RUN")
    root.rename(tmp_path / "elsewhere")
    with EntityStore.open("moved") as store:
        with pytest.raises(ImfError, match=r"3 images that dataset 'moved' names cannot be read now") as error:
            check_same_dataset(store, meta, "RUN")
    assert "moved or unmounted" in str(error.value) and str(root / "images") in str(error.value)
