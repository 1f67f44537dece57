"""Several seeds per model: mean +- std, paired t-tests between models, a markdown table.

>>> runs = {m: run_seeds(m, "ml-100k", seeds=[2020, 2021, 2022]) for m in ("SASRec", "BASRecSASRec")}
>>> print(format_markdown_table(runs, metrics=["hit@10", "ndcg@10"], baseline="SASRec"))

Conventions:

* ``std`` is the sample standard deviation (``ddof=1``); 0 for a single seed.
* the paired t-test (:func:`scipy.stats.ttest_rel`) pairs the runs of two models by seed, so both
  must have run on the same seeds; it is two-sided and reports ``t`` and ``p``.  Identical
  samples give ``t = p = NaN`` (scipy's convention), never an exception.
"""
import math
from collections import OrderedDict

import numpy as np

__all__ = [
    "run_seeds",
    "metric_values",
    "mean_std",
    "summarize",
    "paired_ttest",
    "compare",
    "format_markdown_table",
]


def run_seeds(run, dataset=None, seeds=(2020, 2021, 2022), config_file_list=None, config_dict=None, **kwargs):
    """Run one model once per seed.

    Args:
        run: either a callable ``run(seed) -> dict`` (a metric dict, or a result dict with
            ``test_result``), or a model name; for a model name each seed is a fresh
            :func:`recbole_sada.quick_start.run_recbole_sada` on ``dataset`` with ``seed`` set in
            ``config_dict`` (the same as ``run_recbole_sada.py --seed=S``).
        dataset (str): dataset name, for a model name.
        seeds (list[int]): the seeds, in order.
        config_file_list, config_dict, **kwargs: passed to ``run_recbole_sada``.

    Returns:
        OrderedDict: ``{seed: result}`` in seed order (each result as returned by ``run``).
    """
    if not callable(run):
        model = run
        if dataset is None:
            raise ValueError("run_seeds: a dataset is needed to run a model by name")

        def run(seed):
            from recbole_sada.quick_start import run_recbole_sada

            result = run_recbole_sada(
                model=model,
                dataset=dataset,
                config_file_list=config_file_list,
                config_dict={**(config_dict or {}), "seed": int(seed)},
                **kwargs,
            )
            result.pop("trainer", None)  # drop the model and optimizer between seeds
            return result

    seeds = list(seeds)
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"run_seeds: duplicate seeds in {seeds}")
    return OrderedDict((seed, run(seed)) for seed in seeds)


def _metrics_of(result, key="test_result"):
    if isinstance(result, dict) and key in result:
        return result[key]
    return result


def metric_values(runs, metric, key="test_result"):
    """The values of one metric over the runs (``{seed: result}`` or a list of results)."""
    results = runs.values() if isinstance(runs, dict) else runs
    return np.array([float(_metrics_of(r, key)[metric]) for r in results])


def mean_std(values):
    """``(mean, sample std)`` of a sequence of numbers (std 0 for one value)."""
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        raise ValueError("mean_std of no values")
    std = float(values.std(ddof=1)) if values.size > 1 else 0.0
    return float(values.mean()), std


def summarize(runs, metrics=None, key="test_result"):
    """``{metric: (mean, std)}`` over the runs; ``metrics`` defaults to all of the first run's."""
    results = list(runs.values() if isinstance(runs, dict) else runs)
    metrics = metrics or list(_metrics_of(results[0], key))
    return OrderedDict((m, mean_std(metric_values(results, m, key))) for m in metrics)


def paired_ttest(a, b):
    """Two-sided paired t-test of ``a`` against ``b`` (same seeds, same order).

    Returns:
        (t, p): floats; NaN when the differences have no variance.
    """
    from scipy import stats

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired t-test needs the same number of runs, got {a.size} and {b.size}")
    if a.size < 2:
        return float("nan"), float("nan")
    diff = a - b
    if np.allclose(diff, diff[0], rtol=0.0, atol=0.0):
        return float("nan"), float("nan")
    res = stats.ttest_rel(a, b)
    return float(res.statistic), float(res.pvalue)


