"""Run models on a dataset under the papers' protocol, several seeds, and write a results table.

    python benchmarks/run_table.py --dataset=ml-100k --models SASRec BASRecSASRec \
        --seeds 2020 2021 2022 --budget cpu --output results/ml-100k.md --title "SASRec vs BASRec" \
        [--key=value ...]

Each (model, seed) runs in its own process, so peak memory is that run's.  The table has HR/NDCG
@10/@20 as mean +- std over seeds, group metrics when the run reports them, the mean training
epoch time and peak memory with their ratio to the first model (the backbone) measured in the same
invocation, a paired t-test against the first model, the machine, the budget and the command.
A section with the same title in the output file is replaced; other sections are kept.
Finished runs are kept in ``log/benchmarks`` (with checkpoints) and in the committed
``results/runs/<dataset>/`` (results and settings only), keyed by the full configuration.
"""
import argparse
import ast
import contextlib
import hashlib
import json
import math
import os
import platform
import re
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from recbole_sada.evaluation.significance import mean_std, paired_ttest  # noqa: E402
from recbole_sada.fileio import atomic_path  # noqa: E402
sys.path.insert(0, str(ROOT))

BUDGETS = {
    # a few minutes on a laptop CPU: checks that everything runs, numbers are not meaningful
    "smoke": {"epochs": 2, "stage1_epochs": 1, "train_mode": "sequence", "stopping_step": 2},
    # a short CPU budget (tens of minutes for a 3-model x 3-seed table on ml-100k, 2 cores)
    "short": {"epochs": 30, "stage1_epochs": 10, "train_mode": "sequence", "stopping_step": 5},
    # the longest honest budget on a 2-core CPU for ml-100k-sized data
    "cpu": {"epochs": 100, "stage1_epochs": 20, "train_mode": "sequence", "stopping_step": 10},
    # the papers' protocol: train to convergence with early stopping on valid NDCG@10
    "full": {"epochs": 500, "stage1_epochs": 50, "train_mode": "sequence", "stopping_step": 20},
}
METRICS = ["hit@10", "ndcg@10", "hit@20", "ndcg@20"]
VALID_METRIC = "NDCG@10"  # the label of the valid curves (main() sets it from the run's valid_metric)


def parse_overrides(rest):
    out = {}
    for arg in rest:
        m = re.match(r"^--([^=]+)=(.*)$", arg)
        if not m:
            raise SystemExit(f"error: unrecognised argument {arg!r} (overrides are --key=value)")
        key, value = m.groups()
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            try:
                out[key] = ast.literal_eval(value)  # True / False / None as in RecBole's command line
            except (ValueError, SyntaxError):
                out[key] = value
    return out


def run_settings(budget, preset_path, overrides):
    """(preset, cfg): the settings of every run, lowest first: budget < preset yaml < --key=value."""
    preset = {}
    if preset_path:
        import yaml

        from recbole_sada.config import preset_file
        from recbole_sada.errors import InputError

        try:
            preset = yaml.safe_load(Path(preset_file(preset_path)).read_text()) or {}
        except InputError as err:
            raise SystemExit(f"error: --preset: {err}") from None
    return preset, {**BUDGETS[budget], **preset, **overrides}


def worker(model, dataset, config_dict, out_path, keep_checkpoint=None):
    """Run one model once and dump its results as json (called in a subprocess).

    The valid curve (epoch, valid score, seconds since training began) is recorded at every
    evaluation; ``keep_checkpoint`` is where the best checkpoint is copied (for ``--pretrain_from_first``).
    """
    import shutil

    from recbole_sada.quick_start import run_recbole_sada

    curve, start, loads, offset = [], time.time(), [], 0.0
    state = config_dict.get("resume_state")
    saved_curve = curve_path(state) if state else None
    if saved_curve and Path(state).is_file() and saved_curve.is_file():
        # a resumed run: the valid curve so far, its times continued from the last validation
        before = json.loads(saved_curve.read_text())
        curve, loads = before["curve"], before["loads"]
        offset = max([c[2] for c in curve], default=0.0)

    def on_valid(epoch_idx, valid_score):
        curve[:] = [c for c in curve if c[0] < epoch_idx]  # an epoch validated again after a resume
        curve.append([int(epoch_idx), float(valid_score), time.time() - start + offset])
        if hasattr(os, "getloadavg"):
            loads.append(os.getloadavg()[0])
        if saved_curve:
            with atomic_path(saved_curve, suffix=".json") as tmp:
                Path(tmp).write_text(json.dumps({"curve": curve, "loads": loads}))

    result = run_recbole_sada(model, dataset, config_dict=config_dict, callback_fn=on_valid)
    if keep_checkpoint:
        Path(keep_checkpoint).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(result["model_file"], keep_checkpoint)
    keep = {
        "test_result": dict(result["test_result"]),
        "best_valid_result": dict(result["best_valid_result"] or {}),
        "epoch_time": result["epoch_time"],
        "epochs_run": result["epochs_run"],
        "train_time": result["train_time"],
        "peak_memory_mb": result["peak_memory_mb"],
        "test_groups": result.get("test_groups"),
        "test_group_sets": result.get("test_group_sets") or {},
        "valid_curve": curve,
        "resumed_from": result.get("resumed_from"),
        # the machine's 1-minute load average at each evaluation: how busy the cores were while
        # this run's epoch time was measured (other runs of the table, or anything else)
        "load_average": sum(loads) / len(loads) if loads else None,
        "extra_tests": {mode: {"test_result": dict(v["test_result"]), "test_groups": v["test_groups"]}
                        for mode, v in (result.get("extra_tests") or {}).items()},
    }
    with atomic_path(out_path, suffix=".json") as tmp:
        Path(tmp).write_text(json.dumps(keep, default=float))


