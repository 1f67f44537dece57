"""Training and validation speed on Beauty: padded vs length-grouped encoding, side by side.

    python benchmarks/speed.py --dataset=beauty --threads=1                  # the table in results/speed.md
    python benchmarks/speed.py --dataset=beauty --threads=1 --overhead_sweep # the grouping rule's constant
    python benchmarks/speed.py --recbole_compare --dataset=ml-100k           # RecBole's SASRec vs the plugin's

Every model is timed in this one process under the same load, one full training epoch with
``grouped_encoding`` off and one with it on (same seed, same batches), then one full-ranking
validation pass each way (metrics must be identical); when ``../shared/anchors/basrec-official``
exists, the official BASRec code's epoch (its ``time_epoch.py``, same thread count) is timed in
the same run, so every figure is a ratio measured side by side.  The table also gives the
physical floor: the FLOPs one SASRec epoch needs on the real tokens vs. what was achieved.
"""
import argparse
import itertools
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from recbole.model.sequential_recommender.sasrec import SASRec as RecBoleSASRec  # noqa: E402
from recbole.trainer import Trainer  # noqa: E402

from recbole_sada.quick_start import prepare  # noqa: E402
from recbole_sada.trainer import PluginTrainer  # noqa: E402
from recbole_sada.utils import get_model  # noqa: E402

sys.path.insert(0, str(ROOT / "benchmarks"))
from run_table import split_variant, write_section  # noqa: E402


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


MODELS = ["SASRec", "GRU4Rec", "FMLPRec", "BASRecSASRec", "BASRecSASRec@basrec_official"]
PRESETS = ROOT / "properties" / "preset"
OFFICIAL = ROOT.parent / "shared" / "anchors" / "basrec-official" / "time_epoch.py"
BEAUTY_TXT = ROOT.parent / "shared" / "datasets" / "s3rec" / "Beauty.txt"


def build_model(name, dataset, train, extra):
    """Config + model for ``name`` (``Model@preset``: with ``properties/preset/<preset>.yaml``) on
    an already built dataset (``Model@preset[key=value,...]`` also takes keys; the data is shared by
    all models; timing keys override the preset)."""
    from recbole.utils import init_seed

    from recbole_sada.config import build_config

    name, variant = split_variant(name)
    name, _, preset = name.partition("@")
    files = [str(PRESETS / f"{preset}.yaml")] if preset else None
    config = build_config(name, dataset, config_file_list=files, config_dict={**variant, **extra})
    init_seed(config["seed"], True)
    return config, get_model(name)(config, train._dataset)


def time_epoch(config, model, train, n_batches=None):
    """Seconds of one training epoch through PluginTrainer (or of its first ``n_batches``)."""
    trainer = PluginTrainer(config, model)
    data = train
    if n_batches:
        class Subset(list):
            shuffle = False

        data = Subset(itertools.islice(iter(train), n_batches))
    torch.manual_seed(0)
    start = time.perf_counter()
    trainer._train_epoch(data, 0)
    return time.perf_counter() - start, trainer


def time_valid(trainer, valid):
    start = time.perf_counter()
    _, result = trainer._valid_epoch(valid)
    return time.perf_counter() - start, dict(result)


def official_epoch(threads):
    """The official BASRec code's epoch time (its own timing script), or None when absent."""
    if not OFFICIAL.exists() or not BEAUTY_TXT.exists():
        return None
    out = subprocess.run([sys.executable, str(OFFICIAL), "--threads", str(threads), "--data", str(BEAUTY_TXT)],
                         capture_output=True, text=True, check=False)
    for line in out.stdout.splitlines():
        if line.startswith("OFFICIAL_EPOCH_S"):
            return float(line.split()[1])
    print(out.stdout[-2000:], out.stderr[-2000:], file=sys.stderr)
    return None


def sasrec_epoch_flops(train, config):
    """FLOPs (forward + backward = 3x forward) of one SASRec epoch on the real tokens only."""
    D, inner, layers = config["hidden_size"], config["inner_size"], config["n_layers"]
    lens = train._dataset.inter_feat[config["ITEM_LIST_LENGTH_FIELD"]].double()
    tokens = float(lens.sum())
    context = float((lens * (lens + 1) / 2).sum())  # sum over positions of the causal context size
    macs = layers * (tokens * (4 * D * D + 2 * D * inner) + context * 2 * D) + tokens * 2 * D  # + BCE dots
    return 3 * 2 * macs, tokens


def grouped_table(args):
    common = {"show_progress": False, "state": "WARNING", "epochs": 1, "torch_threads": args.threads}
    config, data, train, valid, _ = prepare("SASRec", args.dataset, config_dict=common)
    models = args.models
    rows, floor = [], None
    for name in models:
        extra = dict(common, stage1_epochs=0)
        rec = {"model": name}
        for grouped in (False, True):
            cfg, model = build_model(name, args.dataset, train, dict(extra, grouped_encoding=grouped))
            seconds, trainer = time_epoch(cfg, model, train, args.batches)
            rec[f"train_{grouped}"] = seconds * (len(train) / args.batches if args.batches else 1)
            if not args.no_valid:
                rec[f"valid_{grouped}"], rec[f"metrics_{grouped}"] = time_valid(trainer, valid)
            print(name, "grouped" if grouped else "padded", {k: v for k, v in rec.items() if "metrics" not in k},
                  flush=True)
        if not args.no_valid:
            # the same trained weights evaluated both ways: metrics must be identical
            model.grouped_encoding = False
            _, rec["metrics_padded_same_weights"] = time_valid(trainer, valid)
            model.grouped_encoding = True
        if name == "SASRec" and "train_True" in rec:
            floor = sasrec_epoch_flops(train, cfg) + (rec["train_True"],)
        rows.append(rec)
    official = official_epoch(args.threads) if args.official else None
    return rows, official, floor, len(train)


