"""Worker of test_ddp.py, launched by torchrun: train one epoch on the KG saved at argv[1] into argv[2]."""

import sys

import torch

from models.config import resolve
from models.training import KGTensors, train

if __name__ == "__main__":
    torch.set_num_threads(1)
    saved = torch.load(sys.argv[1], weights_only=True)
    data = KGTensors(**saved)
    config = resolve(
        {
            "model": {"dim": 8},
            "train": {"epochs": 1, "batch_size": 16, "seed": 5, "device": "cpu"},
            "eval": {"batch_size": 16},
        }
    )
    result = train(data, config, sys.argv[2], progress=False)
    print(f"rank-done best_valid_mrr={result.best_valid_mrr}", flush=True)
