"""Import speed and memory: time and peak RSS of `import_dataset` on the shared benchmarks.

Each import runs in a fresh child process so its peak RSS is its own. Prints one row per dataset
(median of --repeats runs) and the counts the import reported.

    python benchmarks/bench_import.py [--shared ../shared/datasets] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

TARGETS = {"fb15k-237": (15.0, 1024.0)}  # seconds, MiB

CHILD = """
import json, resource, sys, time
from kgdata.importing import import_dataset
start = time.perf_counter()
report = import_dataset(sys.argv[1], home=sys.argv[2], replace=True)
seconds = time.perf_counter() - start
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": seconds, "rss_mib": rss, "report": report.to_dict()}))
"""


def run_once(source: Path) -> dict:
    with tempfile.TemporaryDirectory() as home:
        out = subprocess.run(
            [sys.executable, "-c", CHILD, str(source), home], capture_output=True, text=True, check=True
        ).stdout
    return json.loads(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_shared = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
    parser.add_argument("--shared", type=Path, default=default_shared)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    sources = {"countries-mm": Path("countries-mm")}
    for name in ("fb15k-237", "db15k", "mkg-w"):
        if (args.shared / name).is_dir():
            sources[name] = args.shared / name
        else:
            print(f"skip {name}: not found under {args.shared}")

    print(f"{'dataset':<14}{'median s':>10}{'peak RSS MiB':>14}  counts (entities, relations, train/valid/test, dropped)")
    for name, source in sources.items():
        runs = [run_once(source) for _ in range(args.repeats)]
        seconds = statistics.median(r["seconds"] for r in runs)
        rss = max(r["rss_mib"] for r in runs)
        rep = runs[0]["report"]
        counts = (
            f"{rep['entities']:,} ent, {rep['relations']} rel, {rep['train']:,}/{rep['valid']:,}/{rep['test']:,}, "
            f"dropped {sum(rep['duplicates_dropped'].values())}, described {rep['entities_with_description']:,}"
        )
        verdict = ""
        if name in TARGETS:
            max_s, max_rss = TARGETS[name]
            ok = seconds <= max_s and rss <= max_rss
            verdict = f"  [{'OK' if ok else 'MISS'}: target <= {max_s:.0f} s, < {max_rss:.0f} MiB]"
        print(f"{name:<14}{seconds:>10.2f}{rss:>14.0f}  {counts}{verdict}")


if __name__ == "__main__":
    main()