def curve_path(state):
    """The valid curve kept beside a run's ``resume_state`` (read back when the run resumes)."""
    return Path(str(state) + ".curve.json")


def split_variant(spec):
    """``"SADASASRec[use_fusion=False,relevance_mode=cosine01]"`` -> (model, {overrides})."""
    m = re.match(r"^([^\[]+)(?:\[(.*)\])?$", spec)
    model, inner = m.group(1), m.group(2)
    extra = parse_overrides([f"--{kv}" for kv in inner.split(",")]) if inner else {}
    return model, extra


# settings that change only what is reported, not what is trained or the metrics already reported:
# they stay out of the cache key, so a run made before one was set is still found (its result then
# lacks that report, and the table says which rows lack it)
REPORT_ONLY_KEYS = ("group_sets",)


def run_key(spec, dataset, seed, overrides, pretrained_from=None):
    model, extra = split_variant(spec)
    cfg = {**overrides, **extra, "seed": seed, "show_progress": False}
    ident = [model, dataset, {k: v for k, v in cfg.items() if k not in REPORT_ONLY_KEYS}]
    ident += [pretrained_from] if pretrained_from else []
    return model, cfg, hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:12]


def checkpoint_path(log_dir, model, dataset, seed, key):
    return Path(log_dir) / "checkpoints" / f"{model}-{dataset}-{seed}-{key}.pth"


def stored_path(store, model, dataset, seed, key):
    return Path(store) / dataset / f"{model}-{seed}-{key}.json" if store else None


def cached_result(spec, dataset, seed, overrides, log_dir, store=None, pretrained_from=None, need_checkpoint=False):
    """The finished result of one run, or None: from ``log_dir`` (with its checkpoint when
    ``need_checkpoint``) or else, when no checkpoint is needed, from the committed ``store``."""
    model, _, key = run_key(spec, dataset, seed, overrides, pretrained_from)
    local = Path(log_dir) / f"{model}-{dataset}-{seed}-{key}.json"
    ckpt = checkpoint_path(log_dir, model, dataset, seed, key)
    candidates = [local] if need_checkpoint else [local, stored_path(store, model, dataset, seed, key)]
    for path in candidates:
        if path is not None and path.is_file() and (not need_checkpoint or ckpt.is_file()):
            data = json.loads(path.read_text())
            data["key"] = key
            return data
    return None


def run_one(spec, dataset, seed, overrides, log_dir, keep_checkpoint=False, pretrained=None, store=None):
    """Run (or reuse the cached result of) one model on one seed; cache key = the full config.

    ``keep_checkpoint``: keep the best checkpoint next to the cached result.  ``pretrained``: the
    (key, checkpoint) of a backbone run this run starts from (stage 2 only, ``stage1_epochs: 0``).
    ``store``: a committed folder (``results/runs``) where every finished result is also written,
    with the settings that made it, so rows and seeds can be added later on another checkout.
    """
    model, cfg, key = run_key(spec, dataset, seed, overrides, pretrained[0] if pretrained else None)
    data = cached_result(spec, dataset, seed, overrides, log_dir, store, pretrained[0] if pretrained else None,
                         need_checkpoint=keep_checkpoint)
    if data is not None:
        return data
    # one process per run: a second table asking for a run another table is training waits for it
    # and then reads its result (two processes on one resume_state would each train it)
    with run_lock(Path(log_dir) / f"{model}-{dataset}-{seed}-{key}.lock", f"{spec} seed {seed}") as lock:
        return _run_one_locked(spec, dataset, seed, overrides, log_dir, keep_checkpoint, pretrained, store,
                               model, cfg, key, lock)


