"""benchmarks/run_table.py helpers: cache keys of fine-tuned rows, time-to-quality table."""
import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("run_table", ROOT / "benchmarks" / "run_table.py")
run_table = importlib.util.module_from_spec(spec)
spec.loader.exec_module(run_table)


def test_fine_tuned_rows_are_keyed_by_their_backbone_run():
    _, cfg, plain = run_table.run_key("BASRecSASRec[epochs=15]", "ml-100k", 1, {"epochs": 30})
    _, _, from_a = run_table.run_key("BASRecSASRec[epochs=15]", "ml-100k", 1, {"epochs": 30}, "aaaa")
    _, _, from_b = run_table.run_key("BASRecSASRec[epochs=15]", "ml-100k", 1, {"epochs": 30}, "bbbb")
    assert cfg["epochs"] == 15 and cfg["seed"] == 1
    assert len({plain, from_a, from_b}) == 3


def test_time_to_quality_counts_the_backbone_epochs():
    base = {"valid_curve": [[0, 0.01, 10.0], [1, 0.02, 20.0], [2, 0.04, 30.0], [3, 0.03, 40.0]],
            "epochs_run": 4, "train_time": 40.0}
    tuned = {"valid_curve": [[0, 0.039, 15.0], [1, 0.045, 30.0]], "pretrained_epochs": 4}
    slow = {"valid_curve": [[0, 0.005, 5.0]]}
    runs = {"SASRec": [base], "BASRecSASRec": [tuned], "Slow": [slow]}
    text = run_table.time_to_quality(["SASRec", "BASRecSASRec", "Slow"], runs, pretrain_from_first=True)
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ")[1:] for line in text.splitlines()
            if line.startswith("| ") and not line.startswith("| model")}
    # SASRec's best is 0.04: 50% (0.02) at epoch 2, 100% at epoch 3, 105% never
    assert rows["SASRec"][0].startswith("2 ep / 0.3 min (1/1)") and rows["SASRec"][3].startswith("3 ep / 0.5 min")
    assert rows["SASRec"][4].startswith("not reached")
    # the fine-tuned row inherits the levels its checkpoint reached ...
    assert rows["BASRecSASRec"][0].startswith("2 ep / 0.3 min") and rows["BASRecSASRec"][3].startswith("3 ep / 0.5 min")
    # ... and reaches 105% (0.042) at its 2nd epoch, after SASRec's 4 epochs / 40 s
    assert rows["BASRecSASRec"][4].startswith("6 ep / 1.2 min (1/1)")
    assert rows["Slow"][0].startswith("2 ep")  # fine-tuned rows inherit what the checkpoint reached
    alone = run_table.time_to_quality(["SASRec", "Slow"], runs)
    assert alone.splitlines()[-1].count("not reached (0/1)") == len(run_table.LEVELS)
    assert run_table.time_to_quality(["SASRec"], {"SASRec": [{"valid_curve": []}]}) is None


def test_time_to_quality_counts_an_alignment_row_from_its_own_epochs():
    """LLMEmb RAT reads the first row's checkpoint as its alignment target only: it trains from
    scratch, so it inherits none of the levels the checkpoint reached."""
    base = {"valid_curve": [[0, 0.02, 10.0], [1, 0.04, 20.0]], "epochs_run": 2, "train_time": 20.0}
    aligned = {"valid_curve": [[0, 0.005, 6.0], [1, 0.01, 12.0], [2, 0.021, 18.0]], "pretrained_epochs": 2}
    models = ["SASRec", "LLMEmbRATSASRec[epochs=3]"]
    assert run_table.alignment_model(models[1]) and not run_table.alignment_model("BASRecSASRec")
    assert not run_table.starts_from_first(models[1], models, pretrain_from_first=True)
    assert run_table.starts_from_first("BASRecSASRec", ["SASRec", "BASRecSASRec"], pretrain_from_first=True)
    text = run_table.time_to_quality(models, {"SASRec": [base], models[1]: [aligned]}, pretrain_from_first=True)
    row = [line for line in text.splitlines() if line.startswith(f"| {models[1]}")][0].split(" | ")[1:]
    # 50% of 0.04 = 0.02: reached at its own 3rd epoch (18 s), not at SASRec's 1st
    assert row[0].startswith("3 ep / 0.3 min (1/1)") and row[1].startswith("not reached")


