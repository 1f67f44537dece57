"""Hyper-parameter search with Ray Tune (2.6, ``Tuner`` API); ``run_hyper_sada.py`` is its CLI.

What a search does:

* **Data prepared once.**  The driver builds the config and the dataset / dataloaders once
  (:func:`recbole_sada.quick_start.prepare`); they reach every trial through
  ``tune.with_parameters`` (Ray's object store), so no trial parses the atomic files again.  Each
  trial builds its own config (search parameters above the user's ``--key=value`` overrides) and
  fresh dataloaders over the shared, already split datasets (batch sizes and ``seed`` may
  therefore be searched).  A trial whose config changes the **data** -- any RecBole dataset
  argument (``MAX_ITEM_LIST_LENGTH``, ``load_col``, filters, ...), ``eval_args``, ``repeatable``,
  the negative-sampling arguments or the plugin's ``train_mode``; see :data:`DATA_KEYS` -- cannot
  share it and prepares its own dataset from the files (the ``data`` column then says
  ``own (<the keys that differ>)`` instead of ``shared``).
* **One report per validation.**  ``trainer.fit``'s ``callback_fn`` reports the valid score of
  every epoch (``epoch`` counts stage-1 epochs too); the last one is reported together with the
  test result of the best checkpoint, so a trial's last report always carries its full result.
  ASHA (``--scheduler=asha``) stops weak trials at the rungs ``grace, 2*grace, ...`` (``grace`` =
  the first validated epoch, i.e. ``stage1_epochs + 1``), on the valid metric (``valid_metric``).
* **Failures are results.**  A trial that raises is marked ``error`` with its exception's last
  line; the search goes on (``FailureConfig(max_failures=0, fail_fast=False)``).
* **Outputs** in ``output_dir``: ``<model>-<dataset>.md`` and ``.csv`` (every trial: parameters,
  status, epochs, valid and test metrics, error; best first), ``<model>-<dataset>-best.yaml``
  (the best completed trial's parameters, the user's overrides and the seed: a config file that
  ``run_recbole_sada.py --config_files=...`` reruns), ``<model>-<dataset>.png`` (valid metric
  against each parameter).  Ray's experiment folder ``<ray_dir>/<model>-<dataset>/`` (default
  ``ray_results/``: trial logs and checkpoints, the search arguments, the trials ASHA stopped) is
  what ``--resume`` continues (``Tuner.restore``; unfinished trials start over, with the same
  arguments, which are checked).
* **Ray**: a private local instance (``ray.init(address="local", num_cpus=...)``) unless
  ``ray_address`` attaches to a running cluster (``auto`` or ``host:port``; the package and the
  data must then be reachable under the same paths on every node).

Reproducing a trial: the trial and ``run_recbole_sada.py`` build the model, loaders and trainer
the same way from the same seed; only the number of CPU threads may differ (Ray gives a trial
``cpus_per_trial`` threads), which can change the last digits of float sums.
"""
import csv
import json
import math
import os
import re
import shutil
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np
from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from recbole_sada.errors import InputError
from recbole_sada.tuning.space import grid_size, load_search_space, to_tune_space

__all__ = ["DATA_KEYS", "run_search", "init_ray", "data_signature", "write_reports", "trial_status"]

REPO_ROOT = Path(__file__).resolve().parents[2]

# Config keys that change the dataset or its split: a trial that changes one cannot share the data.
_EXTRA_DATA_KEYS = (
    "dataset", "data_path", "eval_args", "repeatable", "train_neg_sample_args",
    "valid_neg_sample_args", "test_neg_sample_args", "train_mode", "MODEL_TYPE", "MODEL_INPUT_TYPE",
)


def _data_keys():
    from recbole.utils.argument_list import dataset_arguments

    return tuple(dataset_arguments) + _EXTRA_DATA_KEYS


DATA_KEYS = _data_keys()
SCHEDULERS = ("asha", "none")
SEARCHES = ("random", "grid")


def data_signature(config):
    """The values of :data:`DATA_KEYS` in a config (two configs with equal signatures share data)."""
    return {key: config[key] for key in DATA_KEYS}


def _opt_override_keys(cmd_args):
    """Names of the ``--key=value`` overrides."""
    return [a[2:].split("=", 1)[0] for a in cmd_args]