@contextlib.contextmanager
def run_lock(path, what):
    """An exclusive lock on ``path`` (``fcntl.flock``; released when every process holding the file
    ends, even by SIGKILL); waits, saying for whom, while another process holds it.  Yields the
    open file: a worker given its descriptor holds the lock too, so it stays taken while an
    orphaned worker still trains."""
    import fcntl

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "?"
            print(f"{what}: waiting for process {holder}, which is running it", flush=True)
            fcntl.flock(fh, fcntl.LOCK_EX)
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        yield fh


def _run_one_locked(spec, dataset, seed, overrides, log_dir, keep_checkpoint, pretrained, store, model, cfg, key, lock):
    data = cached_result(spec, dataset, seed, overrides, log_dir, store, pretrained[0] if pretrained else None,
                         need_checkpoint=keep_checkpoint)
    if data is not None:  # finished by the process this one waited for
        return data
    if pretrained:
        cfg = {**cfg, "pretrained_path": str(pretrained[1]), "stage1_epochs": 0}
    cached = Path(log_dir) / f"{model}-{dataset}-{seed}-{key}.json"
    ckpt = checkpoint_path(log_dir, model, dataset, seed, key) if keep_checkpoint else None
    # training state before every epoch: a run killed (end of a sitting, Ctrl-C) and started again
    # with the same command continues from its last finished epoch (PluginTrainer's resume_state)
    state = Path(log_dir) / f"{model}-{dataset}-{seed}-{key}.state.pth"
    cfg = {**cfg, "resume_state": str(state.resolve())}
    resuming = state.is_file()
    if resuming:
        print(f"{spec} seed {seed}: resuming from {state}", flush=True)
    # the worker's result; one left by a worker whose table process died is taken as it is
    out = Path(log_dir) / f"{model}-{dataset}-{seed}-{key}.out.json"
    cmd = [sys.executable, __file__, "--worker", model, dataset, json.dumps(cfg), str(out)] + ([str(ckpt)] if ckpt else [])
    log = Path(log_dir) / f"{model}-{dataset}-{seed}-{key}.log"
    start = time.time()
    if not out.is_file():
        with open(log, "a" if resuming else "w") as fh:
            proc = subprocess.run(cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, pass_fds=(lock.fileno(),))
        if proc.returncode != 0:
            tail = log.read_text()[-3000:]
            raise SystemExit(f"error: {model} seed {seed} failed (log {log}):\n{tail}")
    data = json.loads(out.read_text())
    out.unlink()
    data["wall"] = time.time() - start  # this process only when the run was resumed
    curve_path(state).unlink(missing_ok=True)
    for torn in state.parent.glob(f".{state.name}.*.tmp*"):  # a write cut short by the kill
        torn.unlink(missing_ok=True)
    cached.write_text(json.dumps(data))
    store_result(store, spec, dataset, seed, overrides, data, pretrained[0] if pretrained else None)
    data["key"] = key
    return data


def store_result(store, spec, dataset, seed, overrides, data, pretrained_from=None):
    """Write one finished result into the committed store, with what made it (no local paths)."""
    if not store:
        return None
    model, cfg, key = run_key(spec, dataset, seed, overrides, pretrained_from)
    path = stored_path(store, model, dataset, seed, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"spec": spec, "model": model, "dataset": dataset, "seed": seed, "config": cfg,
              "pretrained_from": pretrained_from, "machine": machine(),
              **{k: v for k, v in data.items() if k != "key"}}
    path.write_text(json.dumps(record, indent=1, default=float) + "\n")
    return path


def paired_p(a, b):
    """p of the paired t-test (:func:`recbole_sada.evaluation.significance.paired_ttest`), or None
    when it is undefined (one seed, or differences without variance)."""
    _, p = paired_ttest(a, b)
    return None if math.isnan(p) else p


def machine():
    try:
        import torch

        cpu = platform.processor() or platform.machine()
        dev = f"CUDA {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores, {cpu})"
        return f"{dev}, torch {torch.__version__}, Python {platform.python_version()}"
    except Exception:  # pragma: no cover
        return platform.platform()


LEVELS = [0.5, 0.75, 0.9, 1.0, 1.05]


def _first_reach(curve, level):
    for epoch, score, secs in curve:
        if score >= level:
            return epoch + 1, secs
    return None


def starts_from_first(model, models, pretrain_from_first=False, scratch=()):
    """True for a row that starts from the first row's weights: not the first row, not a
    ``--scratch_rows`` row, and not a model that reads the checkpoint only as an alignment target."""
    return pretrain_from_first and model != models[0] and model not in scratch and not alignment_model(model)