def test_plots_are_written(tmp_path):
    groups = {"all": {"n": 3, "ndcg@10": 0.1}, "items:tail": {"n": 1, "ndcg@10": 0.0}}
    runs = {"A": [{"valid_curve": [[0, 0.1, 1.0], [1, 0.2, 2.0]], "test_groups": groups}],
            "B": [{"valid_curve": [[0, 0.3, 1.0]], "pretrained_epochs": 2, "test_groups": groups}]}
    curves = run_table.plot_curves(runs, ["A", "B"], tmp_path / "c.png", pretrain_from_first=True)
    bars = run_table.plot_groups(runs, ["A", "B"], tmp_path / "g.png")
    assert curves.stat().st_size > 1000 and bars.stat().st_size > 1000


def test_preset_sits_between_budget_and_overrides_and_enters_the_key():
    preset_file = ROOT / "properties" / "preset" / "basrec_official.yaml"
    preset, cfg = run_table.run_settings("full", str(preset_file), {"epochs": 7})
    assert preset["n_single_views"] == 4 and cfg["n_single_views"] == 4
    assert cfg["epochs"] == 7 and cfg["stage1_epochs"] == preset["stage1_epochs"] == 0  # preset over budget
    _, plain = run_table.run_settings("full", None, {"epochs": 7})
    assert run_table.run_key("BASRecSASRec", "beauty", 1, cfg)[2] != run_table.run_key("BASRecSASRec", "beauty", 1, plain)[2]
    # the packaged name gives the same settings, hence the same cache key, as the file's path
    _, by_name = run_table.run_settings("full", "basrec_official", {"epochs": 7})
    assert run_table.run_key("BASRecSASRec", "beauty", 1, by_name) == run_table.run_key("BASRecSASRec", "beauty", 1, cfg)
    with pytest.raises(SystemExit, match=r"error: --preset: unknown preset 'nope'.*basrec_official"):
        run_table.run_settings("full", "nope", {})


def _result(ndcg):
    metrics = {"hit@10": 2 * ndcg, "ndcg@10": ndcg, "hit@20": 3 * ndcg, "ndcg@20": 1.2 * ndcg}
    return {"test_result": metrics, "best_valid_result": metrics, "epoch_time": 1.0, "epochs_run": 3,
            "train_time": 3.0, "peak_memory_mb": 10.0, "test_groups": None,
            "valid_curve": [[0, ndcg, 1.0], [1, ndcg, 2.0]], "wall": 4.0}


def test_committed_store_is_reused_without_checkpoints(tmp_path, monkeypatch):
    """A fresh checkout has the committed results but no log folder or checkpoints: nothing reruns."""
    store, log = tmp_path / "runs", tmp_path / "log"
    cfg = run_table.run_settings("smoke", None, {})[1]
    key0 = run_table.run_key("SASRec", "ml-100k", 7, cfg)[2]
    first = run_table.store_result(str(store), "SASRec", "ml-100k", 7, cfg, _result(0.01))
    tuned = run_table.store_result(str(store), "BASRecSASRec[alpha=0.2]", "ml-100k", 7, cfg, _result(0.02), key0)
    record = json.loads(tuned.read_text())
    assert record["config"]["alpha"] == 0.2 and record["pretrained_from"] == key0 and first.parent.name == "ml-100k"

    def no_run(*a, **k):
        raise AssertionError("a stored run was repeated")

    monkeypatch.setattr(run_table.subprocess, "run", no_run)
    out = tmp_path / "table.md"
    assert run_table.main(["--dataset=ml-100k", "--models", "SASRec", "BASRecSASRec[alpha=0.2]", "--seeds", "7",
                           "--pretrain_from_first", "--log_dir", str(log), "--store", str(store),
                           "--output", str(out), "--title", "t"]) == 0
    assert "| BASRecSASRec[alpha=0.2] | 0.0400" in out.read_text()
    # a row not in the store needs the backbone's checkpoint, so the backbone would rerun
    with pytest.raises(AssertionError, match="repeated"):
        run_table.main(["--dataset=ml-100k", "--models", "SASRec", "BASRecSASRec[alpha=0.3]", "--seeds", "7",
                        "--pretrain_from_first", "--log_dir", str(log), "--store", str(store),
                        "--output", str(out), "--title", "t"])


