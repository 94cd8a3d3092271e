"""Train: `python -m __project__.train` reads params.yaml, writes models/ and metrics.json."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from __project__.config import METRICS, MODEL, load_params, write_json
from __project__.data import load_split
from __project__.model import deterministic, evaluate, make_model


def main(root: Path | None = None) -> dict[str, Any]:
    root = root or Path.cwd()
    params = load_params(root)
    deterministic(params["seed"])
    (x_train, y_train), (x_test, y_test) = load_split(root, params)
    model = make_model(x_train.shape[1], params)
    optimiser = torch.optim.SGD(model.parameters(), lr=params["model"]["learning_rate"])
    batch = params["model"]["batch_size"]
    shuffle = torch.Generator().manual_seed(params["seed"])
    for _ in range(params["model"]["epochs"]):
        model.train()
        order = torch.randperm(len(x_train), generator=shuffle)
        for start in range(0, len(order), batch):
            rows = order[start : start + batch]
            optimiser.zero_grad()
            loss = nn.functional.cross_entropy(model(x_train[rows]), y_train[rows])
            loss.backward()
            optimiser.step()
    (root / MODEL).parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), root / MODEL)
    metrics = {
        "train": evaluate(model, x_train, y_train),
        "test": {"accuracy": evaluate(model, x_test, y_test)["accuracy"]},
    }
    write_json(root / METRICS, metrics)
    print(f"model: {MODEL}; test accuracy {metrics['test']['accuracy']}")
    return metrics


if __name__ == "__main__":
    main()