# ----------------------------------------------------------------------------------------- trial
class _EpochReporter:
    """``callback_fn`` for ``trainer.fit``: reports each validation but the last one (which goes
    out with the test result).  Early stopping is followed with RecBole's own rule."""

    def __init__(self, config, report):
        from recbole.utils import early_stopping

        self._early_stopping = early_stopping
        self.report = report
        self.epochs = int(config["epochs"])
        self.eval_step = min(int(config["eval_step"] or 1), self.epochs)
        self.stopping_step = config["stopping_step"]
        self.bigger = config["valid_metric_bigger"]
        self.best = -np.inf if self.bigger else np.inf
        self.cur_step = 0
        self.last_epoch, self.last_score = 0, None

    def __call__(self, epoch_idx, valid_score):
        self.best, self.cur_step, stop, _ = self._early_stopping(
            valid_score, self.best, self.cur_step, max_step=self.stopping_step, bigger=self.bigger
        )
        self.last_epoch, self.last_score = epoch_idx + 1, float(valid_score)
        if stop or epoch_idx + self.eval_step >= self.epochs:
            return  # the last validation: reported with the test result
        self.report({"epoch": self.last_epoch, "valid_score": self.last_score, "best_valid_score": float(self.best)})


def _fresh_loaders(config, loaders):
    """New dataloaders of the same classes over the same split datasets, built with ``config``
    (batch sizes, seed, ...), as ``data_preparation`` builds them."""
    return [
        None if dl is None else type(dl)(config, dl._dataset, dl._sampler, shuffle=dl.shuffle)
        for dl in loaders
    ]


def run_trial(params, setup, shared):
    """One trial (runs in a Ray worker): build the config, train, validate per epoch, test."""
    from ray.air import session

    from recbole_sada.config import build_config
    from recbole_sada.data import create_dataset, data_preparation
    from recbole_sada.quick_start import run_recbole_sada

    os.chdir(setup["cwd"])  # relative paths (data_path, logs) as in the driver
    trial_dir = session.get_trial_dir()
    # each trial keeps its checkpoints in its own folder (concurrent trials would otherwise race
    # for the same <model>-<time>.pth name).  Command-line keys outrank config_dict in RecBole, so
    # these keys leave the overrides (the searched ones already did, in the driver).
    per_trial = {"checkpoint_dir": os.path.join(trial_dir, "saved"), "show_progress": False}
    cmd_args = [a for a in setup["cmd_args"] if _opt_override_keys([a])[0] not in per_trial]
    config_dict = {**{k: _plain(v) for k, v in params.items()}, **per_trial}
    # build_config sets torch_threads (otherwise Ray's cpus_per_trial threads)
    config = build_config(setup["model"], setup["dataset"], setup["config_files"], config_dict, cmd_args)
    signature = data_signature(config)
    changed = [k for k in DATA_KEYS if signature[k] != setup["data_signature"][k]]
    if not changed:
        data, *loaders = shared
        prepared = (config, data, *_fresh_loaders(config, loaders))
        data_source = "shared"
    else:
        data = create_dataset(config)
        prepared = (config, data, *data_preparation(config, data))
        data_source = f"own ({', '.join(changed)})"

    reporter = _EpochReporter(config, session.report)
    result = run_recbole_sada(prepared=prepared, saved=True, callback_fn=reporter)
    final = {
        "epoch": reporter.last_epoch or result["epochs_run"],
        "valid_score": reporter.last_score if reporter.last_score is not None else float("nan"),
        "best_valid_score": float(result["best_valid_score"]),
        "completed": True,
        "data": data_source,
        "epoch_time": result["epoch_time"],
    }
    final.update({f"valid_{k}": float(v) for k, v in (result["best_valid_result"] or {}).items()})
    final.update({f"test_{k}": float(v) for k, v in (result["test_result"] or {}).items()})
    session.report(final)


def _plain(value):
    """numpy scalars / arrays from Ray's samplers -> plain Python (for RecBole and yaml)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


# ----------------------------------------------------------------------------------------- rows
STATUSES = ("completed", "stopped", "unfinished", "error")
STOPPED_FILE = "scheduler_stopped.txt"
RECORD_FILE = "search_arguments.json"


def trial_status(metrics, error, stopped_by_scheduler=False):
    """``completed``, ``error``, ``stopped`` (by the scheduler) or ``unfinished`` (the search was
    interrupted before the trial ended: ``--resume`` runs it again) for a trial's last report."""
    if error is not None:
        return "error"
    if metrics.get("completed"):
        return "completed"
    return "stopped" if stopped_by_scheduler else "unfinished"


