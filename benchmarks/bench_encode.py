"""Throughput of the default encoders on Countries-MM.

Imports the bundled Countries-MM into a temporary IMF_HOME, then runs each offline default encoder
(minilm, efficientnet-lite0, gat) over the whole dataset and prints, per encoder: items encoded,
items per second while encoding, model-load time and the wall time of the whole ``encode_dataset`` call
(what ``imf encode`` costs, minus interpreter start-up). For gat an item is one train triple in one
epoch. Targets on a 2-core CPU: each under 60 s.

Usage: .venv/bin/python benchmarks/bench_encode.py [--device cpu] [--only text image structure] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from imf_cli.runtime import keep_freed_memory

TARGET_SECONDS = 60.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    parser.add_argument("--only", nargs="+", default=["text", "image", "structure"],
                        choices=["text", "image", "structure"])
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    keep_freed_memory()  # as the imf command does

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from kgdata.encoders import DEFAULT_ENCODERS, encode_dataset
    from kgdata.importing import bundled_path, import_dataset
    from kgdata.store import EntityStore

    source = bundled_path("countries-mm")
    if source is None or not (source / "entities.tsv").is_file():
        print(f"Countries-MM is not built ({source}/entities.tsv is absent)", file=sys.stderr)
        return 1

    results = []
    with tempfile.TemporaryDirectory(prefix="imf-bench-") as home:
        import_dataset("countries-mm", home=home)
        with EntityStore.open("countries-mm", home) as store:
            for modality in args.only:
                options = {"seed": 0} if modality == "structure" else {}
                started = time.perf_counter()
                report = encode_dataset(store, modality, options=options, device=args.device, force=True)
                wall = time.perf_counter() - started
                encoded = report.rows - report.missing if modality != "structure" else None
                results.append(
                    {
                        "modality": modality,
                        "encoder": DEFAULT_ENCODERS[modality],
                        "entities": report.rows,
                        "encoded": encoded,
                        "dim": report.dim,
                        "items_per_second": report.items_per_second,
                        "load_seconds": report.extra["load_seconds"],
                        "encode_seconds": report.extra["encode_seconds"],
                        "wall_seconds": round(wall, 2),
                        "within_target": wall <= TARGET_SECONDS,
                        "final_loss": report.extra.get("losses", [None])[-1] if modality == "structure" else None,
                    }
                )

    if args.json:
        print(json.dumps({"device": args.device, "threads": torch.get_num_threads(), "results": results}, indent=2))
        return 0
    threads = torch.get_num_threads()
    print(f"Countries-MM, device {args.device}, {threads} torch threads, target ≤ {TARGET_SECONDS:.0f} s each")
    print(f"{'encoder':<20}{'items':>8}{'items/s':>12}{'load s':>9}{'encode s':>10}{'wall s':>9}  target")
    for row in results:
        items = row["encoded"] if row["encoded"] is not None else "triples"
        print(
            f"{row['encoder']:<20}{items:>8}{row['items_per_second'] or 0:>12,.1f}{row['load_seconds']:>9.2f}"
            f"{row['encode_seconds']:>10.2f}{row['wall_seconds']:>9.2f}  {'ok' if row['within_target'] else 'MISSED'}"
        )
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    raise SystemExit(main())
