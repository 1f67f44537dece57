"""SADA's fused item table: step time vs BASRec as the catalogue grows (one run, models taking turns).

    python benchmarks/fusion_cost.py [--dataset=beauty] [--items 12102 100000 1000000] [--steps=3] [--threads=1]

SADA fuses ``e_i = e_i^ID + g_i P(s_i)`` (a 384 -> 64 projection per item).  Three variants are
timed on the same Beauty batches (forward + backward of one training step, stage 2, BCE; the
optimiser step is left out: its dense update of the item table costs the same for every variant):

* ``BASRecSASRec``: no fusion (the reference);
* ``SADASASRec``: the step fuses each item it reads once (inputs, targets, substitution
  candidates, negatives);
* ``SADASASRec, whole table per loss term``: the path before, which fused all items in every
  ``rec_loss`` / cross-mix call (``BASRecMixin.calculate_loss`` on the SADA model).

Catalogues larger than the dataset's are synthetic: the item table and the semantic vectors are
extended with random rows (unseen items, gate 1) and negatives are drawn from the whole catalogue;
the batches and everything else are the dataset's.
"""
import argparse
import os
import platform
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from recbole.utils import init_seed  # noqa: E402

from recbole_sada.model.basrec import BASRecMixin  # noqa: E402
from recbole_sada.quick_start import prepare  # noqa: E402
from recbole_sada.utils import get_model  # noqa: E402
from run_table import write_section  # noqa: E402

COMMON = {"train_mode": "sequence", "loss_type": "BCE", "stage1_epochs": 0, "show_progress": False,
          "state": "WARNING", "seed": 2020}


def enlarge(model, n_items):
    """Grow the model's catalogue to ``n_items`` (random extra rows; the real rows kept)."""
    old = model.item_embedding
    if n_items <= old.num_embeddings:
        return model
    emb = nn.Embedding(n_items, old.embedding_dim, padding_idx=0)
    with torch.no_grad():
        emb.weight.normal_(std=0.02)
        emb.weight[: old.num_embeddings] = old.weight
    model.item_embedding = emb
    if hasattr(model, "item_semantic"):
        extra = n_items - model.item_semantic.size(0)
        sem = torch.nn.functional.normalize(torch.randn(extra, model.item_semantic.size(1)), dim=1)
        model.item_semantic = torch.cat([model.item_semantic, sem])
        model.item_train_count = torch.cat([model.item_train_count, torch.zeros(extra, dtype=torch.long)])
        if hasattr(model, "fixed_gate"):
            model.fixed_gate = torch.cat([model.fixed_gate, torch.ones(extra)])
    model.n_items = n_items
    return model


def step_seconds(fn, model, batches):
    model.train()
    model.train_stage = 2
    times = []
    for batch in batches:
        model.zero_grad(set_to_none=True)
        start = time.perf_counter()
        loss = sum(fn(model, batch).values())
        loss.backward()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", default="beauty")
    parser.add_argument("--items", nargs="+", type=int, default=[0, 100_000, 1_000_000], help="0 = the real catalogue")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output", default="results/cost.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config, _, train, _, _ = prepare("SADASASRec", args.dataset, config_dict=dict(COMMON, torch_threads=args.threads))
    batches = [b for _, b in zip(range(args.steps + 1), train)]
    rows = []
    for n_items in args.items:
        times = {}
        for label, name, fn in [
            ("BASRecSASRec", "BASRecSASRec", lambda m, b: m.calculate_loss(b)),
            ("SADASASRec", "SADASASRec", lambda m, b: m.calculate_loss(b)),
            ("SADASASRec, whole table per loss term", "SADASASRec", BASRecMixin.calculate_loss),
        ]:
            cfg = config if name == "SADASASRec" else prepare(name, args.dataset, config_dict=dict(COMMON))[0]
            init_seed(2020, True)
            model = enlarge(get_model(name)(cfg, train._dataset), n_items)
            step_seconds(fn, model, batches[:1])  # warm-up
            times[label] = step_seconds(fn, model, batches[1:])
            print(n_items or model.n_items, label, times[label], flush=True)
            n_real = model.n_items
            del model
        rows.append((n_real, times))
    cpu = f"{os.cpu_count()} CPU cores ({platform.machine()}), torch {torch.__version__}, {args.threads} thread(s)"
    lines = [
        "## SADA's fused item table vs catalogue size",
        "",
        f"Forward + backward of one training step (median of {args.steps} `{args.dataset}` batches of 256 users, "
        f"stage 2, BCE, `train_mode: sequence`, default BASRec/SADA settings, grouped encoding; the optimiser step "
        f"left out), {cpu}.  Catalogues beyond the dataset's {rows[0][0]:,} ids are the dataset plus random unseen "
        "items (negatives from the whole catalogue).",
        "",
        "| items | BASRecSASRec (s) | SADASASRec (s) | ratio to BASRec | SADA, whole table per loss term (s) | ratio to BASRec |",
        "|---|---|---|---|---|---|",
    ]
    for n, t in rows:
        b, s, old = t["BASRecSASRec"], t["SADASASRec"], t["SADASASRec, whole table per loss term"]
        lines.append(f"| {n:,} | {b:.3f} | {s:.3f} | {s / b:.2f}x | {old:.3f} | {old / b:.2f}x |")
    lines += ["", "Reproduce: `python benchmarks/fusion_cost.py " + " ".join(sys.argv[1:]) + "`"]
    text = "\n".join(lines)
    write_section(args.output, "SADA fused table vs catalogue size", text)
    print(text)


if __name__ == "__main__":
    main()