def time_to_quality(models, runs, pretrain_from_first=False, scratch=()):
    """Markdown table: epochs and training minutes until the valid score first reaches each level
    (a share of the first model's mean best valid score).  A row fine-tuned from the first model's
    checkpoint inherits the levels that checkpoint had already reached (at the backbone's epoch);
    a higher level counts the backbone's whole run (early stopping included) plus the fine-tuning
    epochs.  Rows trained from scratch (``scratch``, alignment models) count their own epochs only.
    None when a run has no valid curve."""
    if not all(r.get("valid_curve") for m in models for r in runs[m]):
        return None
    ref = np.mean([max(v for _, v, _ in r["valid_curve"]) for r in runs[models[0]]])
    lines = [f"Epochs / training minutes until valid {VALID_METRIC} first reaches a share of {models[0]}'s best "
             f"({ref:.4f}); mean over the seeds that reach it (how many in brackets)"
             + (f"; a fine-tuned row counts {models[0]}'s epochs and time before its own" if pretrain_from_first else "")
             + ":", "",
             "| model | " + " | ".join(f"{int(100 * lv)}% ({lv * ref:.4f})" for lv in LEVELS) + " |",
             "|---" * (len(LEVELS) + 1) + "|"]
    for model in models:
        cells = []
        tuned = starts_from_first(model, models, pretrain_from_first, scratch)
        for lv in LEVELS:
            hits = []
            for i, r in enumerate(runs[model]):
                hit = _first_reach(r["valid_curve"], lv * ref)
                if tuned:
                    base = runs[models[0]][i]
                    inherited = _first_reach(base["valid_curve"], lv * ref)
                    if inherited:
                        hit = inherited
                    elif hit:
                        hit = (base["epochs_run"] + hit[0], base["train_time"] + hit[1])
                if hit:
                    hits.append(hit)
            if hits:
                cells.append(f"{np.mean([h[0] for h in hits]):.0f} ep / {np.mean([h[1] for h in hits]) / 60:.1f} min"
                             f" ({len(hits)}/{len(runs[model])})")
            else:
                cells.append(f"not reached (0/{len(runs[model])})")
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, ax, path):
    """Legend, layout, write ``path`` (png) and close the figure; returns ``path``."""
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    _pyplot().close(fig)
    return path


def plot_curves(runs, models, path, pretrain_from_first=False, scratch=()):
    """Valid NDCG@10 per epoch (mean over seeds) for each model; rows after the first are drawn from
    the first model's epoch count when they start from its checkpoint."""
    if not all(r.get("valid_curve") for m in models for r in runs[m]):
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for model in models:
        n = min(len(r["valid_curve"]) for r in runs[model])
        scores = np.array([[c[1] for c in r["valid_curve"][:n]] for r in runs[model]], dtype=float)
        tuned = starts_from_first(model, models, pretrain_from_first, scratch)
        offset = np.mean([r.get("pretrained_epochs", 0) for r in runs[model]]) if tuned else 0
        epochs = np.array([c[0] for c in runs[model][0]["valid_curve"][:n]]) + 1 + offset
        ax.plot(epochs, scores.mean(0), label=model)
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"valid {VALID_METRIC}")
    return _save(fig, ax, path)


def ranking_protocol(settings):
    """One sentence: what the test metrics rank (full ranking or sampled negatives, history masked)."""
    mode = (settings.get("eval_args") or {}).get("mode", "full")
    if isinstance(mode, dict):
        mode = mode.get("test", "full")
    return "Ranking: " + describe_mode(mode, bool(settings.get("eval_mask_history", False)))


def describe_mode(mode, masked=False):
    """What a test ``mode`` ranks (the sentence of :func:`ranking_protocol` without its label)."""
    if str(mode) == "full":
        return "full ranking over all items" + ("; the user's input items are masked (score -inf)."
                                                if masked else "; the user's history items are scored too.")
    m = re.match(r"^(uni|pop)(\d+)$", str(mode))
    kind = {"uni": "uniformly", "pop": "by popularity"}.get(m.group(1), "") if m else ""
    n = m.group(2) if m else "?"
    return (f"sampled (`{mode}`): the test item against {n} negatives drawn {kind} by RecBole's sampler "
            "(for sequential data it excludes only the test item, so a history item can be a negative; LLM-ESR's "
            "code draws them outside the user's items); the scale of the LLMSeR / LLM-ESR tables, not "
            "comparable with full ranking.")


def alignment_model(spec):
    """True for a model that takes ``pretrained_path`` as an alignment target, not as its weights."""
    try:
        from recbole_sada.utils import get_model

        return bool(getattr(get_model(split_variant(spec)[0]), "pretrained_is_alignment_target", False))
    except Exception:  # a RecBole model or a name this checkout does not know
        return False