def overhead_sweep(args):
    common = {"show_progress": False, "state": "WARNING", "epochs": 1, "torch_threads": args.threads}
    _, _, train, _, _ = prepare("SASRec", args.dataset, config_dict=common)
    n = args.batches or 20
    out = []
    for name in args.models:
        for overhead in args.overheads:
            extra = dict(common, stage1_epochs=0, grouped_encoding=overhead != "padded",
                         group_overhead=None if overhead in ("padded", "inf") else float(overhead))
            cfg, model = build_model(name, args.dataset, train, extra)
            time_epoch(cfg, model, train, 2)  # warm-up
            seconds, _ = time_epoch(cfg, model, train, n)
            out.append((name, overhead, seconds / n))
            print(out[-1], flush=True)
    return out, n


def write_md(path, title, lines):
    """The section ``title`` of ``path`` (replaced if present; other sections kept)."""
    write_section(path, title, f"## {title}\n\n" + "\n".join(lines).rstrip() + "\n")


def machine(threads):
    return (f"{os.cpu_count()} CPU cores ({platform.machine()}, {platform.processor() or 'cpu'}), "
            f"torch {torch.__version__}, {threads} torch thread(s)")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", default="beauty")
    parser.add_argument("--models", nargs="+", default=MODELS)
    parser.add_argument("--batches", type=int, default=None, help="time only the first N batches (default: whole epoch)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output", default="results/speed.md")
    parser.add_argument("--no_valid", action="store_true")
    parser.add_argument("--no_official", dest="official", action="store_false")
    parser.add_argument("--overhead_sweep", action="store_true")
    parser.add_argument("--overheads", nargs="+", default=["padded", "0", "16", "64", "256", "1024", "inf"])
    parser.add_argument("--recbole_compare", action="store_true")
    parser.add_argument("--title", default=None, help="section title of the table (default: by dataset)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    command = "python benchmarks/speed.py " + " ".join(sys.argv[1:])
    if args.recbole_compare:
        return recbole_compare(args)
    if args.overhead_sweep:
        out, n = overhead_sweep(args)
        base = {m: s for m, o, s in out if o == "padded"}
        lines = [f"Dataset `{args.dataset}`, batch 256, `train_mode: sequence`, BCE; mean seconds per training step "
                 f"over {n} steps after 2 warm-up steps, {machine(args.threads)}.  `padded` = `grouped_encoding: False`; "
                 "`inf` = one group trimmed to the batch's longest row.", "",
                 "| model | group_overhead | s / step | speed-up vs padded |", "|---|---|---|---|"]
        lines += [f"| {m} | {o} | {s:.4f} | {base.get(m, s) / s:.2f}x |" for m, o, s in out]
        lines += ["", f"Reproduce: `{command}`"]
        write_md(args.output, "Grouping rule: the cost of one more group", lines)
        print("\n".join(lines))
        return
    rows, official, floor, n_batches = grouped_table(args)
    lines = [f"Dataset `{args.dataset}` ({n_batches} batches of 256 users per epoch, `train_mode: sequence`, BCE, "
             f"the models' default settings; `@basrec_official` = `properties/preset/basrec_official.yaml`: 4 single views, "
             f"3 + 3 cross mixes, as the official code), {machine(args.threads)}.  One process: each model trains one "
             "epoch padded (`grouped_encoding: False`) and one length-grouped (same seed, same batches), "
             "then runs one full-ranking validation pass each way"
             + (f"; training epochs extrapolated from the first {args.batches} batches" if args.batches else "")
             + ".", "",
             "| model | train epoch padded (s) | grouped (s) | speed-up | valid pass padded (s) | grouped (s) | speed-up | valid metrics identical |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        same = "-"
        if "metrics_True" in r:
            same = "yes" if r["metrics_True"] == r["metrics_padded_same_weights"] else \
                f"no: {r['metrics_True']} vs {r['metrics_padded_same_weights']}"
        v = (f"{r['valid_False']:.1f} | {r['valid_True']:.1f} | {r['valid_False'] / r['valid_True']:.2f}x"
             if "valid_True" in r else "- | - | -")
        lines.append(f"| {r['model']} | {r['train_False']:.1f} | {r['train_True']:.1f} | "
                     f"{r['train_False'] / r['train_True']:.2f}x | {v} | {same} |")
    if official:
        lines.append(f"| official BASRec code (SASRec, Beauty README settings) | {official:.1f} | - | - | - | - | - | - |")
        for r in rows:
            if r["model"].startswith("BASRecSASRec"):
                lines += ["", f"{r['model']} grouped vs the official code, same threads, same run: "
                          f"{official / r['train_True']:.2f}x faster per epoch (padded: {official / r['train_False']:.2f}x)."]
    if floor:
        flops, tokens, seconds = floor
        lines += ["", f"Floor: one SASRec epoch holds {tokens:,.0f} real input tokens; forward + backward on them "
                  f"is {flops / 1e9:.1f} GFLOP (dense layers, causal attention, BCE dots; embeddings and "
                  f"optimizer not counted), so the grouped epoch runs at {flops / seconds / 1e9:.2f} GFLOP/s."]
    lines += ["", f"Reproduce: `{command}`"]
    write_md(args.output, args.title or f"Length-grouped encoding on {args.dataset}", lines)
    print("\n".join(lines))


def recbole_compare(args):
    """RecBole's SASRec vs the plugin's in both train modes (``--recbole_compare``)."""
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
            model, trainer_cls = get_model(model_name)(config, train._dataset), PluginTrainer
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
    write_md(args.output, "RecBole vs plugin SASRec", lines[2:])
    print("\n".join(lines))


if __name__ == "__main__":
    main()