def _paired(runs_a, runs_b):
    """Align two ``{seed: result}`` dicts on their common seeds (lists are paired by position)."""
    if isinstance(runs_a, dict) and isinstance(runs_b, dict):
        if set(runs_a) != set(runs_b):
            raise ValueError(f"the two models ran on different seeds: {sorted(runs_a)} vs {sorted(runs_b)}")
        seeds = list(runs_a)
        return [runs_a[s] for s in seeds], [runs_b[s] for s in seeds]
    return list(runs_a.values() if isinstance(runs_a, dict) else runs_a), list(
        runs_b.values() if isinstance(runs_b, dict) else runs_b
    )


def compare(runs_a, runs_b, metrics=None, key="test_result"):
    """Model A against model B on each metric.

    Returns:
        OrderedDict: ``{metric: {"mean_a", "std_a", "mean_b", "std_b", "diff", "t", "p"}}``.
    """
    a, b = _paired(runs_a, runs_b)
    metrics = metrics or list(_metrics_of(a[0], key))
    out = OrderedDict()
    for m in metrics:
        va, vb = metric_values(a, m, key), metric_values(b, m, key)
        (mean_a, std_a), (mean_b, std_b) = mean_std(va), mean_std(vb)
        t, p = paired_ttest(va, vb)
        out[m] = {"mean_a": mean_a, "std_a": std_a, "mean_b": mean_b, "std_b": std_b,
                  "diff": mean_a - mean_b, "t": t, "p": p}
    return out


def _fmt_p(p):
    if p is None or math.isnan(p):
        return "-"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def format_markdown_table(runs_by_model, metrics=None, baseline=None, key="test_result", decimals=4):
    """Markdown table: one row per model, ``mean ± std`` per metric, and (with ``baseline``) the
    p-value of the paired t-test against the baseline in brackets, e.g. ``0.0712 ± 0.0031 (p=0.012)``.

    Args:
        runs_by_model (dict): ``{model name: {seed: result}}``.
        metrics (list[str]): columns; defaults to the first model's metrics.
        baseline (str | list[str]): model(s) every other model is tested against.
        key (str): which result to read from result dicts (``test_result`` or
            ``best_valid_result``).
    """
    if not runs_by_model:
        return ""
    first = next(iter(runs_by_model.values()))
    first_result = next(iter(first.values())) if isinstance(first, dict) else first[0]
    metrics = metrics or list(_metrics_of(first_result, key))
    baselines = [baseline] if isinstance(baseline, str) else list(baseline or [])
    for base in baselines:
        if base not in runs_by_model:
            raise ValueError(f"baseline '{base}' is not among the models {list(runs_by_model)}")
    n_seeds = {name: len(runs) for name, runs in runs_by_model.items()}
    header = ["model", "seeds"] + list(metrics)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * len(metrics)) + "|"]
    for name, runs in runs_by_model.items():
        cells = [name, str(n_seeds[name])]
        for m in metrics:
            mean, std = mean_std(metric_values(runs, m, key))
            cell = f"{mean:.{decimals}f} ± {std:.{decimals}f}"
            tests = []
            for base in baselines:
                if base == name:
                    continue
                _, p = paired_ttest(*[metric_values(r, m, key) for r in _paired(runs, runs_by_model[base])])
                tests.append(f"p={_fmt_p(p)}" + (f" vs {base}" if len(baselines) > 1 else ""))
            if tests:
                cell += " (" + ", ".join(tests) + ")"
            cells.append(cell)
        lines.append("| " + " | ".join(cells) + " |")
    if baselines:
        lines.append("")
        lines.append(f"mean ± sample std over seeds; p: two-sided paired t-test against {', '.join(baselines)} on the same seeds.")
    return "\n".join(lines)