def load_note(runs):
    """``; load ...`` from the runs' recorded load averages (runs reused from the cache were timed
    under their own command's load, which ``jobs`` of this command does not describe)."""
    loads = [r["load_average"] for rs in runs.values() for r in rs if r and r.get("load_average") is not None]
    n = sum(1 for rs in runs.values() for r in rs if r)
    if not loads:
        return "; load while the runs were timed: not recorded" if n else ""
    missing = f", not recorded for {n - len(loads)} of {n} runs" if len(loads) < n else ""
    return f"; 1-min load average while the runs were timed {min(loads):.1f}-{max(loads):.1f}{missing}"


def render(title, dataset, models, seeds, runs, budget, overrides, command, jobs=1, pretrain_from_first=False, scratch=(),
           compare_to=None):
    """The markdown section of one table.  ``compare_to`` (a row of ``models``): the second p-value
    column and a per-group p list are against that row (an ablation against the full model)
    instead of the row above."""
    lines = [f"## {title}", ""]
    lines.append(f"Dataset `{dataset}`; seeds {seeds}; budget `{budget}` = {json.dumps(BUDGETS[budget])}; "
                 f"overrides {json.dumps(overrides) if overrides else 'none'}; loss `{overrides.get('loss_type', 'BCE')}`.")
    lines.append(ranking_protocol(overrides))
    second = f"`{compare_to}`" if compare_to else None
    lines.append(f"p-values: paired t-test on test NDCG@10 over seeds, against the first row and {second or 'the row above'}.")
    lines.append(f"Machine: {machine()}; {jobs} run(s) in parallel, torch threads {overrides.get('torch_threads', 'default')}"
                 f"{load_note(runs)}.")
    if pretrain_from_first:
        lines.append(f"Protocol: {models[0]} trains to early stopping; every other row loads {models[0]}'s best "
                     "checkpoint of the same seed and trains stage 2 only (`stage1_epochs: 0`), so its epochs and "
                     f"epoch time are stage-2 epochs on top of {models[0]}'s.")
        aligned = [m for m in models[1:] if alignment_model(m) and m not in scratch]
        if scratch:
            lines.append(f"Except {', '.join(f'`{m}`' for m in scratch)}: trained from scratch to early stopping "
                         "(`--scratch_rows`), the first row's checkpoint is not read.")
        if aligned:
            lines.append(f"Except {', '.join(f'`{m}`' for m in aligned)}: it reads only the item table of that checkpoint "
                         "(its alignment target, LLMEmb's RAT) and trains from scratch.")
    lines.append("")
    lines.append("| model | " + " | ".join(m.upper().replace("HIT", "HR") for m in METRICS)
                 + f" | p vs first | p vs {second or 'previous'} | epochs | epoch time (s) | x first | peak mem (MB) | x first |")
    lines.append("|---" * (len(METRICS) + 8) + "|")
    base = runs[models[0]]
    base_t = np.mean([r["epoch_time"] for r in base])
    base_m = np.mean([r["peak_memory_mb"] for r in base])
    for model in models:
        rs = runs[model]
        cells = []
        for m in METRICS:
            mu, sd = mean_std([r["test_result"][m] for r in rs])
            cells.append(f"{mu:.4f} ± {sd:.4f}")
        nd = [r["test_result"]["ndcg@10"] for r in rs]
        i = models.index(model)
        p = paired_p(nd, [r["test_result"]["ndcg@10"] for r in base]) if i > 0 else None
        ref = compare_to or (models[i - 1] if i > 1 else None)
        p_prev = paired_p(nd, [r["test_result"]["ndcg@10"] for r in runs[ref]]) if i and ref not in (None, model) else None
        t = np.mean([r["epoch_time"] for r in rs])
        mem = np.mean([r["peak_memory_mb"] for r in rs])
        ep = np.mean([r["epochs_run"] for r in rs])
        lines.append(f"| {model} | " + " | ".join(cells)
                     + f" | {'-' if p is None else f'{p:.3g}'} | {'-' if p_prev is None else f'{p_prev:.3g}'} | {ep:.0f} | {t:.2f} | {t / base_t:.2f} | {mem:.0f} | {mem / base_m:.2f} |")
    groups = [m for m in models if runs[m][0].get("test_groups")]
    if groups:
        lines += ["", "Test NDCG@10 by group (mean ± std over seeds; users by training length, test items by training popularity, head = top 20%):", ""]
        first = runs[groups[0]][0]["test_groups"]
        names = [g for g in first if first[g].get("n")]  # empty groups are left out
        lines.append("| model | " + " | ".join(f"{g} (n={first[g]['n']})" for g in names) + " |")
        lines.append("|---" * (len(names) + 1) + "|")
        for model in groups:
            cells = []
            for g in names:
                vals = [r["test_groups"][g]["ndcg@10"] for r in runs[model]]
                mu, sd = mean_std(vals)
                cells.append(f"{mu:.4f} ± {sd:.4f}")
            lines.append(f"| {model} | " + " | ".join(cells) + " |")
        tail = "items:tail"
        if tail in names:
            lines += ["", f"Paired t-test on tail-item NDCG@10 ({tail}) against the first model:", ""]
            base_tail = [r["test_groups"][tail]["ndcg@10"] for r in base]
            for model in models[1:]:
                p = paired_p([r["test_groups"][tail]["ndcg@10"] for r in runs[model]], base_tail)
                lines.append(f"- {model}: p = {'-' if p is None else f'{p:.3g}'}")
        if len(seeds) > 1:
            lines += ["", "Paired t-test on NDCG@10 per user group against the first model (p):", ""]
            for model in models[1:]:
                cells = []
                for g in names:
                    if g.startswith("users"):
                        p = paired_p([r["test_groups"][g]["ndcg@10"] for r in runs[model]],
                                     [r["test_groups"][g]["ndcg@10"] for r in base])
                        cells.append(f"{g} {'-' if p is None else f'{p:.3g}'}")
                lines.append(f"- {model}: " + "; ".join(cells))
        if compare_to and compare_to in groups:  # the relative differences say something with one seed too
            lines += ["", f"NDCG@10 per group against `{compare_to}` (relative difference of the means; paired t-test p):", ""]
            ref = runs[compare_to]
            for model in groups[1:]:
                if model == compare_to:
                    continue
                cells = []
                for g in names:
                    a = [r["test_groups"][g]["ndcg@10"] for r in runs[model]]
                    b = [r["test_groups"][g]["ndcg@10"] for r in ref]
                    p = paired_p(a, b)
                    rel = f"{(np.mean(a) / np.mean(b) - 1) * 100:+.1f}%" if np.mean(b) > 0 else "n/a"
                    cells.append(f"{g} {rel} (p {'-' if p is None else f'{p:.3g}'})")
                lines.append(f"- {model}: " + "; ".join(cells))
    lines += group_set_tables(models, runs)
    lines += extra_mode_tables(models, runs)
    ttq = time_to_quality(models, runs, pretrain_from_first, scratch)
    if ttq:
        lines += ["", ttq]
    lines += ["", "Reproduce:", "", "```", command, "```", ""]
    return "\n".join(lines)