class RecordingASHA(ASHAScheduler):
    """ASHA that also appends the id of every trial it stops to ``stopped_file`` (kept in the
    experiment folder, so the record survives ``--resume``)."""

    def __init__(self, stopped_file, **kwargs):
        super().__init__(**kwargs)
        self.stopped_file = str(stopped_file)

    def on_trial_result(self, trial_runner, trial, result):
        action = super().on_trial_result(trial_runner, trial, result)
        if action == TrialScheduler.STOP and not result.get("completed"):
            with open(self.stopped_file, "a") as f:
                f.write(trial.trial_id + "\n")
        return action


def error_line(error):
    """The last meaningful line of a trial's exception (``ValueError: ...``)."""
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
    for line in reversed(lines):
        if not line.startswith(("File ", "^", "~")):
            return line[:300]
    return type(error).__name__


def _trial_id_from_path(path):
    """``run_trial_1a2b3_00001_1_...`` -> ``1a2b3_00001`` (Ray's trial id)."""
    match = re.search(r"_([0-9a-f]{5}_\d{5})(_|$)", Path(path or "").name)
    return match.group(1) if match else Path(path or "?").name


def collect_rows(result_grid, param_names, bigger, stopped_ids=()):
    """One dict per trial (best first) from a Ray ``ResultGrid``; ``stopped_ids``: the trials the
    scheduler stopped."""
    rows = []
    results = list(result_grid)
    # Ray's own trial records (status, id, config even before a first report), in the same order
    trials = getattr(getattr(result_grid, "_experiment_analysis", None), "trials", None)
    if trials is None or len(trials) != len(results):
        trials = [None] * len(results)
    for result, trial in zip(results, trials):
        metrics = dict(result.metrics or {})
        trial_id = metrics.get("trial_id") or getattr(trial, "trial_id", None) or _trial_id_from_path(result.path)
        status = trial_status(metrics, result.error, trial_id in stopped_ids)
        config = result.config or getattr(trial, "config", None) or {}
        row = OrderedDict()
        row["trial"] = trial_id
        row["status"] = status
        row["epochs"] = metrics.get("epoch")
        for name in param_names:
            row[name] = _plain(config.get(name))
        score = metrics.get("best_valid_score")
        row["valid_score"] = None if score is None or (isinstance(score, float) and math.isnan(score)) else score
        for key, value in metrics.items():
            if key.startswith(("valid_", "test_")) and key not in ("valid_score",):
                row[key] = value
        row["data"] = metrics.get("data")
        row["error"] = error_line(result.error) if result.error is not None else ""
        row["trial_dir"] = str(_shown(result.path))  # relative to the working folder when below it
        rows.append(row)

    status_rank = {status: i for i, status in enumerate(STATUSES)}

    def key(row):
        score = row["valid_score"]
        missing = score is None
        value = 0.0 if missing else (-score if bigger else score)
        return (status_rank[row["status"]], missing, value)

    rows.sort(key=key)
    return rows


# ----------------------------------------------------------------------------------------- reports
def _fmt(value):
    if value is None:
        return ""
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        return f"{value:.4f}" if abs(value) >= 1e-3 or value == 0 else f"{value:.3g}"
    return str(value)


def _fmt_param(value):
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def _columns(rows, param_names):
    metric_cols = []
    for row in rows:
        for key in row:
            if key.startswith(("valid_", "test_")) and key != "valid_score" and key not in metric_cols:
                metric_cols.append(key)
    valid_cols = [c for c in metric_cols if c.startswith("valid_")]
    test_cols = [c for c in metric_cols if c.startswith("test_")]
    return ["trial", "status", "epochs", *param_names, "valid_score", *valid_cols, *test_cols, "data", "error"]


def write_csv(path, rows, param_names):
    columns = _columns(rows, param_names) + ["trial_dir"]
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for row in rows:
            writer.writerow(["" if row.get(c) is None else row.get(c) for c in columns])


