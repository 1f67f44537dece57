"""Hyper-parameter search: search-space files, bad input, and a real 2-trial Ray Tune search.

The search runs SASRec on a tiny synthetic dataset (40 users x 10 items) on a local Ray with 2
CPUs: a grid over ``n_heads`` in {1, 3} with ``hidden_size: 8``, so the second trial raises in
the model's constructor.  Checked: the failed trial is reported with its error and the search
completes; the md / csv / best yaml / png outputs; the best yaml reruns through
``run_recbole_sada.py`` to the same valid metric; ``--resume`` reopens the finished search.
"""
import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import write_tiny_dataset
from recbole_sada.errors import InputError
from recbole_sada.tuning.space import grid_size, load_search_space, to_tune_space

import run_hyper_sada


# ------------------------------------------------------------------------------------ space files
def _write(path, text):
    path.write_text(text)
    return path


def test_hyper_file_kinds_and_recbole_loguniform_convention(tmp_path):
    f = _write(tmp_path / "s.hyper", (
        "# comment line\n"
        "\n"
        "learning_rate loguniform -8,0   # natural-log exponents\n"
        "dropout uniform 0.1 0.5\n"
        "n_layers quniform 1,3,1\n"
        "hidden_size choice [32, 64]\n"
        "single_ops choice [['reorder'], ['reorder', 'substitute']]\n"
    ))
    params = {p.name: p for p in load_search_space(f)}
    assert params["learning_rate"].bounds() == pytest.approx((math.exp(-8), 1.0))
    assert params["dropout"].values == [0.1, 0.5]
    assert params["hidden_size"].values == [32, 64]
    assert params["single_ops"].values == [["reorder"], ["reorder", "substitute"]]
    assert params["learning_rate"].source.endswith("line 3")
    assert grid_size(params.values()) == 4

    space = to_tune_space(params.values(), "random")
    rng = np.random.default_rng(0)
    draws = [space["learning_rate"].sample(random_state=rng) for _ in range(200)]
    assert math.exp(-8) <= min(draws) and max(draws) <= 1.0
    assert min(draws) < 0.01  # log-uniform: small values are common
    layers = {space["n_layers"].sample(random_state=rng) for _ in range(50)}
    assert layers <= {1, 2, 3} and all(isinstance(v, int) for v in layers)
    grid = to_tune_space(params.values(), "grid")
    assert grid["hidden_size"] == {"grid_search": [32, 64]}


def test_yaml_space_uses_recbole_params_dict_layout(tmp_path):
    f = _write(tmp_path / "s.yaml", "choice:\n  n_heads: [1, 2]\nloguniform:\n  learning_rate: [-8, -4]\n")
    params = {p.name: p for p in load_search_space(f)}
    assert params["n_heads"].values == [1, 2]
    assert params["learning_rate"].bounds() == pytest.approx((math.exp(-8), math.exp(-4)))


@pytest.mark.parametrize(
    "text, message",
    [
        ("alpha choice [0.2, 0.4]\nrate_min between 0.1,0.3\n", "line 2: unknown kind 'between'"),
        ("alpha choice [0.2, 0.4\n", "line 1: choice values of 'alpha' must be a Python list"),
        ("alpha uniform 0.5,0.1\n", "line 1: uniform 'alpha' needs low < high"),
        ("alpha uniform 0.1\n", "line 1: expected 2 numbers"),
        ("\nalpha\n", "line 2: expected '<name> <kind> <values>'"),
        ("alpha choice [1]\nalpha choice [2]\n", "line 2: 'alpha' is already defined at"),
        ("# nothing\n", "no parameters to search"),
    ],
)
def test_bad_hyper_lines_name_the_line(tmp_path, text, message):
    f = _write(tmp_path / "bad.hyper", text)
    with pytest.raises(InputError) as err:
        load_search_space(f)
    assert message in str(err.value) and str(f) in str(err.value)


def test_shipped_search_spaces_parse():
    for name in ("sasrec", "basrec", "sada", "llmser"):
        params = {p.name: p for p in load_search_space(f"hyper/{name}.hyper")}
        assert params
    basrec = {p.name: p.values for p in load_search_space("hyper/basrec.hyper")}
    assert basrec == {"alpha": [0.2, 0.3, 0.4, 0.5, 0.6], "rate_min": [0.1, 0.2, 0.3], "rate_max": [0.6, 0.7, 0.8]}
    sada = {p.name for p in load_search_space("hyper/sada.hyper")}
    assert {"n_clusters", "fusion_gate_scale", "fusion_gate_power", "substitute_semantic_weight"} <= sada
    llmser = {p.name: p.values for p in load_search_space("hyper/llmser.hyper")}
    assert min(llmser["beta"]) == 0.1 and max(llmser["beta"]) == 0.8 and "tail_threshold" in llmser