def group_set_tables(models, runs):
    """One table per ``group_sets`` definition found in the runs (e.g. LLM-ESR's long-tail groups)."""
    lines = []
    have = [m for m in models if runs[m][0].get("test_group_sets")]
    if not have:
        return lines
    for name, first in runs[have[0]][0]["test_group_sets"].items():
        have = [m for m in models if all(name in (r.get("test_group_sets") or {}) for r in runs[m])]
        if not have:  # no row has this definition at every seed
            continue
        names = [g for g in first if g != "all" and first[g].get("n")]
        lines += ["", f"Test NDCG@10 by group, definition `{name}` (`group_sets`; same ranks as above):", ""]
        lacking = [m for m in models if m not in have]
        if lacking:
            lines += [f"Not for {', '.join(f'`{m}`' for m in lacking)}: (some of) its runs were made before `group_sets` "
                      "was set and are reused as they are (`group_sets` is not part of the cache key).", ""]
        lines.append("| model | " + " | ".join(f"{g} (n={first[g]['n']})" for g in names) + " |")
        lines.append("|---" * (len(names) + 1) + "|")
        base = runs[have[0]]
        for model in have:
            cells = []
            for g in names:
                vals = [r["test_group_sets"][name][g]["ndcg@10"] for r in runs[model]]
                mu, sd = mean_std(vals)
                p = None if model == have[0] else paired_p(vals, [r["test_group_sets"][name][g]["ndcg@10"] for r in base])
                cells.append(f"{mu:.4f} ± {sd:.4f}" + ("" if p is None else f" (p={p:.2g})"))
            lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return lines