def write_markdown(path, rows, param_names, info):
    columns = _columns(rows, param_names)
    n = {s: sum(r["status"] == s for r in rows) for s in STATUSES}
    lines = [
        f"# Hyper-parameter search: {info['model']} on {info['dataset']}",
        "",
        f"- command: `{info['command']}`",
        f"- search space: `{info['params_file']}` ({info['search']} search), scheduler: {info['scheduler_desc']}",
        f"- valid metric: `{info['valid_metric']}` ({'higher' if info['bigger'] else 'lower'} is better); "
        f"`valid_score` is each trial's best validation value",
        f"- trials: {len(rows)} ({n['completed']} completed, {n['stopped']} stopped early by the scheduler, "
        f"{n['error']} failed" + (f", {n['unfinished']} unfinished: the search was interrupted, "
                                  f"continue it with --resume" if n["unfinished"] else "") + ")",
        f"- best config: `{info['best_yaml'] or '-'}`; plot: `{info['plot'] or '-'}`",
        f"- seed {info['seed']}, {info['epochs']} epochs per trial, data prepared once in the driver "
        f"(trials marked `own` changed the data and prepared their own)",
        "",
        "| rank | " + " | ".join(columns) + " |",
        "|" + "---|" * (len(columns) + 1),
    ]
    for rank, row in enumerate(rows, start=1):
        cells = [
            (_fmt_param(row.get(c)) if c in param_names else _fmt(row.get(c))).replace("|", "\\|")
            for c in columns
        ]
        lines.append(f"| {rank} | " + " | ".join(cells) + " |")
    Path(path).write_text("\n".join(lines) + "\n")


def rerun_command(info, yaml_path):
    """The command that reruns the best trial: the search's own config files, then the best
    yaml, and the search's epoch budget (kept out of the yaml, so the yaml also serves a full-
    length run)."""
    files = [*map(str, info["config_files"]), str(_shown(yaml_path))]
    shown = files[0] if len(files) == 1 else '"' + " ".join(files) + '"'
    return (f"python run_recbole_sada.py --model={info['model']} --dataset={info['dataset']} "
            f"--config_files={shown} --epochs={info['epochs']}")


def write_best_yaml(path, best, param_names, info):
    import yaml

    values = OrderedDict()
    for key, value in info["fixed"].items():
        if key == "epochs":  # the search budget: on the rerun line, not pinned in the yaml
            continue
        values[key] = _plain(value)
    for name in param_names:
        values[name] = _plain(best[name])
    values["seed"] = info["seed"]
    header = [
        f"# Best trial of the search {info['model']} on {info['dataset']} ({info['params_file']}):",
        f"# trial {best['trial']}, valid {info['valid_metric']} = {_fmt(best['valid_score'])} after {best['epochs']} epochs",
        f"# search command: {info['command']}",
    ]
    if info["config_files"]:
        header.append(f"# the search also used the config files: {' '.join(info['config_files'])}")
    header.append(f"# each trial ran at most {info['epochs']} epochs; the rerun of this trial:")
    header.append(f"# {rerun_command(info, path)}")
    body = yaml.safe_dump(dict(values), sort_keys=False, default_flow_style=False)
    Path(path).write_text("\n".join(header) + "\n" + body)


