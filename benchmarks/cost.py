"""Training cost of BASRec<X> and SADA<X> relative to their backbone <X>, measured in one run.

    python benchmarks/cost.py [--dataset=ml-100k] [--backbones SASRec GRU4Rec FMLPRec NextItNet]
        [--steps=4] [--rounds=3] [--threads=1] [--output results/cost.md]
    python benchmarks/cost.py --dataset=beauty --preset properties/preset/basrec_official.yaml \
        --models SASRec 'LLMESRSASRec[distill_teacher=epoch]' ... [--title ...]

``--models``: time these specs (the first is the reference of the ratios) instead of each
backbone's BASRec / SADA variants; ``--preset``: a packaged preset by name (``basrec_official``)
or a yaml of settings under every model (its schedule keys do not matter here).

Time: every model is built in one process on the same prepared data (``train_mode: sequence``,
batch 256, BCE, stage 2 for the augmenting models) and the models take turns: each round runs
``--steps`` optimiser steps (``calculate_loss``, ``backward``, Adam) of every model in turn, so load
drift on a shared machine hits all of them alike; the step time is the median over rounds.
Memory: the bytes of distinct tensors autograd keeps for the backward pass of one step (the
activation memory that augmentation multiplies; parameters and data are the same for all models).
"""
import argparse
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from recbole_sada.quick_start import prepare  # noqa: E402
from recbole_sada.trainer import reduce_loss  # noqa: E402
from recbole_sada.utils import get_model  # noqa: E402

sys.path.insert(0, str(ROOT / "benchmarks"))
from run_table import run_settings, split_variant, write_section  # noqa: E402

VARIANTS = ["{b}", "BASRec{b}", "BASRec{b}[single_mode=sample]", "SADA{b}", "SADA{b}[single_mode=sample]"]
BASE_CONFIG = {"train_mode": "sequence", "train_batch_size": 256, "loss_type": "BCE", "stage1_epochs": 0,
               "show_progress": False, "seed": 2020}


def build(spec, dataset, threads, preset=None):
    model_name, extra = split_variant(spec)
    settings = {**BASE_CONFIG, **(preset or {}), **extra, "torch_threads": threads, "show_progress": False}
    config, _, train, _, _ = prepare(model_name, dataset, config_dict=settings)
    torch.manual_seed(2020)
    model = get_model(model_name)(config, train._dataset)
    model.train()
    model.train_stage = 2
    optim = torch.optim.Adam(model.parameters(), lr=config["learning_rate"])
    return model, optim, list(train)


def step(model, optim, batch):
    optim.zero_grad()
    loss = model.calculate_loss(batch)
    if isinstance(loss, dict):
        loss = sum(reduce_loss(v) for v in loss.values())
    loss.backward()
    optim.step()


def saved_for_backward_mb(model, batch):
    """MB of distinct tensors autograd keeps for the backward pass of one step (activations; the
    part of training memory that augmentation multiplies), counted by storage."""
    seen = {}

    def pack(t):
        try:
            storage = t.untyped_storage()
            seen[storage.data_ptr()] = storage.nbytes()
        except (RuntimeError, NotImplementedError):  # pragma: no cover - exotic tensors
            pass
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model.calculate_loss(batch)
        if isinstance(loss, dict):
            loss = sum(reduce_loss(v) for v in loss.values())
    loss.backward()
    model.zero_grad(set_to_none=True)
    return sum(seen.values()) / 2**20


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--backbones", nargs="+", default=["SASRec", "GRU4Rec", "FMLPRec", "NextItNet"])
    parser.add_argument("--steps", type=int, default=4, help="optimiser steps per model per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output", default="results/cost.md")
    parser.add_argument("--models", nargs="+", default=None,
                        help="time these specs (first = reference) instead of the backbones' variants")
    parser.add_argument("--preset", default=None,
                        help="a packaged preset by name (e.g. basrec_official) or a yaml of settings under every model")
    parser.add_argument("--title", default=None, help="section title (default: by dataset)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    preset, _ = run_settings("full", args.preset, {})
    preset = {k: v for k, v in preset.items() if k not in ("epochs", "valid_start_epoch", "stopping_step", "valid_metric")}

    rows = []
    groups = [("models", list(args.models))] if args.models else \
        [(b, [v.format(b=b) for v in VARIANTS]) for b in args.backbones]
    for backbone, specs in groups:
        built = {s: build(s, args.dataset, args.threads, preset) for s in specs}
        times = {s: [] for s in specs}
        for s in specs:  # warm-up step each
            step(built[s][0], built[s][1], built[s][2][0])
        for r in range(args.rounds):
            for s in specs:
                model, optim, batches = built[s]
                t0 = time.perf_counter()
                for i in range(args.steps):
                    step(model, optim, batches[i % len(batches)])
                times[s].append((time.perf_counter() - t0) / args.steps)
            print(f"{backbone} round {r + 1}/{args.rounds}: "
                  + ", ".join(f"{s} {times[s][-1]:.3f}s" for s in specs), flush=True)
        mems = {}
        for s in specs:
            torch.manual_seed(0)
            mems[s] = saved_for_backward_mb(built[s][0], built[s][2][0])
        del built
        base_t, base_m = np.median(times[specs[0]]), mems[specs[0]]
        for s in specs:
            t = float(np.median(times[s]))
            rows.append((s, t, t / base_t, mems[s], mems[s] / base_m if base_m > 0 else float("nan")))

    title = args.title or f"Training cost per step ({args.dataset})"
    loss = {**BASE_CONFIG, **preset}["loss_type"]
    lines = [f"## {title}", "",
             f"Dataset `{args.dataset}`, `train_mode: sequence`, batch 256, loss "
             f"`{loss}` (a row's own `loss_type` wins), stage 2"
             + (f", settings of `{args.preset}`" if args.preset else "") + "; median seconds per optimiser "
             f"step over {args.rounds} rounds of {args.steps} steps per model, the models of one backbone taking turns "
             f"in one process; activation memory = distinct tensors saved for backward in one step (first batch).",
             f"Machine: CPU ({os.cpu_count()} cores, {platform.machine()}), torch {torch.__version__}, "
             f"threads {args.threads}; 1-min load average at the end {os.getloadavg()[0]:.1f}.", "",
             f"| model | s / step | x {'first' if args.models else 'backbone'} | activation memory (MB) | "
             f"x {'first' if args.models else 'backbone'} |", "|---|---|---|---|---|"]
    for s, t, rt, m, rm in rows:
        lines.append(f"| {s} | {t:.3f} | {rt:.2f} | {m:.0f} | {rm:.2f} |")
    if not args.models:
        lines += ["", "`single_mode=sample`: each sequence gets one single-sequence operator (M-Reorder or M-Substitute) "
                  "per step, one augmented encoder pass instead of one per operator (the paper's `single_mode: all`)."]
    lines += ["", "Reproduce:", "", "```", "python benchmarks/cost.py " + shlex.join(argv), "```", ""]
    text = "\n".join(lines)
    write_section(Path(args.output), title, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