def extra_mode_tables(models, runs):
    """Lines of the second test passes (``extra_test_modes``, e.g. uni100) of the same checkpoints."""
    modes = [m for m in (runs[models[0]][0].get("extra_tests") or {})
             if all(m in (r.get("extra_tests") or {}) for model in models for r in runs[model])]
    lines = []
    for mode in modes:
        lines += ["", f"Same checkpoints, test in `{mode}` mode ({describe_mode(mode)})", ""]
        lines.append("| model | " + " | ".join(m.upper().replace("HIT", "HR") for m in METRICS) + " | p vs first |")
        lines.append("|---" * (len(METRICS) + 2) + "|")
        base = [r["extra_tests"][mode] for r in runs[models[0]]]
        for i, model in enumerate(models):
            rs = [r["extra_tests"][mode] for r in runs[model]]
            cells = [" ± ".join(f"{v:.4f}" for v in mean_std([r["test_result"][m] for r in rs])) for m in METRICS]
            p = paired_p([r["test_result"]["ndcg@10"] for r in rs], [r["test_result"]["ndcg@10"] for r in base]) if i else None
            lines.append(f"| {model} | " + " | ".join(cells) + f" | {'-' if p is None else f'{p:.3g}'} |")
        first = base[0].get("test_groups")
        if first:
            names = [g for g in first if first[g].get("n")]
            lines += ["", f"`{mode}` NDCG@10 by group (p vs first):", ""]
            lines.append("| model | " + " | ".join(f"{g} (n={first[g]['n']})" for g in names) + " |")
            lines.append("|---" * (len(names) + 1) + "|")
            for i, model in enumerate(models):
                rs = [r["extra_tests"][mode] for r in runs[model]]
                cells = []
                for g in names:
                    vals = [r["test_groups"][g]["ndcg@10"] for r in rs]
                    mu, sd = mean_std(vals)
                    p = paired_p(vals, [r["test_groups"][g]["ndcg@10"] for r in base]) if i else None
                    cells.append(f"{mu:.4f} ± {sd:.4f}" + ("" if p is None else f" (p={p:.2g})"))
                lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return lines


def plot_groups(runs, models, path):
    """Bar chart of test NDCG@10 per group (mean, std error bars) for each model; None if no groups."""
    first = runs[models[0]][0].get("test_groups")
    if not first:
        return None
    plt = _pyplot()
    names = [g for g in first if first[g].get("n")]
    width = 0.8 / len(models)
    fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(names), 3.6))
    for i, model in enumerate(models):
        vals = np.array([[r["test_groups"][g]["ndcg@10"] for g in names] for r in runs[model]], dtype=float)
        ax.bar(np.arange(len(names)) + i * width, vals.mean(0), width, yerr=vals.std(0), label=model, capsize=2)
    ax.set_xticks(np.arange(len(names)) + width * (len(models) - 1) / 2)
    ax.set_xticklabels([f"{g}\n(n={first[g]['n']})" for g in names], fontsize=8)
    ax.set_ylabel("test NDCG@10")
    return _save(fig, ax, path)


NOTES_BEGIN, NOTES_END = "<!-- notes -->", "<!-- end notes -->"


