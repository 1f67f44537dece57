"""Shared fixtures: a tiny synthetic atomic dataset and small-model settings."""
import os
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SHARED_DATASETS = Path(os.environ.get("SADA_SHARED_DATASETS", ROOT.parent / "shared" / "datasets"))


def write_tiny_dataset(root, name="tiny", n_users=60, n_items=40, seed=0):
    """Write ``<root>/<name>/<name>.inter`` (and ``.item`` with titles); return the sequences."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / name
    folder.mkdir(parents=True, exist_ok=True)
    seqs = {}
    with open(folder / f"{name}.inter", "w") as f:
        f.write("user_id:token\titem_id:token\ttimestamp:float\n")
        for u in range(1, n_users + 1):
            length = int(rng.integers(5, 14))
            # two "tastes" so that models have something to learn
            base = 1 if u % 2 else n_items // 2 + 1
            items = [int(base + rng.integers(0, n_items // 2)) for _ in range(length)]
            seqs[u] = items
            for t, i in enumerate(items, start=1):
                f.write(f"u{u}\ti{i}\t{t}\n")
    with open(folder / f"{name}.item", "w") as f:
        f.write("item_id:token\ttitle:token\n")
        for i in range(1, n_items + 1):
            kind = "action movie" if i <= n_items // 2 else "romantic comedy"
            f.write(f"i{i}\t{kind} number {i}\n")
    return seqs


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_tiny_dataset(root)
    return root


@pytest.fixture
def small_cfg(tiny_root, tmp_path):
    """Config overrides for fast runs on the tiny dataset."""
    return {
        "data_path": str(tiny_root),
        "checkpoint_dir": str(tmp_path / "saved"),
        "epochs": 1,
        "hidden_size": 16,
        "inner_size": 32,
        "embedding_size": 16,
        "n_layers": 1,
        "n_heads": 1,
        "train_batch_size": 32,
        "eval_batch_size": 128,
        "MAX_ITEM_LIST_LENGTH": 10,
        "show_progress": False,
        "state": "WARNING",
        "train_mode": "sequence",
    }
