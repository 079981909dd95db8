"""``imf encode``: one feature vector per entity and modality, from a pretrained encoder or a file."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Optional

import typer
from rich.text import Text

from imf_cli.output import (
    console,
    handle_errors,
    json_option,
    path_option,
    print_json,
    progress_mode,
    progress_option,
    threads_option,
    waiting,
    warn,
)
from kgdata.errors import ImfError

ENCODERS_HELP = (
    "Encoder id. text: minilm (default, offline), bert-base-uncased (the paper's, 768-d), "
    "hf:<hub-id-or-directory>; image: efficientnet-lite0 (default, offline), vgg16 (the paper's, "
    "4096-d), resnet50; structure: gat (default). With --from-file: the name to store the features under "
    "(default: file:<file name>)."
)


class Modality(str, Enum):
    text = "text"
    image = "image"
    structure = "structure"


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class Pooling(str, Enum):
    cls = "cls"
    mean = "mean"
    pooler = "pooler"


@handle_errors
def encode_command(
    name: str = typer.Argument(..., help="Dataset name (see imf datasets)."),
    modality: Modality = typer.Option(..., "--modality", "-m", help="Which modality to encode."),
    encoder: Optional[str] = typer.Option(None, "--encoder", "-e", help=ENCODERS_HELP, show_default=False),
    from_file: Optional[Path] = path_option(
        "--from-file",
        help=(
            "Import precomputed text or image features instead of encoding: .npy (plain arrays only), .pt "
            "(read by torch.load with weights_only=True) or .safetensors, holding an entities × dim array (rows "
            "in entity2id order, or as --keys lists them) or a key → vector dict. Pickles (.pkl) are refused: "
            "loading one can run arbitrary code."
        ),
        show_default=False,
    ),
    keys: Optional[Path] = path_option(
        "--keys", help="With --from-file: a file of one entity key per line, naming each row.", show_default=False
    ),
    batch_size: Optional[int] = typer.Option(
        None,
        "--batch-size",
        min=1,
        help="Items per batch (structure: triples per step).",
        show_default="picked for the encoder and device",
    ),
    device: Device = typer.Option(Device.auto, "--device", help="auto uses CUDA when present."),
    pooling: Optional[Pooling] = typer.Option(
        None, "--pooling", help="Text (hf:, bert-base-uncased, minilm): how token states become one vector.",
        show_default=False,
    ),
    weights: Optional[Path] = path_option(
        "--weights", help="Image encoders: a state-dict file to load instead of the default weights.",
        show_default=False,
    ),
    download: bool = typer.Option(
        False, "--download", help="Allow downloading missing weights (never while HF_HUB_OFFLINE is set)."
    ),
    dim: Optional[int] = typer.Option(
        None, "--dim", min=1, help="gat: embedding size.", show_default="256"
    ),
    epochs: Optional[int] = typer.Option(
        None, "--epochs", min=1, help="gat: training epochs.", show_default="30"
    ),
    lr: Optional[float] = typer.Option(
        None, "--lr", min=0.0, help="gat: Adam learning rate.", show_default="0.01"
    ),
    margin: Optional[float] = typer.Option(
        None, "--margin", min=0.0, help="gat: TransE margin.", show_default="1.0"
    ),
    negatives: Optional[int] = typer.Option(
        None, "--negatives", min=1, help="gat: corrupted triples per positive.", show_default="8"
    ),
    seed: Optional[int] = typer.Option(
        None, "--seed", help="gat: random seed.", show_default="drawn, then recorded"
    ),
    force: bool = typer.Option(False, "--force", help="Recompute even when the inputs are unchanged."),
    progress: bool = progress_option(),
    json_output: bool = json_option("the report"),
    threads: Optional[int] = threads_option(),
) -> None:
    """Encode every entity of a dataset for one modality and store the features.

    Text is an entity's description, else its name; images are the stored image files; structure is a
    GAT trained with a TransE loss on the train triples. Entities without an input (or with an
    unreadable image) are recorded as missing. Running again with unchanged inputs does nothing, and
    only entities that are new or changed since the last run are encoded (--force encodes all).

    Example: imf encode countries-mm --modality text
    """
    from imf_cli.runtime import set_threads
    from kgdata.locking import locked_store

    set_threads(threads)
    bar, lines = progress_mode(progress, json_output)
    with locked_store(name, "write", on_wait=waiting) as store:
        if from_file is not None:
            given = {
                flag: value
                for flag, value in (
                    ("--batch-size", batch_size), ("--pooling", pooling), ("--weights", weights), ("--dim", dim),
                    ("--epochs", epochs), ("--lr", lr), ("--margin", margin), ("--negatives", negatives),
                    ("--seed", seed), ("--device", None if device == Device.auto else device.value),
                    ("--download", download or None),
                )
                if value is not None
            }
            if given:
                raise ImfError(f"{', '.join(given)} cannot be combined with --from-file")
            from kgdata.feature_import import import_features

            report = import_features(
                store, modality.value, from_file, keys=keys, encoder=encoder, force=force
            )
        else:
            if keys is not None:
                raise ImfError("--keys names the rows of a --from-file file; pass --from-file too")
            from kgdata.encoders import encode_dataset

            options = {
                option: value
                for option, value in (
                    ("pooling", pooling.value if pooling else None),
                    ("weights", str(weights) if weights else None),
                    ("dim", dim), ("epochs", epochs), ("lr", lr), ("margin", margin),
                    ("negatives", negatives), ("seed", seed),
                )
                if value is not None
            }
            if download:
                options["download"] = True
            report = encode_dataset(
                store,
                modality.value,
                encoder,
                options=options,
                batch_size=batch_size,
                device=device.value,
                force=force,
                progress=lines or bar,
                threads=threads,
            )

    for message in report.warnings:
        warn(message)
    if json_output:
        print_json(report.to_dict())
        return
    covered = report.rows - report.missing
    if report.status == "unchanged":
        console.print(
            Text.assemble(
                f"Unchanged: {report.modality} features of ",
                (report.dataset, "bold"),
                f" from {report.encoder} are up to date (input hash {report.input_hash[:12]}); pass --force to "
                "recompute.",
            ),
            soft_wrap=True,
            highlight=False,
        )
    else:
        unit = report.extra.get("throughput_unit", "items")
        speed = f", {report.items_per_second:,.1f} {unit}/s" if report.items_per_second else ""
        kept = f"; {report.encoded:,} encoded, {report.reused:,} unchanged and kept" if report.reused else ""
        console.print(
            Text.assemble(
                f"Stored {report.modality} features of ",
                (report.dataset, "bold"),
                f" from {report.encoder}: {report.dim}-d, {covered:,} of {report.rows:,} entities covered, "
                f"{report.missing:,} missing{kept} ({report.seconds:.1f} s{speed})",
            ),
            soft_wrap=True,
            highlight=False,
        )
    console.print(f"File: {report.path}", soft_wrap=True)