def write_section(path, title, text):
    """Write ``text`` as the section ``title`` of ``path`` (replacing that section, else appended).

    Hand-written prose between ``<!-- notes -->`` and ``<!-- end notes -->`` inside the old
    section is kept, right below the new section's heading: a rerun (another seed) re-renders the
    tables without losing what was written about them."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    begin, end = f"<!-- section: {title} -->", f"<!-- end: {title} -->"
    old = path.read_text() if path.exists() else ""
    if begin in old and end in old:
        section = old[old.index(begin): old.index(end)]
        if NOTES_BEGIN in section and NOTES_END in section:
            notes = section[section.index(NOTES_BEGIN): section.index(NOTES_END) + len(NOTES_END)]
            head, _, rest = text.partition("\n")
            text = f"{head}\n\n{notes}\n{rest}" if head.startswith("## ") else f"{notes}\n{text}"
    block = f"{begin}\n{text}\n{end}"
    if begin in old and end in old:
        new = old[: old.index(begin)] + block + old[old.index(end) + len(end):]
    else:
        new = (old.rstrip() + "\n\n" if old else "") + block + "\n"
    path.write_text(new)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--worker":
        worker(argv[1], argv[2], json.loads(argv[3]), argv[4], *argv[5:6])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--models", nargs="+", required=True,
                        help="the first one is the reference; a variant is written Model[key=value,key=value]")
    parser.add_argument("--seeds", nargs="+", type=int, default=[2020, 2021, 2022])
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="smoke")
    parser.add_argument("--output", default=None, help="markdown file (default results/<dataset>.md)")
    parser.add_argument("--title", default=None)
    parser.add_argument("--log_dir", default="log/benchmarks")
    parser.add_argument("--store", default="results/runs",
                        help="committed folder of finished results (one small json per run, with its settings): "
                             "a run found there is not repeated, so seeds and rows add up across checkouts; "
                             "'' turns it off")
    parser.add_argument("--jobs", type=int, default=1,
                        help="runs in parallel (each in its own process; use torch_threads=1 with jobs > 1)")
    parser.add_argument("--pretrain_from_first", action="store_true",
                        help="the first model is trained first; every other row starts stage 2 from its best "
                             "checkpoint of the same seed (the BASRec paper's protocol: augmentation fine-tunes a "
                             "trained backbone)")
    parser.add_argument("--scratch_rows", nargs="*", default=[], metavar="SPEC",
                        help="with --pretrain_from_first: rows (as written in --models) that train from scratch "
                             "instead (a baseline that is not a fine-tuning method, e.g. LLM-ESR)")
    parser.add_argument("--compare_to", default=None, metavar="SPEC",
                        help="a row of --models (not the first): the second p-value column and a per-group p list are "
                             "against it instead of the row above (e.g. ablations against the full model)")
    parser.add_argument("--preset", default=None,
                        help="a packaged preset by name (e.g. basrec_official) or a yaml of settings above the budget, "
                             "below --key=value and the variants' own keys; its values enter the cache key")
    args, rest = parser.parse_known_args(argv)
    overrides = parse_overrides(rest)
    preset, cfg = run_settings(args.budget, args.preset, overrides)
    global VALID_METRIC
    VALID_METRIC = cfg.get("valid_metric", "NDCG@10")
    Path(args.log_dir).mkdir(parents=True, exist_ok=True)
    jobs = [(model, seed) for model in args.models for seed in args.seeds]
    results = {}
    unknown = [m for m in args.scratch_rows if m not in args.models[1:]]
    if unknown or (args.scratch_rows and not args.pretrain_from_first):
        raise SystemExit(f"error: --scratch_rows names rows of --models after the first, with --pretrain_from_first; "
                         f"got {unknown or args.scratch_rows}")
    scratch = tuple(args.scratch_rows)
    if args.compare_to is not None and args.compare_to not in args.models[1:]:
        raise SystemExit(f"error: --compare_to names a row of --models after the first, got {args.compare_to!r}")
    fine_tuned = [m for m in args.models[1:] if m not in scratch]

    def backbone_key(seed):
        return run_key(args.models[0], args.dataset, seed, cfg)[2]

    def dependents_done(seed):
        return all(cached_result(m, args.dataset, seed, cfg, args.log_dir, args.store, backbone_key(seed))
                   for m in fine_tuned)

    def one(job):
        model, seed = job
        if args.pretrain_from_first and model in fine_tuned:
            key0 = backbone_key(seed)
            r = cached_result(model, args.dataset, seed, cfg, args.log_dir, args.store, key0)
            r0 = cached_result(args.models[0], args.dataset, seed, cfg, args.log_dir, args.store)
            if r is None or r0 is None:
                r0 = run_one(args.models[0], args.dataset, seed, cfg, args.log_dir, keep_checkpoint=True, store=args.store)
                m0 = split_variant(args.models[0])[0]
                pretrained = (key0, checkpoint_path(args.log_dir, m0, args.dataset, seed, key0))
                r = run_one(model, args.dataset, seed, cfg, args.log_dir, pretrained=pretrained, store=args.store)
            r["pretrained_epochs"] = r0["epochs_run"]
        else:
            # the backbone's checkpoint is needed only while a row fine-tuned from it is still to run
            need = args.pretrain_from_first and model == args.models[0] and not dependents_done(seed)
            r = run_one(model, args.dataset, seed, cfg, args.log_dir, keep_checkpoint=need, store=args.store)
        print(f"{model} seed {seed}: ndcg@10 {r['test_result']['ndcg@10']:.4f} hit@10 {r['test_result']['hit@10']:.4f} "
              f"({r['epochs_run']} epochs, {r['epoch_time']:.2f} s/epoch, {r['wall']:.0f} s)", flush=True)
        return job, r

    if args.pretrain_from_first:  # backbones first, so the dependent rows find their checkpoints
        first = [j for j in jobs if j[0] == args.models[0]]
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            for job, r in pool.map(one, first):
                results[job] = r
        jobs = [j for j in jobs if j[0] != args.models[0]]
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        for job, r in pool.map(one, jobs):
            results[job] = r
    runs = {model: [results[(model, seed)] for seed in args.seeds] for model in args.models}
    command = "python benchmarks/run_table.py " + shlex.join(argv)
    title = args.title or f"{' vs '.join(args.models)} ({args.budget})"
    text = render(title, args.dataset, args.models, args.seeds, runs, args.budget, {**preset, **overrides}, command, args.jobs,
                  pretrain_from_first=args.pretrain_from_first, scratch=scratch, compare_to=args.compare_to)
    output = Path(args.output or f"results/{args.dataset}.md")
    slug = re.sub(r"[^A-Za-z0-9]+", "-", title).strip("-").lower()
    png = plot_groups(runs, args.models, output.parent / f"{output.stem}-{slug}.png")
    if png:
        text = text.replace("\nReproduce:", f"\n![NDCG@10 by group]({png.name})\n\nReproduce:", 1)
    curves = plot_curves(runs, args.models, output.parent / f"{output.stem}-{slug}-valid.png", args.pretrain_from_first, scratch)
    if curves:
        text = text.replace("\nReproduce:", f"\n![valid {VALID_METRIC} per epoch]({curves.name})\n\nReproduce:", 1)
    write_section(output, title, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
