"""Training speed on the same data: RecBole's SASRec vs the plugin's SASRec in both train modes.

    python benchmarks/speed.py [--dataset=ml-100k] [--batches=40] [--output results/speed.md]

For each variant, ``--batches`` training batches (batch 256, the papers' size) are timed through
the trainer (RecBole's ``Trainer`` for RecBole's model, ``SADATrainer`` for the plugin's), after
one warm-up batch; the epoch time is extrapolated to the whole epoch.  The floor is a plain torch
loop (pre-built tensors, ``calculate_loss``, ``backward``, Adam step) over the same module and
batches.  All variants use ``loss_type: CE`` (RecBole's SASRec has no BCE).
"""
import argparse
import itertools
import os
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from recbole.model.sequential_recommender.sasrec import SASRec as RecBoleSASRec  # noqa: E402
from recbole.trainer import Trainer  # noqa: E402

from recbole_sada.quick_start import prepare  # noqa: E402
from recbole_sada.trainer import SADATrainer  # noqa: E402
from recbole_sada.utils import get_model  # noqa: E402


def time_trainer(trainer_cls, model, config, train_data, n_batches):
    trainer = trainer_cls(config, model)
    batches = list(itertools.islice(iter(train_data), n_batches + 1))

    class Subset(list):
        shuffle = False

    warm, timed = Subset(batches[:1]), Subset(batches[1:])
    trainer._train_epoch(warm, 0)
    start = time.perf_counter()
    trainer._train_epoch(timed, 1)
    elapsed = time.perf_counter() - start
    samples = sum(len(b) for b in timed)
    return elapsed, samples, batches


def time_plain(model, batches):
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for b in batches[:1]:
        opt.zero_grad()
        model.calculate_loss(b).backward()
        opt.step()
    start = time.perf_counter()
    for b in batches[1:]:
        opt.zero_grad()
        loss = model.calculate_loss(b)
        loss = sum(loss.values()) if isinstance(loss, dict) else loss
        loss.backward()
        opt.step()
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--output", default="results/speed.md")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    common = {"loss_type": "CE", "train_batch_size": 256, "show_progress": False, "state": "WARNING", "epochs": 1}
    rows = []
    for label, model_name, mode in [
        ("RecBole SASRec (prefix)", "RecBole", "prefix"),
        ("plugin SASRec, train_mode=prefix", "SASRec", "prefix"),
        ("plugin SASRec, train_mode=sequence", "SASRec", "sequence"),
    ]:
        config, _, train, _, _ = prepare("SASRec", args.dataset, config_dict={**common, "train_mode": mode})
        torch.manual_seed(0)
        if model_name == "RecBole":
            model, trainer_cls = RecBoleSASRec(config, train._dataset), Trainer
        else:
            model, trainer_cls = get_model(model_name)(config, train._dataset), SADATrainer
        n = min(args.batches, len(train) - 1)
        elapsed, samples, batches = time_trainer(trainer_cls, model, config, train, n)
        plain = time_plain(model, batches)
        targets = sum(int((b["target_item_list"] > 0).sum()) if "target_item_list" in b else len(b) for b in batches[1:])
        epoch = elapsed / n * len(train)
        rows.append((label, len(train.dataset), len(train), epoch, samples / elapsed, targets / elapsed, samples / plain, targets / plain))
        print(rows[-1], flush=True)
    cpu = f"{os.cpu_count()} CPU cores ({platform.machine()}), torch {torch.__version__}, threads {torch.get_num_threads()}"
    lines = [
        "# Training speed",
        "",
        f"Dataset `{args.dataset}`, batch 256, `loss_type: CE`, {args.batches} timed batches per variant "
        f"(epoch time extrapolated), on {cpu}.",
        "",
        "| variant | samples / epoch | batches / epoch | epoch time (s) | samples/s (trainer) | targets/s (trainer) | samples/s (plain torch) | targets/s (plain torch) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]:.1f} | {r[4]:.0f} | {r[5]:.0f} | {r[6]:.0f} | {r[7]:.0f} |")
    lines += [
        "",
        "A *sample* is one training sequence; a *target* is one position with a loss (prefix mode: one per "
        "sample; sequence mode: every real position).  Both modes see the same (input, next item) pairs "
        "(sequence mode drops windows older than the last 50 items, as the SASRec / BASRec code does).",
        "",
        "Reproduce: `python benchmarks/speed.py " + " ".join(sys.argv[1:]) + "`",
        "",
    ]
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
