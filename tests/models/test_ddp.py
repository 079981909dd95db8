import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from models.checkpoint import load_checkpoint

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


def test_two_process_gloo_training_finishes_and_its_checkpoint_loads(tmp_path, kg):
    data_path = tmp_path / "kg.pt"
    torch.save({f.name: getattr(kg, f.name) for f in dataclasses.fields(kg)}, data_path)
    run_dir = tmp_path / "run"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        str(HERE / "ddp_train.py"), str(data_path), str(run_dir),
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env, cwd=REPO)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert done.stdout.count("rank-done") == 2
    trace = [json.loads(line) for line in (run_dir / "trace.jsonl").read_text().splitlines()]
    assert [record["epoch"] for record in trace] == [1]  # one writer: rank 0
    payload = torch.load(run_dir / "last.pt", weights_only=True)
    assert payload["world_size"] == 2
    # Every rank's RNG state is kept, and the ranks drew different dropout masks.
    assert len(payload["rng"]) == 2
    assert not torch.equal(payload["rng"][0]["torch"], payload["rng"][1]["torch"])
    assert torch.equal(payload["rng"][0]["shuffle"], payload["rng"][1]["shuffle"])
    model, config = load_checkpoint(run_dir / "best.pt")
    assert config["train"]["epochs"] == 1
    assert model(torch.tensor([0, 1]), torch.tensor([0, 4])).fused.shape == (2, kg.num_entities)