def test_tables_state_the_ranking_protocol_and_the_second_test_pass():
    assert "full ranking" in run_table.ranking_protocol({}) and "scored too" in run_table.ranking_protocol({})
    assert "masked" in run_table.ranking_protocol({"eval_mask_history": True})
    sampled = run_table.ranking_protocol({"eval_args": {"mode": {"valid": "full", "test": "uni100"}}})
    assert "100 negatives" in sampled and "not comparable" in sampled

    def run(full, sampled_ndcg):
        groups = {"all": {"n": 2, "ndcg@10": full}, "users[0,4)": {"n": 1, "ndcg@10": full}}
        metrics = {m: full for m in run_table.METRICS}
        extra = {"uni100": {"test_result": {m: sampled_ndcg for m in run_table.METRICS},
                            "test_groups": {**groups, "all": {"n": 2, "ndcg@10": sampled_ndcg}}}}
        return {"test_result": metrics, "test_groups": groups, "extra_tests": extra, "epoch_time": 1.0,
                "peak_memory_mb": 100.0, "epochs_run": 3, "valid_curve": []}

    runs = {"A": [run(0.01, 0.2), run(0.012, 0.21)], "B": [run(0.02, 0.3), run(0.021, 0.32)]}
    text = run_table.render("t", "ml-100k", ["A", "B"], [1, 2], runs, "smoke", {}, "cmd")
    assert "Same checkpoints, test in `uni100` mode" in text
    sampled_rows = [line for line in text.split("Same checkpoints")[1].splitlines() if line.startswith("| B |")]
    assert sampled_rows[0].startswith("| B | 0.3100 ± 0.0141")
    assert "users[0,4) " in text.split("per user group")[1]  # p-values per user group


def test_rerendered_section_keeps_its_notes_and_other_sections(tmp_path):
    out = tmp_path / "r.md"
    run_table.write_section(out, "T", "## T\n\n| a |\n|---|\n| 1 |")
    run_table.write_section(out, "U", "## U\n\nother")
    text = out.read_text()
    notes = "<!-- notes -->\n**What this is.** prose a rerun must keep.\n<!-- end notes -->"
    out.write_text(text.replace("## T\n", "## T\n\n" + notes + "\n", 1))
    run_table.write_section(out, "T", "## T\n\n| a |\n|---|\n| 2 |")
    text = out.read_text()
    assert text.count("prose a rerun must keep") == 1 and "| 2 |" in text and "| 1 |" not in text
    assert text.index("## T") < text.index("prose a rerun") < text.index("| 2 |") < text.index("## U")
    run_table.write_section(out, "U", "## U\n\nnew")  # a section without notes stays as rendered
    assert "new" in out.read_text() and out.read_text().count("<!-- notes -->") == 1


def test_group_set_tables_render_each_definition_with_p_values():
    def run(v):
        g = {"all": {"n": 10, "ndcg@10": v}, "users[0,7)": {"n": 6, "ndcg@10": v}, "users[7,inf)": {"n": 4, "ndcg@10": v},
             "items:head": {"n": 3, "ndcg@10": v}, "items:tail": {"n": 7, "ndcg@10": v / 2}}
        return {"test_group_sets": {"llmesr": g}}
    runs = {"A": [run(0.1), run(0.12)], "B": [run(0.2), run(0.23)]}
    text = "\n".join(run_table.group_set_tables(["A", "B"], runs))
    assert "definition `llmesr`" in text and "users[0,7) (n=6)" in text and "items:tail (n=7)" in text
    assert "| B | 0.2150 ± " in text and "(p=" in text
    assert run_table.group_set_tables(["A"], {"A": [{"test_group_sets": {}}]}) == []


def test_report_only_settings_stay_out_of_the_cache_key():
    sets = {"llmesr": {"user_group_edges": [7], "item_tail_below": 4}}
    plain = run_table.run_key("SASRec", "beauty", 1, {"epochs": 3})[2]
    assert run_table.run_key("SASRec", "beauty", 1, {"epochs": 3, "group_sets": sets})[2] == plain
    assert run_table.run_key("SASRec", "beauty", 1, {"epochs": 4, "group_sets": sets})[2] != plain
    # the group-set table names the rows whose (older) runs lack the definition
    with_sets = {**_result(0.02), "test_group_sets": {"llmesr": {"all": {"n": 2, "ndcg@10": 0.02},
                                                                "users:tail": {"n": 1, "ndcg@10": 0.03}}}}
    lines = run_table.group_set_tables(["A", "B"], {"A": [_result(0.01)], "B": [with_sets]})
    text = "\n".join(lines)
    assert "Not for `A`" in text and "| B | 0.0300" in text