def write_plot(path, rows, params, info):
    """Valid metric of every trial against each searched parameter (one panel each)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    scored = [r for r in rows if r["valid_score"] is not None]
    n = len(params)
    cols = min(3, n)
    nrows = math.ceil(n / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.4 * nrows), squeeze=False)
    best = scored[0] if scored and scored[0]["status"] == "completed" else None
    styles = {"completed": ("o", "tab:blue", "completed"), "stopped": ("x", "tab:orange", "stopped early")}
    for ax, p in zip(axes.flat, params):
        numeric = p.kind != "choice" or all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in p.values
        )
        if numeric:
            position = lambda v: float(v)  # noqa: E731
        else:
            labels = [str(v) for v in p.values]
            position = lambda v: labels.index(str(v)) if str(v) in labels else -1  # noqa: E731
            ax.set_xticks(range(len(labels)))
            ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=8)
        for status, (marker, color, label) in styles.items():
            pts = [(position(r[p.name]), r["valid_score"]) for r in scored if r["status"] == status]
            if pts:
                xs, ys = zip(*pts)
                ax.scatter(xs, ys, marker=marker, color=color, label=label)
        if best is not None:
            ax.scatter([position(best[p.name])], [best["valid_score"]], marker="*", s=220,
                       facecolors="none", edgecolors="red", label="best")
        choices = [float(v) for v in p.values] if numeric and p.kind == "choice" else []
        log_x = p.log_scale or bool(choices and min(choices) > 0 and max(choices) / min(choices) >= 100)
        if log_x:
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())
            if not choices:
                ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
                ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        if choices:
            ax.set_xticks(sorted(choices))
            ax.set_xticklabels([f"{v:g}" for v in sorted(choices)], fontsize=8)
            if len(set(choices)) > 1:
                ax.set_xlim(*_padded((min(choices), max(choices)), log_x))
        elif not p.kind == "choice":
            ax.set_xlim(*_padded(p.bounds(), p.log_scale))
        ax.set_xlabel(p.name)
        ax.set_ylabel(f"valid {info['valid_metric']}")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    if axes.flat[0].get_legend_handles_labels()[0]:
        axes.flat[0].legend(fontsize=8)
    n_err = sum(r["status"] == "error" for r in rows)
    fig.suptitle(
        f"{info['model']} on {info['dataset']}: {len(scored)} scored trials"
        + (f" ({n_err} failed, not shown)" if n_err else ""),
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _shown(path):
    """A path relative to the working directory when it lies below it."""
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


def _padded(bounds, log_scale, margin=0.05):
    low, high = bounds
    if log_scale:
        span = math.log(high) - math.log(low)
        return math.exp(math.log(low) - margin * span), math.exp(math.log(high) + margin * span)
    span = high - low
    return low - margin * span, high + margin * span


def write_reports(output_dir, rows, params, info):
    """Write the .md, .csv, best .yaml and .png of a finished search; returns their paths."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{info['model']}-{info['dataset']}"
    names = [p.name for p in params]
    paths = {
        "md": output_dir / f"{stem}.md",
        "csv": output_dir / f"{stem}.csv",
        "yaml": output_dir / f"{stem}-best.yaml",
        "png": output_dir / f"{stem}.png",
    }
    best = next((r for r in rows if r["status"] == "completed" and r["valid_score"] is not None), None)
    if best is not None:
        write_best_yaml(paths["yaml"], best, names, info)
    else:
        paths["yaml"].unlink(missing_ok=True)
        paths["yaml"] = None
    if any(r["valid_score"] is not None for r in rows):
        write_plot(paths["png"], rows, params, info)
    else:
        paths["png"].unlink(missing_ok=True)
        paths["png"] = None
    info = {**info, "best_yaml": paths["yaml"] and paths["yaml"].name, "plot": paths["png"] and paths["png"].name}
    write_csv(paths["csv"], rows, names)
    write_markdown(paths["md"], rows, names, info)
    return paths, best


# ----------------------------------------------------------------------------------------- driver
def _check_args(num_samples, epochs, cpus_per_trial, gpus_per_trial, max_concurrent, search, scheduler):
    if search not in SEARCHES:
        raise InputError(f"--search must be one of {', '.join(SEARCHES)}, got '{search}'")
    if scheduler not in SCHEDULERS:
        raise InputError(f"--scheduler must be one of {', '.join(SCHEDULERS)}, got '{scheduler}'")
    for name, value, low in (
        ("--num_samples", num_samples, 1), ("--epochs", epochs, 1), ("--max_concurrent", max_concurrent, 1)
    ):
        if value is not None and value < low:
            raise InputError(f"{name} must be at least {low}, got {value}")
    if cpus_per_trial <= 0 or gpus_per_trial < 0:
        raise InputError(
            f"--cpus_per_trial must be > 0 and --gpus_per_trial >= 0, got {cpus_per_trial}, {gpus_per_trial}"
        )


def init_ray(ray_address=None, num_cpus=2, num_gpus=None, verbose=1):
    """Start a private local Ray (``address="local"``: never an unrelated running cluster) or
    attach to ``ray_address``; workers can import this package from the source tree."""
    import ray

    pythonpath = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)
    runtime_env = {"env_vars": {"PYTHONPATH": pythonpath}}
    kwargs = dict(runtime_env=runtime_env, include_dashboard=False, log_to_driver=verbose > 0,
                  logging_level="warning" if verbose <= 1 else "info")
    if ray_address:
        return ray.init(address=ray_address, **kwargs)
    return ray.init(address="local", num_cpus=num_cpus, num_gpus=num_gpus, **kwargs)


