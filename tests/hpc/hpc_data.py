"""Tiny data and configs for the hpc tests: the trainer tests' toy HH -> 4b files (real HDF5, SPANet layout)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import yaml

__all__ = ["TINY_OPTIONS", "tiny_dnn_search", "tiny_files", "tiny_spanet2_search", "trainer_data"]

_TRAINER_DATA = Path(__file__).resolve().parents[1] / "training" / "trainer_data.py"


def _load_trainer_data():
    if "trainer_data" in sys.modules:
        return sys.modules["trainer_data"]
    spec = importlib.util.spec_from_file_location("trainer_data", _TRAINER_DATA)
    module = importlib.util.module_from_spec(spec)
    sys.modules["trainer_data"] = module
    spec.loader.exec_module(module)
    return module


trainer_data = _load_trainer_data()
TINY_OPTIONS = dict(trainer_data.OPTIONS, epochs=1)


def tiny_files(root: Path, *, n_train: int = 400, n_test: int = 200, seed: int = 3) -> dict[str, Path]:
    """Topology YAML, training/testing HDF5 and a SPANet2 options JSON (tiny network) under `root`."""
    root.mkdir(parents=True, exist_ok=True)
    event = trainer_data.write_topology(root / "event.yaml")
    train = trainer_data.write_event_file(root / "train.h5", n_train, seed=seed)
    test = trainer_data.write_event_file(root / "test.h5", n_test, seed=seed + 1)
    options = root / "options.json"
    options.write_text(
        json.dumps(
            dict(TINY_OPTIONS, event_info_file=str(event), training_file=str(train), testing_file=str(test)),
            indent=2,
        )
    )
    dnn_options = root / "dnn_options.json"
    dnn_options.write_text(
        json.dumps(
            {
                "hidden_dim": 16,
                "n_layers": 1,
                "batch_size": 128,
                "epochs": 2,
                "patience": 0,
                "learning_rate": 0.003,
            }
        )
    )
    return {"event": event, "train": train, "test": test, "options": options, "dnn_options": dnn_options}


def tiny_spanet2_search(
    path: Path, files: dict[str, Path], *, num_samples: int = 2, epochs: int = 1, **extra
) -> Path:
    """A SPANet2 search config over two options of the tiny network."""
    config = {
        "model": "spanet2",
        "options": str(files["options"]),
        "objective": "val_loss",
        "num_samples": num_samples,
        "epochs": epochs,
        "max_concurrent_trials": 1,
        "resources_per_trial": {"cpu": 1, "gpu": 0},
        "scheduler": {"type": "asha", "grace_period": 1},
        "seed": 7,
        "space": {"learning_rate": {"loguniform": [1e-4, 1e-2]}, "dropout": {"uniform": [0.0, 0.3]}},
    }
    config.update(extra)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def tiny_dnn_search(
    path: Path, files: dict[str, Path], *, num_samples: int = 2, epochs: int = 2, **extra
) -> Path:
    config = {
        "model": "dnn",
        "options": str(files["dnn_options"]),
        "training_file": str(files["train"]),
        "objective": "val_auc",
        "num_samples": num_samples,
        "epochs": epochs,
        "max_concurrent_trials": 1,
        "resources_per_trial": {"cpu": 1},
        "scheduler": "fifo",
        "seed": 5,
        "space": {
            "learning_rate": {"loguniform": [1e-4, 1e-1]},
            "hidden_dim": {"choice": [16, 32]},
            "n_layers": {"randint": [1, 2]},
        },
    }
    config.update(extra)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path
