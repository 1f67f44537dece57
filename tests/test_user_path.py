"""A user's own path through the command line: bad input ends in exit 2 and one line naming the
input and the fix (Ctrl-C: 130), silent wrong runs are refused, checkpoints know their data."""
from pathlib import Path

import pytest

import run_recbole_sada
from conftest import write_tiny_dataset
from recbole_sada.data.checks import check_atomic_file
from recbole_sada.errors import InputError
from recbole_sada.semantic.files import read_embedding_file

SMALL = ["--epochs=1", "--hidden_size=16", "--inner_size=32", "--n_layers=1", "--n_heads=1",
         "--train_batch_size=64", "--eval_batch_size=256", "--MAX_ITEM_LIST_LENGTH=10", "--state=WARNING",
         "--show_progress=False", "--train_mode=sequence"]


def cli(capsys, root, *args, model="SASRec", dataset="tiny", small=True):
    argv = [f"--model={model}", f"--dataset={dataset}", f"--data_path={root}", f"--checkpoint_dir={root}/saved"]
    given = {a.split("=", 1)[0] for a in args}
    argv += [a for a in (SMALL if small else []) if a.split("=", 1)[0] not in given] + list(args)
    code = run_recbole_sada.main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    return code, lines


def refused(capsys, root, *args, needles=(), **kw):
    code, lines = cli(capsys, root, *args, **kw)
    assert code == 2, lines
    assert not any("Traceback" in line for line in lines)
    last = lines[-1]
    assert last.startswith("error: ") and all(n in last for n in needles), last
    return last


@pytest.fixture
def root(tmp_path):
    write_tiny_dataset(tmp_path)
    return tmp_path


def edit_inter(root, edit, name="tiny"):
    path = Path(root) / name / f"{name}.inter"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(edit(lines)) + "\n")
    return path


# ------------------------------------------------------------------------------ data files
def test_non_numeric_timestamp(root, capsys):
    edit_inter(root, lambda ls: ls[:3] + ["u1\ti3\t2024-01-05"] + ls[3:])
    refused(capsys, root, needles=("tiny.inter line 4", "timestamp", "'2024-01-05'", "Unix seconds"))


def test_header_only_inter(root, capsys):
    edit_inter(root, lambda ls: ls[:1])
    refused(capsys, root, needles=("tiny.inter", "no rows"))


@pytest.mark.parametrize("row, count", [("u1\ti3", 2), ("u1\ti3\t7\t1", 4)])
def test_row_with_missing_or_extra_field(root, capsys, row, count):
    edit_inter(root, lambda ls: ls[:5] + [row] + ls[5:])
    refused(capsys, root, needles=("tiny.inter line 6", f"has {count} fields", "header has 3"))


def test_empty_timestamp_and_nan_in_float_seq_are_refused(tmp_path):
    path = tmp_path / "x.inter"
    path.write_text("user_id:token\titem_id:token\ttimestamp:float\nu1\ti1\t\n")
    with pytest.raises(InputError, match="line 2: empty timestamp"):
        check_atomic_file(path, time_field="timestamp")
    path.write_text("item_id:token\temb:float_seq\ni1\t0.1 nan 0.3\n")
    with pytest.raises(InputError, match="NaN or infinite"):
        check_atomic_file(path)
    path.write_text("item_id:token\temb:float_seq\ni1\t0.1 0.2 0.3\n")
    assert check_atomic_file(path) == 1


def test_itememb_with_nan_is_refused_at_load(tmp_path):
    path = tmp_path / "tiny.itememb"
    path.write_text("item_id:token\titem_emb:float_seq\ni1\t0.1 0.2\ni2\t0.3 NaN\n")
    with pytest.raises(InputError) as err:
        read_embedding_file(path, "item_id", "item_emb")
    assert "NaN" in str(err.value) and "'i2'" in str(err.value) and "\n" not in str(err.value)


def test_duplicated_rows_are_counted_in_a_warning(root, capsys, caplog):
    edit_inter(root, lambda ls: ls + ls[1:4])
    code, lines = cli(capsys, root)
    assert code == 0
    text = " ".join(lines) + " ".join(r.getMessage() for r in caplog.records)
    assert "3 of" in text and "repeat an earlier (user, item, timestamp) row" in text and "rm_dup_inter" in text