def test_scratch_rows_do_not_start_from_the_first_row(tmp_path, monkeypatch):
    store, log = tmp_path / "runs", tmp_path / "log"
    cfg = run_table.run_settings("smoke", None, {})[1]
    key0 = run_table.run_key("SASRec", "ml-100k", 7, cfg)[2]
    run_table.store_result(str(store), "SASRec", "ml-100k", 7, cfg, _result(0.01))
    run_table.store_result(str(store), "BASRecSASRec", "ml-100k", 7, cfg, _result(0.02), key0)
    calls = []

    def fake_run_one(spec, dataset, seed, overrides, log_dir, keep_checkpoint=False, pretrained=None, store=None):
        calls.append((spec, keep_checkpoint, pretrained))
        return {**_result(0.015), "key": "k"}

    monkeypatch.setattr(run_table, "run_one", fake_run_one)
    out = tmp_path / "table.md"
    argv = ["--dataset=ml-100k", "--models", "SASRec", "BASRecSASRec", "LLMESRSASRec", "--seeds", "7",
            "--pretrain_from_first", "--log_dir", str(log), "--store", str(store), "--output", str(out), "--title", "t"]
    assert run_table.main(argv + ["--scratch_rows", "LLMESRSASRec"]) == 0
    # only the scratch row runs, without the backbone's checkpoint, and the backbone is not rerun for it
    assert [c for c in calls if c[0] != "SASRec" and c[0] != "BASRecSASRec"] == [("LLMESRSASRec", False, None)]
    assert not any(c[0] == "SASRec" and c[1] for c in calls)
    assert "`LLMESRSASRec`: trained from scratch" in out.read_text()
    with pytest.raises(SystemExit, match="scratch_rows"):
        run_table.main(argv + ["--scratch_rows", "GRU4Rec"])


def test_group_sets_are_added_to_a_run_only_when_its_metrics_match(tmp_path):
    spec_e = importlib.util.spec_from_file_location("eval_checkpoint", ROOT / "benchmarks" / "eval_checkpoint.py")
    evalc = importlib.util.module_from_spec(spec_e)
    spec_e.loader.exec_module(evalc)
    groups = {"all": {"n": 2, "ndcg@10": 0.02}}
    run = tmp_path / "run.json"
    run.write_text(json.dumps({**_result(0.02), "test_groups": groups}, indent=1) + "\n")
    sets = {"llmesr": {"users:tail": {"n": 1, "ndcg@10": 0.03}}}
    same = {"test_result": _result(0.02)["test_result"], "test_groups": groups, "test_group_sets": sets}
    evalc.merge_group_sets(str(run), same)
    assert json.loads(run.read_text())["test_group_sets"] == sets and run.read_text().startswith("{\n")
    other = tmp_path / "other.json"
    other.write_text(json.dumps(_result(0.01)))
    with pytest.raises(SystemExit, match="other test metrics"):
        evalc.merge_group_sets(str(other), same)
    assert "test_group_sets" not in json.loads(other.read_text())


def test_group_set_table_is_left_out_when_no_row_has_it_at_every_seed():
    with_sets = {**_result(0.02), "test_group_sets": {"llmesr": {"users:tail": {"n": 1, "ndcg@10": 0.03}}}}
    assert run_table.group_set_tables(["A"], {"A": [with_sets, _result(0.01)]}) == []


def test_cost_times_the_given_models_under_a_preset(tmp_path, small_cfg):
    import yaml

    cost_spec = importlib.util.spec_from_file_location("cost", ROOT / "benchmarks" / "cost.py")
    cost = importlib.util.module_from_spec(cost_spec)
    cost_spec.loader.exec_module(cost)
    preset = tmp_path / "preset.yaml"
    preset.write_text(yaml.safe_dump({**small_cfg, "epochs": 3, "valid_metric": "NDCG@20"}))
    out = tmp_path / "cost.md"
    argv = ["--dataset=tiny", "--preset", str(preset), "--models", "SASRec", "SASRec[hidden_dropout_prob=0.3]",
            "--steps=1", "--rounds=1", "--output", str(out), "--title", "t"]
    assert cost.main(argv) == 0
    text = out.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| SASRec")]
    assert len(rows) == 2 and rows[0].split("|")[3].strip() == "1.00"  # the first spec is the reference
    assert "x first" in text and "'SASRec[hidden_dropout_prob=0.3]'" in text  # reproduce line is quoted
    assert "loss `BCE` (a row's own `loss_type` wins)" in text and "load average" in text