# ------------------------------------------------------------------------------------ CLI, bad input
@pytest.fixture(scope="module")
def tiny10(tmp_path_factory):
    root = tmp_path_factory.mktemp("hyperdata")
    write_tiny_dataset(root, name="tiny10", n_users=40, n_items=10)
    return root


def _fixed(root, out):
    return [
        f"--data_path={root}", f"--output_dir={out}", f"--ray_dir={out}/ray", f"--checkpoint_dir={out}/saved",
        "--hidden_size=8", "--inner_size=16", "--n_layers=1", "--MAX_ITEM_LIST_LENGTH=10",
        "--train_mode=sequence", "--topk=[5]", "--valid_metric=NDCG@5", "--train_batch_size=16",
        "--state=WARNING", "--show_progress=False",
    ]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--params_file=missing.hyper"], "params file not found: missing.hyper"),
        (["--params_file={bad}"], "line 2: unknown kind 'sometimes'"),
        (["--params_file={good}", "--model=NoSuchRec"], "unknown model 'NoSuchRec'"),
        (["--params_file={typo}"], "line 1: 'n_haeds' is not a config key of SASRec"),
        (["--params_file={good}", "--search=bayes"], "--search must be one of random, grid"),
        (["--params_file={good}", "--resume"], "--resume: no search to continue"),
        (["--params_file={good}", "stray"], "unrecognised arguments ['stray']"),
    ],
)
def test_cli_bad_input_exits_2_with_one_line(tiny10, tmp_path, capsys, args, message):
    files = {
        "bad": _write(tmp_path / "bad.hyper", "n_heads choice [1]\nlearning_rate sometimes 1\n"),
        "good": _write(tmp_path / "good.hyper", "n_heads choice [1]\n"),
        "typo": _write(tmp_path / "typo.hyper", "n_haeds choice [1, 2]\n"),
    }
    args = [a.format(**files) for a in args]
    if not any(a.startswith("--model=") for a in args):
        args.append("--model=SASRec")
    rc = run_hyper_sada.main(["--dataset=tiny10", *args, *_fixed(tiny10, tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]


def test_trials_share_data_unless_it_changes(tiny10, tmp_path):
    from recbole_sada.config import build_config
    from recbole_sada.tuning.search import _fresh_loaders, data_signature
    from recbole_sada.quick_start import prepare

    common = ["--hidden_size=8", "--inner_size=16", "--train_mode=sequence", "--state=WARNING",
              f"--data_path={tiny10}", "--topk=[5]"]
    base = {"MAX_ITEM_LIST_LENGTH": 10, "train_batch_size": 32}
    config, data, train, valid, test = prepare("SASRec", "tiny10", config_dict=base, cmd_args=common)

    def trial_config(**params):
        return build_config("SASRec", "tiny10", None, {**base, **params}, common)

    trial = trial_config(learning_rate=0.01, n_heads=1)
    small_batches = trial_config(train_batch_size=8, seed=5)
    longer = trial_config(MAX_ITEM_LIST_LENGTH=20)
    assert data_signature(trial) == data_signature(config) == data_signature(small_batches)
    assert data_signature(longer) != data_signature(config)
    # fresh loaders over the shared split follow the trial's batch size and seed
    new_train, new_valid, new_test = _fresh_loaders(small_batches, [train, valid, test])
    assert len(train) == 2 and len(new_train) == 5  # 40 users, one sample each
    assert new_train._dataset is train._dataset and new_test._dataset is test._dataset
    assert new_train.generator.initial_seed() == 5


def test_reports_without_ray(tmp_path):
    from recbole_sada.tuning.search import write_reports

    space = _write(tmp_path / "s.hyper", "single_ops choice [['reorder'], ['reorder', 'substitute']]\n"
                                         "learning_rate loguniform -8,-4\n")
    params = load_search_space(space)
    info = {"model": "M", "dataset": "d", "params_file": str(space), "search": "random", "valid_metric": "ndcg@10",
            "bigger": True, "seed": 1, "epochs": 2, "config_files": [], "fixed": {"epochs": 2},
            "command": "cmd", "scheduler_desc": "none"}

    def row(trial, status, score, ops, lr, error=""):
        return {"trial": trial, "status": status, "epochs": 2, "single_ops": ops, "learning_rate": lr,
                "valid_score": score, "valid_ndcg@10": score, "data": "shared", "error": error, "trial_dir": "x"}

    rows = [row("a", "completed", 0.2, ["reorder"], 1e-3), row("b", "stopped", 0.1, ["reorder", "substitute"], 1e-2),
            row("c", "error", None, ["reorder"], 2e-3, "ValueError: boom | bad")]
    paths, best = write_reports(tmp_path / "out", rows, params, info)
    assert best["trial"] == "a" and paths["png"].is_file()
    text = paths["yaml"].read_text()
    assert yaml.safe_load(text) == {"single_ops": ["reorder"], "learning_rate": 1e-3, "seed": 1}  # budget not pinned
    assert "--config_files=" in text and "--epochs=2" in text  # ... but on the rerun line
    md = paths["md"].read_text()
    assert "ValueError: boom \\| bad" in md and "1 completed, 1 stopped early by the scheduler, 1 failed" in md
    # nothing completed: no best yaml, no plot; the table still lists the failures
    paths, best = write_reports(tmp_path / "out", rows[2:], params, info)
    assert best is None and paths["yaml"] is None and paths["png"] is None
    assert not (tmp_path / "out" / "M-d-best.yaml").exists() and "boom" in paths["md"].read_text()


# ------------------------------------------------------------------------------------ real search
@pytest.fixture(scope="module")
def local_ray():
    import ray

    from recbole_sada.tuning.search import init_ray

    init_ray(num_cpus=2, verbose=0)
    yield
    ray.shutdown()


def test_search_with_a_failing_trial_writes_reports(tiny10, tmp_path, local_ray, capsys):
    space = _write(tmp_path / "space.hyper", "n_heads choice [1, 3]\nlearning_rate loguniform -7,-5\n")
    data_yaml = _write(tmp_path / "data.yaml", f"data_path: {tiny10}\n")  # the data come from a user file
    out = tmp_path / "results"
    argv = [
        "--model=SASRec", "--dataset=tiny10", f"--params_file={space}", "--search=grid",
        "--epochs=1", "--max_concurrent=2", "--verbose=0", f"--config_files={data_yaml}",
        *[a for a in _fixed(tiny10, out) if not a.startswith("--data_path=")],
    ]
    assert run_hyper_sada.main(argv) == 0
    printed = capsys.readouterr().out
    assert "2 trials" in printed and "1 failed" in printed
    rerun_line = next(line for line in printed.splitlines() if line.startswith("rerun: ")).split(" ", 1)[1]

    # csv: every trial, best first; the failed one with its error message
    with open(out / "SASRec-tiny10.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["status"] for r in rows] == ["completed", "error"]
    ok, failed = rows
    assert ok["n_heads"] == "1" and failed["n_heads"] == "3"
    assert "not a multiple of the number of attention heads" in failed["error"]
    assert failed["valid_score"] == "" and ok["data"] == "shared"
    for key in ("valid_score", "valid_ndcg@5", "valid_hit@5", "test_ndcg@5", "test_hit@5"):
        assert 0.0 <= float(ok[key]) <= 1.0
    assert float(ok["valid_score"]) == float(ok["valid_ndcg@5"])
    assert list((Path(ok["trial_dir"]) / "saved").glob("SASRec-*.pth"))  # checkpoints stay per trial

    md = (out / "SASRec-tiny10.md").read_text()
    assert "1 completed, 0 stopped early by the scheduler, 1 failed" in md
    assert "| 1 | " in md and "ValueError: The hidden size (8)" in md
    assert (out / "SASRec-tiny10.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # best yaml: the searched values, the fixed overrides and the seed; it reruns to the same score
    best_yaml = out / "SASRec-tiny10-best.yaml"
    best = yaml.safe_load(best_yaml.read_text())
    assert best["n_heads"] == 1 and best["seed"] == 2020 and "epochs" not in best  # the budget is not pinned
    assert best["learning_rate"] == pytest.approx(float(ok["learning_rate"]))
    assert "data_path" not in best and "output_dir" not in best

    # the printed rerun line (the search's config files, the best yaml, its epochs) reruns the trial
    import shlex

    import run_recbole_sada

    words = shlex.split(rerun_line)
    assert words[:2] == ["python", "run_recbole_sada.py"] and "--epochs=1" in words
    assert str(data_yaml) in rerun_line and best_yaml.name in rerun_line
    result_json = tmp_path / "rerun.json"
    assert run_recbole_sada.main(words[2:] + [f"--checkpoint_dir={tmp_path / 'rerun'}", f"--result_json={result_json}"]) == 0
    rerun = json.loads(result_json.read_text())
    assert rerun["best_valid_result"]["ndcg@5"] == pytest.approx(float(ok["valid_ndcg@5"]), abs=1e-4)

    # --resume reopens the finished experiment: nothing reruns, the reports are written again
    (out / "SASRec-tiny10.md").unlink()
    assert run_hyper_sada.main([*argv, "--resume"]) == 0
    with open(out / "SASRec-tiny10.csv") as f:
        again = list(csv.DictReader(f))
    assert [(r["trial"], r["status"], r["valid_score"]) for r in again] == [
        (r["trial"], r["status"], r["valid_score"]) for r in rows
    ]
    assert (out / "SASRec-tiny10.md").is_file()
