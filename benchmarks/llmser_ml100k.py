"""LLMSeR on ml-100k: backbone vs LLMSeR<Backbone>, with pseudo items from the pipeline run
without an LLM (``--llm none``) and with the packaged SmolLM2 on a user sample, side by side.

    python benchmarks/llmser_ml100k.py [--backbones SASRec GRU4Rec BERT4Rec] [--seeds 2020 2021 2022]
        [--epochs 20] [--stopping_step 5] [--max_users 40] [--output results/llmser.md]

Steps (each cached under ``saved/llmser_bench/``, so a rerun only does what is missing):

1. the pipeline with ``--llm none`` -> ``ml-100k-none.aug``; then with ``--llm transformers
   --max_users=K`` -> ``ml-100k-smol.aug`` (it reuses the trained CCG/RCS of step 1).  Both use
   SASRec as CCG/RCS for every backbone: the paper allows any general sequential recommender
   there, and it halves the LLM time on a CPU.
2. every (model, variant, seed) trains in its own process (``train_mode: sequence``, early
   stopping on valid NDCG@10) and is tested on the best checkpoint; HR/NDCG@10/20 overall and per
   user group by training length: ``[0,4)``, ``[4,6)`` (both empty on ml-100k, every user has at
   least 18 training items), ``[6,Q)`` = the shortest ~20% (the tail users; ``Q`` is computed)
   and ``[Q,inf)``.  LLMSeR's ``tail_threshold`` is ``Q - 1``: the same users are its tail users.
3. ``results/llmser.md``: mean +- std over seeds, paired t-test (by seed) against the backbone,
   epoch time ratio, the pipeline cost per stage, the machine, the budget and the commands.
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WORK = ROOT / "saved" / "llmser_bench"
METRICS = ["hit@10", "ndcg@10", "hit@20", "ndcg@20"]
VARIANTS = {"backbone": None, "none": "ml-100k-none.aug", "smol": "ml-100k-smol.aug"}


def thread_env(threads):
    """Environment of the child processes: torch intra-op threads (1 is ~3x faster than 2 on a
    shared 2-core machine under load, measured here)."""
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ------------------------------------------------------------------------------------ pipeline
def run_pipeline_cli(variant, args):
    aug = WORK / VARIANTS[variant]
    if aug.is_file() and Path(str(aug) + ".json").is_file():
        log(f"pipeline {variant}: cached ({aug})")
        return
    cmd = [sys.executable, "-m", "recbole_sada.llmser", "--dataset=ml-100k", "--backbone=SASRec",
           f"--ccg_epochs={args.ccg_epochs}", f"--rcs_epochs={args.ccg_epochs}", "--llm_item_noun=movie",
           f"--aug_file={aug}", f"--n_pseudo={args.n_pseudo}", "--show_progress=False"]
    cmd += ["--llm", "none"] if variant == "none" else ["--llm", "transformers", f"--max_users={args.max_users}"]
    log("pipeline: " + " ".join(cmd[1:]))
    with open(WORK / f"pipeline-{variant}.log", "w") as fh:
        proc = subprocess.run(cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, env=thread_env(args.threads))
    if proc.returncode != 0:
        raise SystemExit(f"pipeline {variant} failed, see {WORK / f'pipeline-{variant}.log'}")


def tail_edge():
    """Q such that the users with training length < Q are the shortest ~20% (train split only)."""
    cached = WORK / "tail_edge.json"
    if cached.is_file():
        return json.loads(cached.read_text())
    from recbole_sada.config import build_config
    from recbole_sada.data import create_dataset
    from recbole_sada.data.dataset import training_sequences

    config = build_config("SASRec", "ml-100k", config_dict={"state": "ERROR"})
    train, _, _ = create_dataset(config).build()
    lengths = np.array([len(s) for s in training_sequences(train)[1]])
    q = int(np.quantile(lengths, 0.2))
    info = {"Q": q, "tail_users": int((lengths < q).sum()), "users": int(len(lengths)),
            "min_len": int(lengths.min()), "median_len": float(np.median(lengths)),
            "users_len_le_51": int((lengths <= 51).sum())}
    cached.write_text(json.dumps(info))
    return info


# ------------------------------------------------------------------------------------ runs
def worker(model, config_dict, out_path):
    from recbole_sada.quick_start import run_recbole_sada

    result = run_recbole_sada(model, "ml-100k", config_dict=config_dict)
    keep = {k: result[k] for k in ("epoch_time", "epochs_run", "train_time", "peak_memory_mb")}
    keep["test_result"] = dict(result["test_result"])
    keep["best_valid_result"] = dict(result["best_valid_result"] or {})
    keep["test_groups"] = result.get("test_groups")
    Path(out_path).write_text(json.dumps(keep, default=float))


def cost_worker(backbone, config_dict, out_path, epochs=3):
    """Training-epoch time of the backbone and of LLMSeR<backbone>, epochs interleaved in one
    process (so both see the same machine load); median per model."""
    from recbole_sada.quick_start import prepare
    from recbole_sada.trainer import PluginTrainer
    from recbole_sada.utils import get_model

    config, _, train_data, _, _ = prepare(f"LLMSeR{backbone}", "ml-100k", config_dict=config_dict)
    trainers = {name: PluginTrainer(config, get_model(model)(config, train_data._dataset))
                for name, model in (("backbone", backbone), ("llmser", f"LLMSeR{backbone}"))}
    times = {name: [] for name in trainers}
    for epoch in range(epochs):
        for name, trainer in trainers.items():
            start = time.time()
            trainer._train_epoch(train_data, epoch)
            times[name].append(time.time() - start)
    Path(out_path).write_text(json.dumps({name: float(np.median(t)) for name, t in times.items()}))


def measure_cost(backbone, args, tail_threshold):
    out = WORK / "runs" / f"cost-{backbone}.json"
    if out.is_file():
        return json.loads(out.read_text())
    out.parent.mkdir(parents=True, exist_ok=True)
    cfg = {"seed": 2020, "train_mode": "sequence", "train_batch_size": args.batch_size, "show_progress": False,
           "checkpoint_dir": str(WORK / "ckpt"), "aug_file": str(WORK / VARIANTS["none"]),
           "tail_threshold": tail_threshold, "beta": args.beta}
    cmd = [sys.executable, __file__, "--cost-worker", backbone, json.dumps(cfg), str(out)]
    with open(WORK / "runs" / f"cost-{backbone}.log", "w") as fh:
        proc = subprocess.run(cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, env=thread_env(args.threads))
    if proc.returncode != 0:
        log(f"cost {backbone} FAILED")
        return None
    result = json.loads(out.read_text())
    log(f"cost {backbone}: {result}")
    return result


def run_one(backbone, variant, seed, args, edges, tail_threshold):
    name = f"{backbone}-{variant}-{seed}"
    out = WORK / "runs" / f"{name}.json"
    if out.is_file():
        return json.loads(out.read_text())
    out.parent.mkdir(parents=True, exist_ok=True)
    model = backbone if variant == "backbone" else f"LLMSeR{backbone}"
    cfg = {"seed": seed, "train_mode": "sequence", "epochs": args.epochs, "stopping_step": args.stopping_step,
           "train_batch_size": args.batch_size, "show_progress": False, "user_group_edges": edges,
           "checkpoint_dir": str(WORK / "ckpt"), "state": "INFO"}
    if variant != "backbone":
        cfg.update(aug_file=str(WORK / VARIANTS[variant]), tail_threshold=tail_threshold, beta=args.beta)
    cmd = [sys.executable, __file__, "--worker", model, json.dumps(cfg), str(out)]
    start = time.time()
    with open(WORK / "runs" / f"{name}.log", "w") as fh:
        proc = subprocess.run(cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, env=thread_env(args.threads))
    if proc.returncode != 0:
        log(f"{name} FAILED (see {WORK / 'runs' / (name + '.log')})")
        return None
    result = json.loads(out.read_text())
    log(f"{name}: {time.time() - start:.0f}s, {result['epochs_run']} epochs, "
        f"test ndcg@10 {result['test_result']['ndcg@10']:.4f}")
    return result


# ------------------------------------------------------------------------------------ report
NOTES_MARKER = "<!-- observations: kept when the tables are regenerated -->"
DESIGN_NOTES = [
    "## How the pieces are built (choices where the paper leaves room)",
    "",
    "* **No leakage**: CCG and RCS train in memory on the train split of RecBole's leave-one-out split "
    "(`training_sequences`), in the dataset's own item ids; candidates come from the items of the train "
    "split minus the user's own training items (an item seen only in valid/test is never proposed, and the "
    "user's own valid/test items are not consulted). The RCS trains without each user's last "
    "training item (the ARV ground truth), so ARV is not a memorisation test.",
    "* **CCG** = the backbone trained on reversed training sequences (one sample per user, targets at every "
    "position, like `train_mode: sequence`), fixed epochs, no validation; its input at inference is the "
    "reversed sequence (last 50 items = the user's earliest 50). Pool = top-N.",
    "* **SNF**: prompt = task, the earliest `prompt_history` training items most recent first (S_rev's end), "
    "the numbered pool, the answer format. Bad answers (out of pool, duplicates, too few, none) get one "
    "repair turn; missing picks are filled with the pool items closest (MiniLM cosine) to the mean "
    "embedding of the shown history; every case is counted. Users outside `max_users` (and `--llm none`) "
    "get that semantic choice directly. Picks keep the pool order; the best-ranked one goes right before "
    "the first real item.",
    "* **ARV**: S_mask = pseudo items + training items without the last; the RCS gives top-H (excluding "
    "S_mask and the items absent from the train split); the LLM picks one (parse/repair as above, fallback RCS top-1); "
    "omega = cosine of the MiniLM embeddings of the picked and the masked item, clipped to [0, 1]. "
    "`--llm none`: pick = RCS top-1.",
    "* **Dual channel** (Eq. 8-9): alpha_u = beta * omega_u for users with more than `tail_threshold` "
    "training items, omega_u otherwise; loss = mean over targets of (1 - alpha_u) l(S_u) + mean over targets "
    "of alpha_u l(S~_u), both with the backbone's own loss (BCE, one sampled negative) and logged as "
    "`loss_orig` / `loss_aug`. S~_u = pseudo items + input, cut from the left to 50; in sequence mode the "
    "pseudo items predict the next pseudo item / the first real item. `use_weight: False` (w/o WD) = "
    "alpha_u = omega_u for all users (the weight-decay module removed, as in the paper's Table 2). "
    "Evaluation uses the original sequences.",
    "",
]
def fmt(values):
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    return f"{np.mean(values):.4f} ± {np.std(values, ddof=1) if len(values) > 1 else 0.0:.4f}"


def pvalue(a, b):
    from recbole_sada.evaluation.significance import paired_ttest

    if len(a) != len(b) or len(a) < 2:
        return "-"
    _, p = paired_ttest(a, b)
    return "-" if np.isnan(p) else f"{p:.3f}"


def group_value(run, group, metric):
    groups = run.get("test_groups") or {}
    return (groups.get(group) or {}).get(metric)


def write_report(args, results, info, pipeline_meta, wall, commands, costs):
    edges_label = {"all": "overall", f"users[6,{info['Q']})": f"tail: train length < {info['Q']} (shortest ~20%)",
                   f"users[{info['Q']},inf)": f"head: train length >= {info['Q']}"}
    lines = ["# LLMSeR on ml-100k (CPU budget)", ""]
    lines += [
        "Sun et al., *LLMSeR: Enhancing Sequential Recommendation via LLM-based Data Augmentation*: "
        "pseudo-prior items from a reverse-trained backbone filtered by an LLM (SIA), a reliability "
        "from masked-item reasoning (ARV), dual-channel training (Eq. 8-9).",
        "",
        f"Machine: {platform.machine()} CPU, {os.cpu_count()} cores shared with other jobs "
        f"(load average at start {wall['load_start']}, end {wall['load_end']}), torch CPU with "
        f"{args.threads} thread(s) per run (OMP_NUM_THREADS); no GPU. "
        f"Time: the {sum(len(v) for v in results.values())} training runs took {wall['runs'] / 60:.0f} min "
        f"(training with validation), the two pipeline runs {wall['pipelines'] / 60:.0f} min; the last invocation "
        f"of this script {wall['total'] / 60:.1f} min (cached steps are skipped).",
        "",
        f"Budget: train_mode sequence, BCE with one sampled negative, MAX_ITEM_LIST_LENGTH 50, "
        f"train_batch_size {args.batch_size}, lr 1e-3, at most {args.epochs} epochs, early stopping "
        f"after {args.stopping_step} epochs without valid NDCG@10 gain, test on the best checkpoint; "
        f"seeds {', '.join(map(str, args.seeds))}. LLMSeR: N 20, M {args.n_pseudo}, H 10, beta {args.beta}, "
        f"tail_threshold {info['Q'] - 1}; CCG/RCS = SASRec trained {args.ccg_epochs} epochs each. "
        "The numbers are far from converged protocol numbers; they compare the variants under one budget.",
        "",
        f"Users: {info['users']}; training lengths from {info['min_len']} (median {info['median_len']:.0f}), "
        f"so the paper's groups (0,4) and [4,6) are empty; the tail group is the {info['tail_users']} users "
        f"with fewer than {info['Q']} training items. Only users with at most 51 training items "
        f"({info['users_len_le_51']}) have room for pseudo items in a 50-item input; for the others the "
        "augmented channel equals the original one.",
        "",
    ]
    for backbone in args.backbones:
        lines += [f"## {backbone}", ""]
        for group in ("all", f"users[6,{info['Q']})", f"users[{info['Q']},inf)"):
            lines += [f"**{edges_label[group]}**", "",
                      "| model | " + " | ".join(m.replace("hit", "HR").replace("ndcg", "NDCG") for m in METRICS)
                      + " | p (NDCG@10 vs backbone) |",
                      "|---|" + "---|" * (len(METRICS) + 1)]
            base = [group_value(r, group, "ndcg@10") for r in results.get((backbone, "backbone"), [])]
            for variant in VARIANTS:
                runs = results.get((backbone, variant), [])
                if not runs:
                    continue
                label = {"backbone": backbone, "none": f"LLMSeR{backbone} (--llm none)",
                         "smol": f"LLMSeR{backbone} (SmolLM2, {args.max_users} users)"}[variant]
                cells = [fmt([group_value(r, group, m) for r in runs]) for m in METRICS]
                p = "" if variant == "backbone" else pvalue([group_value(r, group, "ndcg@10") for r in runs], base)
                n = group_value(runs[0], group, "n")
                lines.append(f"| {label} ({len(runs)} seeds, n={n}) | " + " | ".join(cells) + f" | {p} |")
            lines.append("")
        cost = costs.get(backbone)
        if cost:
            lines += [f"**cost, measured in one process** (training epochs of {backbone} and LLMSeR{backbone} "
                      f"interleaved, median of 3 each): {cost['backbone']:.2f} s vs {cost['llmser']:.2f} s per "
                      f"epoch, ratio **{cost['llmser'] / cost['backbone']:.2f}**.", ""]
        lines += ["**cost of the runs above** (each run at its own time: the machine's load changed between "
                  "runs, so these epoch times are not comparable across rows; use the ratio above)", "",
                  "| model | epoch time (s) | ratio | epochs run | peak memory (MB) |", "|---|---|---|---|---|"]
        base_t = [r["epoch_time"] for r in results.get((backbone, "backbone"), [])]
        for variant in VARIANTS:
            runs = results.get((backbone, variant), [])
            if not runs:
                continue
            t = [r["epoch_time"] for r in runs]
            ratio = f"{np.mean(t) / np.mean(base_t):.2f}" if base_t else "-"
            lines.append(f"| {variant} | {np.mean(t):.2f} | {ratio} | {np.mean([r['epochs_run'] for r in runs]):.1f} | "
                         f"{np.mean([r['peak_memory_mb'] for r in runs]):.0f} |")
        lines.append("")
    lines += ["## Pipeline (ml-100k, SASRec as CCG/RCS)", ""]
    for variant, meta in pipeline_meta.items():
        if not meta:
            continue
        lines += [f"**{variant}**: LLM `{meta['llm']}`, encoder `{meta['encoder']}`, LLM users {meta['llm_user_count']} "
                  f"of {meta['users']}, mean omega {meta['arv'].get('mean_omega')}, ARV pick = masked item for "
                  f"{meta['arv'].get('masked_item_hit_rate')} of the users.", "",
                  "| stage | seconds | LLM calls | cache hits | details |", "|---|---|---|---|---|"]
        summary = meta.get("summary", {})
        for stage in [st for st in ("data", "ccg", "snf", "rcs", "arv", "write", "total") if st in summary]:
            entry = summary[stage]
            details = ", ".join(f"{k}={v}" for k, v in entry.items()
                                if k not in ("seconds", "llm_requests", "llm_calls", "llm_cache_hits", "file"))
            lines.append(f"| {stage} | {entry.get('seconds', 0):.1f} | {entry.get('llm_calls', '-')} | "
                         f"{entry.get('llm_cache_hits', '-')} | {details} |")
        lines.append("")
    lines += ["## Commands", "", "```"] + commands + ["```", ""]
    lines += DESIGN_NOTES
    out = Path(args.output)
    kept = ""
    if out.is_file() and NOTES_MARKER in out.read_text():
        kept = out.read_text()[out.read_text().index(NOTES_MARKER):]  # hand-written observations survive
    out.write_text("\n".join(lines) + ("\n" + kept if kept else ""))
    log(f"wrote {args.output}")


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2], json.loads(sys.argv[3]), sys.argv[4])
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--cost-worker":
        cost_worker(sys.argv[2], json.loads(sys.argv[3]), sys.argv[4])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbones", nargs="+", default=["SASRec", "GRU4Rec", "BERT4Rec"])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[2020, 2021, 2022])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--stopping_step", type=int, default=5)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--ccg_epochs", type=int, default=20)
    parser.add_argument("--n_pseudo", type=int, default=3)
    parser.add_argument("--beta", type=float, default=0.5)
    parser.add_argument("--max_users", type=int, default=40)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each run (OMP_NUM_THREADS)")
    parser.add_argument("--output", default=str(ROOT / "results" / "llmser.md"))
    parser.add_argument("--report_only", action="store_true", help="write the report from cached runs")
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    start, load_start = time.time(), os.getloadavg()[0]
    if not args.report_only:
        for variant in args.variants:
            if variant != "backbone":
                run_pipeline_cli(variant, args)
    info = tail_edge()
    edges = [4, 6, info["Q"]]
    results = {}
    for seed in args.seeds:
        for backbone in args.backbones:
            for variant in args.variants:
                out = WORK / "runs" / f"{backbone}-{variant}-{seed}.json"
                if args.report_only:
                    r = json.loads(out.read_text()) if out.is_file() else None
                else:
                    r = run_one(backbone, variant, seed, args, edges, info["Q"] - 1)
                if r is not None:
                    results.setdefault((backbone, variant), []).append(r)
    costs = {}
    for backbone in args.backbones:
        out = WORK / "runs" / f"cost-{backbone}.json"
        if args.report_only:
            costs[backbone] = json.loads(out.read_text()) if out.is_file() else None
        else:
            costs[backbone] = measure_cost(backbone, args, info["Q"] - 1)
    pipeline_meta = {}
    for variant in ("none", "smol"):
        side = WORK / (VARIANTS[variant] + ".json")
        pipeline_meta[variant] = json.loads(side.read_text()) if side.is_file() else None
    wall = {"total": time.time() - start,
            "runs": sum(r["train_time"] for runs in results.values() for r in runs),
            "pipelines": sum(((m or {}).get("summary") or {}).get("total", {}).get("seconds", 0)
                             for m in pipeline_meta.values()), "load_start": f"{load_start:.1f}", "load_end": f"{os.getloadavg()[0]:.1f}"}
    commands = [
        "OMP_NUM_THREADS=1 python -m recbole_sada.llmser --dataset=ml-100k --backbone=SASRec --llm none --ccg_epochs="
        f"{args.ccg_epochs} --rcs_epochs={args.ccg_epochs} --n_pseudo={args.n_pseudo} --llm_item_noun=movie "
        "--aug_file=saved/llmser_bench/ml-100k-none.aug",
        "OMP_NUM_THREADS=1 python -m recbole_sada.llmser --dataset=ml-100k --backbone=SASRec --llm transformers "
        f"--max_users={args.max_users} --ccg_epochs={args.ccg_epochs} --rcs_epochs={args.ccg_epochs} "
        f"--n_pseudo={args.n_pseudo} --llm_item_noun=movie --aug_file=saved/llmser_bench/ml-100k-smol.aug",
        "python " + " ".join([str(Path(sys.argv[0]).relative_to(ROOT)) if Path(sys.argv[0]).is_absolute()
                              else sys.argv[0]] + sys.argv[1:]),
    ]
    write_report(args, results, info, pipeline_meta, wall, commands, costs)


if __name__ == "__main__":
    main()