def test_cost_takes_a_packaged_preset_by_name():
    cost_spec = importlib.util.spec_from_file_location("cost", ROOT / "benchmarks" / "cost.py")
    cost = importlib.util.module_from_spec(cost_spec)
    cost_spec.loader.exec_module(cost)
    # the name goes through the packaged-preset resolver (as in run_table), not open() as a path
    with pytest.raises(SystemExit, match="unknown preset.*basrec_official"):
        cost.main(["--dataset=tiny", "--preset", "no_such_preset", "--models", "SASRec"])
    preset, _ = cost.run_settings("full", "basrec_official", {})
    assert preset["aug_rounding"] == "official"


def test_eval_checkpoint_retests_a_checkpoint_with_history_unmasked(small_cfg, capsys):
    from recbole_sada.quick_start import run_recbole_sada

    spec_e = importlib.util.spec_from_file_location("eval_checkpoint", ROOT / "benchmarks" / "eval_checkpoint.py")
    evalc = importlib.util.module_from_spec(spec_e)
    spec_e.loader.exec_module(evalc)
    result = run_recbole_sada("SASRec", "tiny", config_dict={**small_cfg, "eval_mask_history": True,
                                                            "extra_test_modes": ["uni100"]})
    outs = {}
    for flag in (None, "True", "False"):
        argv = [result["model_file"]] + ([] if flag is None else ["--eval_mask_history", flag])
        assert evalc.main(argv) == 0
        outs[flag] = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # as the run was: the run's own test metrics, masked
    assert outs[None]["eval_mask_history"] is True and outs["True"]["test_result"] == outs[None]["test_result"]
    for k, v in result["test_result"].items():
        assert abs(outs[None]["test_result"][k] - v) < 1e-9
    # input items back in the ranking change the ranks (they push a new target down and let a
    # repeated one back in): the same checkpoint, other numbers
    unmasked = outs["False"]
    assert unmasked["eval_mask_history"] is False
    assert unmasked["test_result"] != outs[None]["test_result"]
    # the sampled test of a reloaded checkpoint draws the run's own negatives
    assert evalc.main([result["model_file"], "--test_mode", "uni100"]) == 0
    sampled = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert sampled["test_mode"] == "uni100" and outs[None]["test_mode"] == "full"
    for k, v in result["extra_tests"]["uni100"]["test_result"].items():
        assert abs(sampled["test_result"][k] - v) < 1e-9, k
    assert sampled["test_result"] != outs[None]["test_result"]
    with pytest.raises(SystemExit):
        evalc.main([result["model_file"], "--eval_mask_history", "False", "--into", "x.json"])
    with pytest.raises(SystemExit):
        evalc.main([result["model_file"], "--test_mode", "uni"])
    with pytest.raises(SystemExit, match="dual-view"):  # SASRec has one item table
        evalc.main([result["model_file"], "--view", "id"])
    # one load, several passes: each pass gives what a fresh load gives
    loaded = evalc.Loaded(result["model_file"])
    again = [evalc.evaluate(loaded, eval_mask_history=False), evalc.evaluate(loaded, test_mode="uni100"),
             evalc.evaluate(loaded)]
    assert again[0]["test_result"] == unmasked["test_result"]
    assert again[1]["test_result"] == sampled["test_result"]
    assert again[2]["test_result"] == outs[None]["test_result"] and again[2]["eval_mask_history"] is True