# ------------------------------------------------------------------------------ config and flags
def test_yaml_syntax_error(root, capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: 3\nlearning_rate: [0.1\n")
    refused(capsys, root, f"--config_files={bad}", needles=("not valid yaml", "line", str(bad)))


@pytest.mark.parametrize("arg, needles", [
    ("--learning_rate=abc", ("learning_rate must be a number > 0.0", "'abc'")),
    ("--epochs=-1", ("epochs must be an integer >= 1", "-1")),
    ("--alpha=-1", ("alpha must be a number > 0.0",)),
    ("--rate_min=0.9", ("rate_min (0.9) must not exceed rate_max",)),
])
def test_bad_values_are_one_line(root, capsys, arg, needles):
    model = "BASRecSASRec" if "alpha" in arg or "rate" in arg else "SASRec"
    refused(capsys, root, arg, needles=needles, model=model)


def test_flag_given_twice(root, capsys):
    refused(capsys, root, "--epochs=2", "--epochs=3", needles=("--epochs is given more than once",))


def test_unknown_preset_names_the_packaged_ones(root, capsys):
    refused(capsys, root, "--preset=basrec_oficial", needles=("unknown preset 'basrec_oficial'", "basrec_official"))


def test_preset_by_name_sits_below_config_files_and_overrides(root, tmp_path):
    """``--preset=basrec_official`` loads the packaged yaml (a wheel install has no properties/ folder
    beside the user); a --config_files yaml and a --key=value still win over it."""
    import yaml

    from recbole_sada.__main__ import parse_args
    from recbole_sada.config import build_config, preset_file

    official = yaml.safe_load(Path(preset_file("basrec_official")).read_text())
    mine = tmp_path / "mine.yaml"
    mine.write_text("rate_max: 0.6\n")
    args, files, overrides = parse_args(["--model=BASRecSASRec", "--dataset=tiny", "--preset=basrec_official",
                                         f"--config_files={mine}", f"--data_path={root}", "--n_item_mixes=2"])
    config = build_config(args.model, args.dataset, files, cmd_args=overrides)
    assert config["n_single_views"] == official["n_single_views"] == 4
    assert config["alw_norm"] == "batch_sum" and config["valid_metric"] == "NDCG@20"
    assert config["rate_max"] == 0.6 and config["n_item_mixes"] == 2
    plain = build_config("BASRecSASRec", "tiny", cmd_args=[f"--data_path={root}"])
    assert plain["n_single_views"] != 4  # without the preset: the paper-text defaults of BASRec.yaml
    assert preset_file(str(mine)) == str(mine)  # a path is taken as it is


def test_ctrl_c_is_exit_130_and_one_line(root, capsys, monkeypatch):
    import recbole_sada.quick_start as Q

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(Q, "run_recbole_sada", interrupted)
    code, lines = cli(capsys, root)
    assert code == 130 and lines == [lines[-1]] and lines[-1].startswith("interrupted:")


# ------------------------------------------------------------------------------ checkpoints
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 16-d SASRec checkpoint of the tiny dataset, trained through the command line."""
    import json

    root = tmp_path_factory.mktemp("ckpt")
    write_tiny_dataset(root)
    out = root / "run.json"
    argv = ["--model=SASRec", "--dataset=tiny", f"--data_path={root}", f"--checkpoint_dir={root}/saved",
            f"--result_json={out}"] + SMALL
    assert run_recbole_sada.main(argv) == 0
    return root, json.loads(out.read_text())["model_file"]


def test_pretrained_path_that_is_not_a_checkpoint(trained, capsys, tmp_path):
    root, _ = trained
    junk = tmp_path / "notes.pth"
    junk.write_text("this is not a checkpoint\n")
    refused(capsys, root, f"--pretrained_path={junk}", "--stage1_epochs=0", model="BASRecSASRec",
            needles=(str(junk), "is not a checkpoint"))


def test_checkpoint_with_other_sizes(trained, capsys):
    root, ckpt = trained
    last = refused(capsys, root, f"--pretrained_path={ckpt}", "--stage1_epochs=0", "--hidden_size=32",
                   "--inner_size=64", model="BASRecSASRec", small=True, needles=(ckpt, "does not fit", "[", "hidden_size"))
    assert "16" in last and "32" in last


def test_checkpoint_of_other_data_with_the_same_item_count(trained, capsys):
    root, ckpt = trained
    other = Path(root) / "tiny2"
    other.mkdir(exist_ok=True)
    src = Path(root) / "tiny" / "tiny.inter"
    # the same users and item count, items renamed in another order: same shapes, other meaning
    lines = src.read_text().splitlines()
    renamed = [lines[0]] + [f"{u}\ti{41 - int(i[1:])}\t{t}" for u, i, t in (line.split("\t") for line in lines[1:])]
    (other / "tiny2.inter").write_text("\n".join(renamed) + "\n")
    refused(capsys, root, f"--pretrained_path={ckpt}", "--stage1_epochs=0", model="BASRecSASRec", dataset="tiny2",
            needles=(ckpt, "trained on other data", "tiny2"))


def test_checkpoint_of_the_same_data_still_loads(trained, capsys):
    root, ckpt = trained
    code, lines = cli(capsys, root, f"--pretrained_path={ckpt}", "--stage1_epochs=0", model="BASRecSASRec")
    assert code == 0, lines


# ------------------------------------------------------------------------------ reload and recommend
def test_reloaded_model_gives_the_runs_test_metrics(trained):
    import json

    from recbole_sada.quick_start import load_data_and_model, topk_items
    from recbole_sada.utils import get_trainer

    root, ckpt = trained
    result = json.loads((Path(root) / "run.json").read_text())
    config, model, dataset, _, _, test_data = load_data_and_model(ckpt)
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    again = trainer.evaluate(test_data, load_best_model=False)
    assert {k: round(v, 4) for k, v in again.items()} == {k: round(v, 4) for k, v in result["test_result"].items()}
    top = topk_items(["u1", "u2"], model, test_data, k=5)
    assert len(top) == 2 and all(len(row) == 5 and len(set(row)) == 5 for row in top)
    assert all(str(t).startswith("i") for row in top for t in row)  # item tokens, padding never


def test_load_data_and_model_refuses_junk(tmp_path):
    from recbole_sada.quick_start import load_data_and_model

    junk = tmp_path / "x.pth"
    junk.write_text("no")
    with pytest.raises(InputError, match="is not a checkpoint"):
        load_data_and_model(str(junk))
    with pytest.raises(InputError, match="not found"):
        load_data_and_model(str(tmp_path / "missing.pth"))


def test_readme_reload_example_runs_on_a_sada_checkpoint(tmp_path, capsys):
    """The README's example, word for word but for the checkpoint path, on a SADA run."""
    import contextlib
    import io
    import json
    import os
    import re

    from conftest import ROOT

    write_tiny_dataset(tmp_path)
    out = tmp_path / "run.json"
    argv = ["--model=SADASASRec", "--dataset=tiny", f"--data_path={tmp_path}", f"--checkpoint_dir={tmp_path}/saved",
            f"--cache_dir={tmp_path}/cache", "--n_clusters=2", "--stage1_epochs=0", f"--result_json={out}"] + SMALL
    assert run_recbole_sada.main(argv) == 0, capsys.readouterr().err[-2000:]
    model_file = json.loads(out.read_text())["model_file"]
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- reload-example -->\n```python\n(.*?)```", readme, re.S).group(1)
    line = re.search(r'^model_file = "[^"]+"', block, re.M).group(0)
    code = block.replace(line, f"model_file = {model_file!r}")
    printed = io.StringIO()
    cwd = os.getcwd()
    try:
        os.chdir(tmp_path)
        with contextlib.redirect_stdout(printed):
            exec(compile(code, "README.md", "exec"), {})
    finally:
        os.chdir(cwd)
    rows = [r.split(" ", 2) for r in printed.getvalue().strip().splitlines()]
    assert [int(r[0]) for r in rows] == list(range(1, 11))
    assert all(r[1].startswith("i") and ("action movie" in r[2] or "romantic comedy" in r[2]) for r in rows)


def test_readme_own_dataset_steps(tmp_path, capsys):
    """'Your own dataset' of the README followed step by step: files, its yaml (taken from the
    README as written), the run."""
    import re

    from conftest import ROOT

    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("### Your own dataset"):]
    section = section[: section.index("\n## ")]
    settings = re.search(r"```yaml\n(.*?)```", section, re.S).group(1)
    settings = "\n".join(line[3:] if line.startswith("   ") else line for line in settings.splitlines())
    folder = tmp_path / "dataset" / "mine"
    write_tiny_dataset(tmp_path / "dataset", name="mine")  # step 1: .inter (typed header) ...
    lines = (folder / "mine.item").read_text().splitlines()  # ... and .item with text fields
    (folder / "mine.item").write_text("\n".join(["item_id:token\ttitle:token\tcategories:token_seq"] + [
        f"{line}\t{'Action Thriller' if int(line.split(chr(9))[0][1:]) <= 20 else 'Romance'}" for line in lines[1:]]) + "\n")
    (folder / "mine.yaml").write_text(settings)  # step 2
    args = [f"--config_files={folder / 'mine.yaml'}", "--n_clusters=2", "--stage1_epochs=0", f"--cache_dir={tmp_path}/cache"]
    code, lines = cli(capsys, tmp_path / "dataset", *args, model="SADASASRec", dataset="mine")  # step 5
    assert code == 0, lines[-5:]
    assert (folder / "mine.itememb").is_file()  # step 4: SADA built the features itself
    assert "categories" in (folder / "mine.semantic.json").read_text()


def test_reload_and_evaluate_in_a_fresh_process(trained):
    """No RecBole Config is built in a process that only reloads a checkpoint: RecBole's NDCG
    needs the numpy aliases a Config sets, so load_data_and_model must set them itself."""
    import subprocess
    import sys

    root, ckpt = trained
    code = (
        "import sys; sys.path.insert(0, %r)\n"
        "from recbole_sada.quick_start import load_data_and_model\n"
        "from recbole_sada.utils import get_trainer\n"
        "config, model, _, _, _, test_data = load_data_and_model(%r)\n"
        "trainer = get_trainer(config['MODEL_TYPE'], config['model'])(config, model)\n"
        "print('NDCG', trainer.evaluate(test_data, load_best_model=False)['ndcg@10'])\n"
    ) % (str(Path(__file__).resolve().parents[1]), ckpt)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "NDCG" in out.stdout
