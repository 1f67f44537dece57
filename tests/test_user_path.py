"""A user's own path through the command line: bad input ends in exit 2 and one line naming the
input and the fix (Ctrl-C: 130), silent wrong runs are refused, checkpoints know their data."""
from pathlib import Path

import pytest

import run_recbole_sada
from conftest import write_tiny_dataset
from recbole_sada.data.checks import check_atomic_file
from recbole_sada.errors import SADAInputError
from recbole_sada.semantic.features import read_embedding_file

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
    with pytest.raises(SADAInputError, match="line 2: empty timestamp"):
        check_atomic_file(path, time_field="timestamp")
    path.write_text("item_id:token\temb:float_seq\ni1\t0.1 nan 0.3\n")
    with pytest.raises(SADAInputError, match="NaN or infinite"):
        check_atomic_file(path)
    path.write_text("item_id:token\temb:float_seq\ni1\t0.1 0.2 0.3\n")
    assert check_atomic_file(path) == 1


def test_itememb_with_nan_is_refused_at_load(tmp_path):
    path = tmp_path / "tiny.itememb"
    path.write_text("item_id:token\titem_emb:float_seq\ni1\t0.1 0.2\ni2\t0.3 NaN\n")
    with pytest.raises(SADAInputError) as err:
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