def test_retest_tables_each_protocol_per_model(monkeypatch, tmp_path):
    spec_r = importlib.util.spec_from_file_location("retest", ROOT / "benchmarks" / "retest.py")
    retest = importlib.util.module_from_spec(spec_r)
    spec_r.loader.exec_module(retest)
    scale = {"masked": 1.0, "unmasked": 0.5, "uni100": 8.0}

    def fake_evaluate(path, protocol):
        base = 0.02 if "a" in Path(path).name else 0.04
        v = base * scale[protocol]
        return {"test_result": {m: v for m in retest.METRICS}, "loss_type": "BCE",
                "test_groups": {g: {"ndcg@10": v} for g in retest.GROUPS}}

    monkeypatch.setattr(retest, "evaluate_all", lambda path, protocols: {p: fake_evaluate(path, p) for p in protocols})
    out = tmp_path / "t.md"
    assert retest.main(["--protocols", "masked", "unmasked", "--output", str(out), "--checkpoints",
                        "M:1=a.pth", "M:2=b.pth"]) == 0
    text = out.read_text()
    assert "| M | 1, 2 | masked | 0.0300 |" in text and "| M | 1, 2 | unmasked | 0.0150 |" in text
    assert "| M | | unmasked vs masked | -50.0% |" in text
    assert "--protocols masked unmasked --checkpoints M:1=a.pth M:2=b.pth" in text
    assert "Loss of the runs: `BCE`" in text
    with pytest.raises(SystemExit):
        retest.parse_checkpoint("no-seed.pth")


def test_table_header_states_the_load_the_runs_were_timed_under():
    a, b = {**_result(0.01), "load_average": 1.2}, {**_result(0.02), "load_average": 2.9}
    assert run_table.load_note({"A": [a], "B": [b]}) == "; 1-min load average while the runs were timed 1.2-2.9"
    assert "not recorded for 1 of 2 runs" in run_table.load_note({"A": [a], "B": [_result(0.02)]})
    assert run_table.load_note({"A": [_result(0.01)]}) == "; load while the runs were timed: not recorded"


def test_aug_compare_measures_pseudo_items_against_history_and_heldout():
    from types import SimpleNamespace

    import numpy as np

    spec_a = importlib.util.spec_from_file_location("aug_compare", ROOT / "benchmarks" / "aug_compare.py")
    aug_compare = importlib.util.module_from_spec(spec_a)
    spec_a.loader.exec_module(aug_compare)
    emb = np.eye(6, dtype=np.float32)  # item i has its own axis; id 0 is padding
    d = SimpleNamespace(seqs=[np.array([1, 1]), np.array([2])], uids=[7, 8], heldout={7: [3], 8: [5]})
    pop = np.array([0, 9, 5, 1, 1, 1])
    tail = np.array([False, False, False, True, True, True])
    rows = {0: ([1, 3], 0.5), 1: ([4], 1.0)}
    s = aug_compare.stats(rows, [0, 1], d, emb, pop, tail)
    assert s["pseudo items"] == 3
    assert s["tail share"] == pytest.approx(2 / 3)            # items 3 and 4
    assert s["cosine to history"] == pytest.approx(1 / 3)     # item 1 matches user 0's history
    assert s["held-out hits per 1000"] == pytest.approx(1000 / 3)  # item 3 is user 0's held-out item
    assert s["mean omega"] == pytest.approx(0.75)
    assert s["median popularity"] == 1


def test_a_killed_run_resumes_from_its_last_epoch_with_the_same_result(tmp_path, small_cfg, monkeypatch):
    """The harness gives each run a ``resume_state``: the worker is killed (SIGKILL, as at the end
    of a sitting) once the state of a finished epoch exists; the same run_one call then continues it
    and caches the result of the uninterrupted run (valid curve included); no state file is left."""
    import subprocess
    import time

    cfg = {**small_cfg, "epochs": 8, "stage1_epochs": 2, "stopping_step": 20, "eval_step": 1}
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
    whole = run_table.run_one("BASRecSASRec", "tiny", 3, cfg, str(tmp_path / "a"))
    assert whole["resumed_from"] is None

    log = tmp_path / "b"
    real_run = subprocess.run
    killed = []

    def run_and_kill(cmd, **kw):
        if killed:
            return real_run(cmd, **kw)
        state = next(Path(log).glob("*.state.pth"), None)
        proc = subprocess.Popen(cmd, **kw)
        while proc.poll() is None and state is None:
            state = next(Path(log).glob("*.state.pth"), None)
            time.sleep(0.01)
        proc.kill()
        proc.wait()
        killed.append(state)
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(run_table.subprocess, "run", run_and_kill)
    with pytest.raises(KeyboardInterrupt):
        run_table.run_one("BASRecSASRec", "tiny", 3, cfg, str(log))
    assert killed[0] is not None and killed[0].is_file()  # killed mid-run, with a state on disk
    again = run_table.run_one("BASRecSASRec", "tiny", 3, cfg, str(log))
    assert again["resumed_from"] is not None and 1 <= again["resumed_from"] < 8
    assert again["test_result"] == whole["test_result"]
    assert [c[:2] for c in again["valid_curve"]] == [c[:2] for c in whole["valid_curve"]]
    assert again["epochs_run"] == whole["epochs_run"] == 8
    assert not list(Path(log).glob("*.state.pth*"))