def run_search(
    model,
    dataset,
    params_file,
    config_file_list=None,
    cmd_args=(),
    num_samples=None,
    epochs=None,
    cpus_per_trial=1,
    gpus_per_trial=0,
    max_concurrent=2,
    ray_address=None,
    resume=False,
    search="random",
    scheduler="asha",
    output_dir="results/hyper",
    ray_dir="ray_results",
    verbose=1,
    command=None,
):
    """Run (or ``resume``) a search and write its reports; see the module docstring.

    Args:
        model, dataset (str): as for ``run_recbole_sada.py``.
        params_file (str): ``.hyper`` or yaml search space (:mod:`recbole_sada.tuning.space`).
        config_file_list (list[str]): user yaml files, as ``--config_files``.
        cmd_args (list[str]): fixed ``--key=value`` overrides (a searched key overrides them).
        num_samples (int): random search: trials (default 4); grid: repeats of the grid (default 1).
        epochs (int): epochs per trial (ASHA's ``max_t``); default: the config's ``epochs``.
        cpus_per_trial, gpus_per_trial (float): Ray resources of one trial.
        max_concurrent (int): trials running at once; a local Ray gets
            ``max_concurrent * cpus_per_trial`` CPUs.
        ray_address (str): attach to this Ray cluster instead of starting a local one.
        resume (bool): continue the interrupted search in ``output_dir/ray/<model>-<dataset>``.
        search (str): ``random`` or ``grid``; scheduler (str): ``asha`` or ``none``.
        output_dir (str): where the reports go; ray_dir (str): Ray's experiment folders.

    Returns:
        dict: ``rows`` (one per trial, best first), ``best`` (row or None), ``paths``
        (md / csv / yaml / png), ``experiment_path``.

    Raises:
        InputError: bad arguments, params file, model or dataset (before Ray starts).
    """
    from recbole_sada.config import build_config
    from recbole_sada.quick_start import prepare
    from recbole_sada.utils import get_model

    _check_args(num_samples, epochs, cpus_per_trial, gpus_per_trial, max_concurrent, search, scheduler)
    params = load_search_space(params_file)
    get_model(model)  # unknown model: one-line error before anything else
    cmd_args = list(cmd_args)
    bad = [a for a in cmd_args if not (a.startswith("--") and "=" in a)]
    if bad:
        raise InputError(f"unrecognised arguments {bad}: overrides are written --key=value")
    given = {}
    for a in cmd_args:
        key, value = a[2:].split("=", 1)
        if given.setdefault(key, value) != value:
            raise InputError(f"--{key} is given twice with different values ({given[key]}, {value})")
    if epochs is not None:
        cmd_args = [a for a in cmd_args if not a.startswith("--epochs=")] + [f"--epochs={epochs}"]
    searched = {p.name for p in params}
    shadowed = [k for k in _opt_override_keys(cmd_args) if k in searched]
    if shadowed:
        print(f"note: {', '.join(shadowed)} given on the command line and searched: the searched values are used")
    trial_cmd_args = [a for a in cmd_args if _opt_override_keys([a])[0] not in searched]

    prepared = prepare(model, dataset, config_file_list, None, trial_cmd_args)
    config = prepared[0]
    for p in params:
        if p.name not in config.final_config_dict:
            raise InputError(
                f"{p.source}: '{p.name}' is not a config key of {model} (no yaml layer defines it; check the spelling)"
            )
    data_params = [p.name for p in params if p.name in DATA_KEYS]
    if data_params:
        print(f"note: {', '.join(data_params)} change the data: trials with other values prepare their own dataset")

    epochs = int(config["epochs"])
    bigger = bool(config["valid_metric_bigger"])
    seed = config["seed"]
    if num_samples is None:
        num_samples = 1 if search == "grid" else 4
    name = f"{model}-{dataset}"
    output_dir = Path(output_dir).resolve()
    storage = Path(ray_dir).resolve()
    experiment_path = storage / name
    override_keys = _opt_override_keys(trial_cmd_args)
    info = {
        "model": model,
        "dataset": dataset,
        "params_file": str(params_file),
        "search": search,
        "valid_metric": config["valid_metric"].lower(),
        "bigger": bigger,
        "seed": seed,
        "epochs": epochs,
        "config_files": list(config_file_list or []),
        # the overrides as RecBole parsed them (config[...] may hold derived values, e.g. data_path)
        "fixed": OrderedDict((k, config.cmd_config_dict[k]) for k in override_keys if k in config.cmd_config_dict),
        "command": command or f"run_search({model!r}, {dataset!r}, {str(params_file)!r})",
    }

    import ray
    from ray import air, tune
    from ray.tune.schedulers import FIFOScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator

    from ray.tune import Tuner

    record = {
        "model": model, "dataset": dataset, "config_files": list(config_file_list or []),
        "overrides": trial_cmd_args, "search": search, "scheduler": scheduler, "num_samples": num_samples,
        "space": [[p.name, p.kind, _plain(p.values)] for p in params],
    }
    record_file = experiment_path / RECORD_FILE
    if resume:
        if not Tuner.can_restore(str(experiment_path)):
            raise InputError(f"--resume: no search to continue in {experiment_path} (run without --resume first)")
        if record_file.is_file():
            before = json.loads(record_file.read_text())
            changed = [k for k in record if before.get(k) != json.loads(json.dumps(record[k]))]
            if changed:
                raise InputError(
                    f"--resume: {', '.join(changed)} differ from the interrupted search's "
                    f"(see {record_file}); resume it with the same arguments"
                )

    two_stage = config["two_stage"] is not False and not config["pretrained_path"]
    grace = min(epochs, (int(config["stage1_epochs"] or 0) if two_stage else 0) + 1)
    if scheduler == "asha":
        sched = RecordingASHA(experiment_path / STOPPED_FILE, time_attr="epoch", max_t=epochs,
                              grace_period=grace, reduction_factor=2)
        info["scheduler_desc"] = f"ASHA (max_t={epochs} epochs, grace period {grace}, reduction factor 2)"
    else:
        sched = FIFOScheduler()
        info["scheduler_desc"] = "none (every trial runs all its epochs)"

    trials = num_samples * (grid_size(params) if search == "grid" else 1)
    setup = {
        "model": model,
        "dataset": dataset,
        "config_files": list(config_file_list or []),
        "cmd_args": trial_cmd_args,
        "cwd": os.getcwd(),
        # from a config built as a trial builds its own (before any data is built from it)
        "data_signature": data_signature(build_config(model, dataset, config_file_list, None, trial_cmd_args)),
    }
    started_here = False
    if not ray.is_initialized():
        init_ray(ray_address, max(1, math.ceil(max_concurrent * cpus_per_trial)), gpus_per_trial * max_concurrent
                  if gpus_per_trial else None, verbose)
        started_here = True
    try:
        trainable = tune.with_resources(
            tune.with_parameters(run_trial, setup=setup, shared=tuple(prepared[1:])),
            {"cpu": cpus_per_trial, "gpu": gpus_per_trial},
        )
        if resume:
            print(f"resuming the search in {experiment_path}")
            tuner = Tuner.restore(str(experiment_path), trainable=trainable, resume_unfinished=True,
                                  resume_errored=False, restart_errored=False)
        else:
            if experiment_path.exists():
                shutil.rmtree(experiment_path)
            experiment_path.mkdir(parents=True)
            record_file.write_text(json.dumps(record, indent=1))
            tuner = Tuner(
                trainable,
                param_space=to_tune_space(params, search),
                tune_config=tune.TuneConfig(
                    metric="valid_score",
                    mode="max" if bigger else "min",
                    search_alg=BasicVariantGenerator(random_state=seed, max_concurrent=max_concurrent),
                    scheduler=sched,
                    num_samples=num_samples,
                    chdir_to_trial_dir=False,
                    reuse_actors=False,
                ),
                run_config=air.RunConfig(
                    name=name,
                    storage_path=str(storage),
                    failure_config=air.FailureConfig(max_failures=0, fail_fast=False),
                    verbose=verbose,
                ),
            )
            print(f"searching {trials} trials of {model} on {dataset} ({search}, {info['scheduler_desc']})")
        start = time.time()
        result_grid = tuner.fit()
        elapsed = time.time() - start
    finally:
        if started_here:
            ray.shutdown()

    stopped_file = experiment_path / STOPPED_FILE
    stopped_ids = set(stopped_file.read_text().split()) if stopped_file.is_file() else set()
    rows = collect_rows(result_grid, [p.name for p in params], bigger, stopped_ids)
    paths, best = write_reports(output_dir, rows, params, info)
    rerun = rerun_command(info, paths["yaml"]) if best is not None else None
    return {"rows": rows, "best": best, "paths": paths, "experiment_path": experiment_path, "seconds": elapsed,
            "rerun": rerun}