def test_one_run_is_trained_by_one_process_and_an_orphans_result_is_taken(tmp_path, monkeypatch):
    """Two tables asking for the same run at once: the second waits for the first's worker and
    reads its result (one worker started).  A result left by a worker whose table process died
    is cached as it is (no worker started)."""
    import subprocess
    import threading
    import time

    calls = []

    def fake_worker(cmd, **kw):
        calls.append(cmd)
        time.sleep(0.5)
        Path(cmd[6]).write_text(json.dumps(_result(0.03)))
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(run_table.subprocess, "run", fake_worker)
    log = tmp_path / "log"
    results = []
    threads = [threading.Thread(target=lambda: results.append(
        run_table.run_one("SASRec", "tiny", 1, {"epochs": 1}, str(log), store=None))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(results) == 2
    assert results[0]["test_result"] == results[1]["test_result"] == _result(0.03)["test_result"]

    key = run_table.run_key("SASRec", "tiny", 2, {"epochs": 1})[2]
    (log / f"SASRec-tiny-2-{key}.out.json").write_text(json.dumps(_result(0.05)))
    got = run_table.run_one("SASRec", "tiny", 2, {"epochs": 1}, str(log), store=None)
    assert len(calls) == 1 and got["test_result"]["ndcg@10"] == 0.05
    assert (log / f"SASRec-tiny-2-{key}.json").is_file() and not (log / f"SASRec-tiny-2-{key}.out.json").exists()


def test_compare_to_puts_the_second_p_column_and_the_group_list_against_that_row():
    def run(v, tail):
        groups = {"all": {"n": 4, "ndcg@10": v}, "users[0,4)": {"n": 2, "ndcg@10": v},
                  "items:head": {"n": 2, "ndcg@10": v}, "items:tail": {"n": 2, "ndcg@10": tail}}
        return {**_result(v), "test_groups": groups}
    runs = {"S": [run(0.010, 0.001), run(0.011, 0.001), run(0.012, 0.002)],
            "Full": [run(0.040, 0.020), run(0.041, 0.022), run(0.043, 0.021)],
            "NoA": [run(0.030, 0.010), run(0.032, 0.011), run(0.031, 0.010)],
            "NoB": [run(0.040, 0.021), run(0.042, 0.021), run(0.042, 0.022)]}
    models = ["S", "Full", "NoA", "NoB"]
    plain = run_table.render("t", "ml-100k", models, [1, 2, 3], runs, "smoke", {}, "cmd")
    text = run_table.render("t", "ml-100k", models, [1, 2, 3], runs, "smoke", {}, "cmd", compare_to="Full")
    assert "p vs previous" in plain and "p vs `Full`" in text and "against the first row and `Full`" in text
    row = lambda t, m: next(line for line in t.splitlines() if line.startswith(f"| {m} |")).split(" | ")  # noqa: E731
    p_nob = run_table.paired_p([0.040, 0.042, 0.042], [0.040, 0.041, 0.043])
    p_nob_prev = run_table.paired_p([0.040, 0.042, 0.042], [0.030, 0.032, 0.031])
    assert row(text, "NoB")[6] == f"{p_nob:.3g}" and row(plain, "NoB")[6] == f"{p_nob_prev:.3g}"
    assert row(text, "Full")[6] == "-"
    lst = text.split("per group against `Full`")[1]
    assert "- NoA: all -25.0% (p " in lst and "items:tail -50.8%" in lst and "- Full:" not in lst
    assert "per group against" not in plain
    one = {m: rs[:1] for m, rs in runs.items()}  # one seed: the relative differences, no p
    assert "- NoA: all -25.0% (p -)" in run_table.render("t", "ml-100k", models, [1], one, "smoke", {}, "cmd", compare_to="Full")
    with pytest.raises(SystemExit, match="compare_to"):
        run_table.main(["--dataset=ml-100k", "--models", "SASRec", "BASRecSASRec", "--compare_to", "SASRec"])
