"""Group metrics, multi-seed statistics and augmentation similarity.

Hand-computed group metrics, popularity/length from the train split only (no leakage), the group
"all" (and a single user group) equal to RecBole's own HR/NDCG from the same evaluation pass, the
CLI table / json, mean +- std and paired t-tests on fixed numbers, cosine similarity cases.
"""
import json
import math
from collections import Counter

import numpy as np
import pytest
import torch

from recbole_sada.evaluation.groups import (
    GroupEvaluator,
    format_group_table,
    group_metrics,
    head_item_mask,
    item_train_popularity,
    metrics_from_ranks,
    user_group_labels,
    user_train_lengths,
)
from recbole_sada.evaluation.significance import (
    compare,
    format_markdown_table,
    mean_std,
    paired_ttest,
    run_seeds,
    summarize,
)
from recbole_sada.evaluation.relevance import augmentation_similarity

L2, L3 = 1 / math.log2(3), 1 / math.log2(4)  # DCG gains of ranks 2 and 3


# ------------------------------------------------------------------------------------ groups
def test_metrics_from_ranks_hand_computed():
    # ranks 1, miss, 3, 2, 5 for users 1..5
    out = metrics_from_ranks([1, 2, 3, 4, 5], [1, 0, 3, 2, 5], topk=[1, 3])
    assert out["n"] == 5
    assert out["hit@1"] == pytest.approx(0.2)
    assert out["hit@3"] == pytest.approx(0.6)
    assert out["ndcg@1"] == pytest.approx(0.2)
    assert out["ndcg@3"] == pytest.approx((1 + L3 + L2) / 5)


def test_metrics_from_ranks_several_positives_and_empty():
    # one user, two positives at ranks 1 and (not in top 2): DCG 1, ideal DCG 1 + 1/log2(3)
    out = metrics_from_ranks(["a", "a"], [1, 0], topk=[2])
    assert out["n"] == 1 and out["hit@2"] == 1.0
    assert out["ndcg@2"] == pytest.approx(1 / (1 + L2))
    empty = metrics_from_ranks([], [], topk=[10])
    assert empty["n"] == 0 and empty["hit@10"] is None and empty["ndcg@10"] is None


def test_group_metrics_hand_computed():
    users = np.array([1, 2, 3, 4, 5])
    items = np.array([10, 11, 12, 13, 14])
    ranks = np.array([1, 0, 3, 2, 5])
    lengths = np.zeros(6, dtype=int)
    lengths[1:] = [2, 3, 4, 5, 7]  # -> [0,4): u1 u2; [4,6): u3 u4; [6,inf): u5
    head = np.zeros(15, dtype=bool)
    head[[10, 13]] = True  # users 1 and 4 have a head test item
    g = group_metrics(users, items, ranks, lengths, head, topk=[1, 3], edges=[4, 6])
    assert list(g) == ["all", "users[0,4)", "users[4,6)", "users[6,inf)", "items:head", "items:tail"]
    assert [g[k]["n"] for k in g] == [5, 2, 2, 1, 2, 3]
    assert g["users[0,4)"]["hit@1"] == pytest.approx(0.5)
    assert g["users[0,4)"]["ndcg@3"] == pytest.approx(0.5)
    assert g["users[4,6)"]["hit@1"] == 0.0
    assert g["users[4,6)"]["hit@3"] == pytest.approx(1.0)
    assert g["users[4,6)"]["ndcg@3"] == pytest.approx((L3 + L2) / 2)
    assert g["users[6,inf)"]["hit@3"] == 0.0 and g["users[6,inf)"]["ndcg@3"] == 0.0
    assert g["items:head"]["hit@3"] == pytest.approx(1.0)
    assert g["items:head"]["ndcg@3"] == pytest.approx((1 + L2) / 2)
    assert g["items:tail"]["hit@3"] == pytest.approx(1 / 3)
    assert g["items:tail"]["ndcg@3"] == pytest.approx(L3 / 3)
    # rounding as RecBole's metric_decimal_place
    rounded = group_metrics(users, items, ranks, lengths, head, topk=[3], edges=[4, 6], decimals=4)
    assert rounded["all"]["ndcg@3"] == round((1 + L3 + L2) / 5, 4)
    table = format_group_table(g, title="test")
    assert "users[4,6)" in table and "items:tail" in table and "0.5655" in table


def test_head_item_mask_and_labels():
    pop = np.array([0, 5, 0, 3, 3, 1, 9, 2, 0, 4, 7])  # id 0 = padding; 10 real items
    assert np.flatnonzero(head_item_mask(pop, 0.2)).tolist() == [6, 10]
    assert np.flatnonzero(head_item_mask(pop, 0.3)).tolist() == [1, 6, 10]
    # ties (items 3 and 4, 3 interactions each): the smaller id is the more popular
    assert np.flatnonzero(head_item_mask(pop, 0.5)).tolist() == [1, 3, 6, 9, 10]
    assert not head_item_mask(pop, 1.0)[0]
    with pytest.raises(ValueError):
        head_item_mask(pop, 1.5)
    assert user_group_labels([4, 6]) == ["users[0,4)", "users[4,6)", "users[6,inf)"]
    with pytest.raises(ValueError):
        user_group_labels([6, 4])


# ------------------------------------------------------------------------------------ with RecBole
@pytest.fixture(scope="module")
def trained(tiny_root, tmp_path_factory):
    """SASRec trained one epoch on the tiny dataset (sequence mode), its data and result."""
    from recbole_sada.quick_start import prepare, run_recbole_sada

    cfg = {
        "data_path": str(tiny_root), "checkpoint_dir": str(tmp_path_factory.mktemp("saved")),
        "epochs": 1, "hidden_size": 16, "inner_size": 32, "n_layers": 1, "n_heads": 1,
        "train_batch_size": 32, "eval_batch_size": 16, "MAX_ITEM_LIST_LENGTH": 10,
        "show_progress": False, "state": "WARNING", "train_mode": "sequence", "topk": [1, 5, 10],
    }
    prepared = prepare("SASRec", "tiny", config_dict=cfg)
    result = run_recbole_sada(prepared=prepared)
    return prepared, result


def test_groups_match_recbole_overall(trained):
    (config, _, train_data, valid_data, test_data), result = trained
    groups = result["test_groups"]
    for key, value in result["test_result"].items():  # eval_batch_size 16: several batches
        assert groups["all"][key] == pytest.approx(value, abs=1e-12), key
    n = groups["all"]["n"]
    assert n == test_data._dataset.user_num - 1  # every real user has one test item
    assert sum(v["n"] for k, v in groups.items() if k.startswith("users")) == n
    assert groups["items:head"]["n"] + groups["items:tail"]["n"] == n
    # a single user group holding everyone is RecBole's overall result too (valid split here)
    config["user_group_edges"] = []  # no edges: one user group, users[0,inf)
    trainer = result["trainer"]
    grouped = GroupEvaluator(config, train_data._dataset)
    with grouped.recording(trainer):
        valid_result = trainer.evaluate(valid_data, load_best_model=False)
    assert "_full_sort_batch_eval" not in vars(trainer)  # the wrapper is gone afterwards
    one = grouped.result()
    assert list(one) == ["all", "users[0,inf)", "items:head", "items:tail"]
    for key, value in valid_result.items():
        assert one["users[0,inf)"][key] == pytest.approx(value, abs=1e-12), key
    config["user_group_edges"] = None


def test_popularity_and_lengths_use_train_split_only(trained, tiny_root):
    (config, data, train_data, _, _), _ = trained
    # the raw sequences, read back from the atomic file written by the fixture
    seqs = {}
    with open(tiny_root / "tiny" / "tiny.inter") as f:
        next(f)
        for line in f:
            user, item, _ = line.rstrip("\n").split("\t")
            seqs.setdefault(user, []).append(item)
    train_counts = Counter(i for s in seqs.values() for i in s[:-2])  # leave-one-out: drop valid+test
    popularity = item_train_popularity(train_data._dataset)
    lengths = user_train_lengths(train_data._dataset)
    for token, count in train_counts.items():
        assert popularity[data.token2id("item_id", token)] == count
    assert popularity.sum() == sum(train_counts.values())
    for user, s in seqs.items():
        assert lengths[data.token2id("user_id", user)] == len(s) - 2


def test_cli_prints_groups_and_writes_json(tiny_root, tmp_path, capsys):
    import run_recbole_sada

    out = tmp_path / "run.json"
    rc = run_recbole_sada.main([
        "--model=SASRec", "--dataset=tiny", f"--data_path={tiny_root}", f"--checkpoint_dir={tmp_path}",
        "--epochs=1", "--hidden_size=8", "--inner_size=16", "--n_layers=1", "--n_heads=1",
        "--MAX_ITEM_LIST_LENGTH=10", "--show_progress=False", "--state=WARNING", "--train_mode=sequence",
        "--user_group_edges=[5,8]", f"--result_json={out}",
    ])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "test, by group" in printed and "users[5,8)" in printed and "items:head" in printed
    saved = json.loads(out.read_text())
    assert saved["model"] == "SASRec" and saved["seed"] == 2020
    assert saved["test_groups"]["all"]["hit@10"] == saved["test_result"]["hit@10"]
    assert set(saved["test_groups"]) >= {"users[0,5)", "users[5,8)", "users[8,inf)"}


# ------------------------------------------------------------------------------------ significance
A = [0.30, 0.32, 0.31, 0.35]
B = [0.28, 0.30, 0.30, 0.31]


def test_mean_std_and_paired_ttest_fixed_numbers():
    assert mean_std([1, 2, 3, 4]) == pytest.approx((2.5, 1.2909944))
    assert mean_std([0.7]) == (0.7, 0.0)
    t, p = paired_ttest(A, B)
    # differences 0.02 0.02 0.01 0.04: mean 0.0225, sd 0.012583, t = 0.0225 / (sd / 2)
    assert t == pytest.approx(3.5762374, rel=1e-6)
    assert p == pytest.approx(0.0373861, rel=1e-5)
    assert paired_ttest(B, A)[0] == pytest.approx(-t)
    assert all(math.isnan(v) for v in paired_ttest([1, 2, 3], [0, 1, 2]))  # constant difference
    with pytest.raises(ValueError):
        paired_ttest([1, 2], [1, 2, 3])


def _runs(values, seeds=(1, 2, 3, 4)):
    return {s: {"test_result": {"ndcg@10": v, "hit@10": 2 * v}} for s, v in zip(seeds, values)}


def test_compare_summarize_and_table():
    runs = {"SASRec": _runs(B), "SADASASRec": _runs(A)}
    summary = summarize(runs["SADASASRec"])
    assert summary["ndcg@10"] == pytest.approx((0.32, np.std(A, ddof=1)))
    assert list(summary) == ["ndcg@10", "hit@10"]
    cmp = compare(runs["SADASASRec"], runs["SASRec"], metrics=["ndcg@10"])
    assert cmp["ndcg@10"]["diff"] == pytest.approx(0.0225)
    assert cmp["ndcg@10"]["p"] == pytest.approx(0.0373861, rel=1e-5)
    table = format_markdown_table(runs, metrics=["ndcg@10"], baseline="SASRec")
    lines = table.splitlines()
    assert lines[0] == "| model | seeds | ndcg@10 |"
    assert lines[2] == "| SASRec | 4 | 0.2975 ± 0.0126 |"
    assert lines[3] == "| SADASASRec | 4 | 0.3200 ± 0.0216 (p=0.037) |"
    with pytest.raises(ValueError):
        compare(_runs(A, seeds=(1, 2, 3, 5)), _runs(B))
    with pytest.raises(ValueError):
        format_markdown_table(runs, baseline="GRU4Rec")


def test_run_seeds_with_callable():
    seen = []

    def run(seed):
        seen.append(seed)
        return {"ndcg@10": seed / 100}

    runs = run_seeds(run, seeds=[3, 1, 2])
    assert list(runs) == [3, 1, 2] and seen == [3, 1, 2]
    assert summarize(runs)["ndcg@10"] == pytest.approx((0.02, 0.01))
    with pytest.raises(ValueError):
        run_seeds(run, seeds=[1, 1])


# ------------------------------------------------------------------------------------ similarity
def test_augmentation_similarity_cases():
    torch.manual_seed(0)
    H = torch.randn(3, 4, 8, requires_grad=True)
    assert augmentation_similarity(H, H.clone()).item() == pytest.approx(1.0, abs=1e-6)
    assert augmentation_similarity(H, -H).item() == pytest.approx(-1.0, abs=1e-6)
    assert augmentation_similarity(H, 2.5 * H).item() == pytest.approx(1.0, abs=1e-6)  # scale-free
    assert not augmentation_similarity(H, H).requires_grad
    e = torch.eye(2)
    assert augmentation_similarity(e[:1], e[1:]).item() == pytest.approx(0.0)  # orthogonal, (B, d)


def test_augmentation_similarity_mask():
    H = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]]])  # (1, 3, 2); position 2 = padding
    H_aug = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [-5.0, -5.0]]])
    mask = torch.tensor([[True, True, False]])
    # cosines 1 and 0 on the real positions; the padding (cosine -1) is ignored
    assert augmentation_similarity(H, H_aug, mask).item() == pytest.approx(0.5)
    assert augmentation_similarity(H, H_aug, mask.long()).item() == pytest.approx(0.5)
    assert augmentation_similarity(H, H_aug).item() == pytest.approx(0.0, abs=1e-6)
    assert math.isnan(augmentation_similarity(H, H_aug, torch.zeros(1, 3, dtype=torch.bool)).item())
    with pytest.raises(ValueError):
        augmentation_similarity(H, H_aug[:, :2])
    with pytest.raises(ValueError):
        augmentation_similarity(H, H_aug, mask[:, :2])


@pytest.mark.parametrize("train_mode", ["sequence", "prefix"])
def test_groups_match_recbole_in_sampled_mode(tiny_root, tmp_path, train_mode):
    """uni100 (the LLMSeR / LLM-ESR tables' protocol): the test pass ranks the positive against
    sampled negatives; the groups are read from the same scores and reproduce RecBole's values."""
    from recbole_sada.quick_start import run_recbole_sada

    cfg = {
        "data_path": str(tiny_root), "checkpoint_dir": str(tmp_path), "epochs": 1, "hidden_size": 16,
        "inner_size": 32, "n_layers": 1, "n_heads": 1, "train_batch_size": 32, "eval_batch_size": 16,
        "MAX_ITEM_LIST_LENGTH": 10, "show_progress": False, "state": "WARNING", "train_mode": train_mode,
        "topk": [1, 5, 10], "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user",
                                          "mode": "uni20"},
    }
    result = run_recbole_sada("SASRec", "tiny", config_dict=cfg)
    assert result["config"]["eval_args"]["mode"] in ("uni20", {"valid": "uni20", "test": "uni20"})
    groups = result["test_groups"]
    assert groups is not None
    for key, value in result["test_result"].items():
        assert groups["all"][key] == pytest.approx(value, abs=1e-12), key
    n = groups["all"]["n"]
    assert n > 0 and sum(v["n"] for k, v in groups.items() if k.startswith("users")) == n
    assert "_neg_sample_batch_eval" not in vars(result["trainer"])
    # 20 negatives + the positive: hit@10 of a sampled ranking is far above that of full ranking
    assert result["test_result"]["hit@10"] > 0.2


def test_partial_eval_args_keep_the_leave_one_out_split(tiny_root, tmp_path):
    """--eval_args="{'mode': 'uni100'}" changes the mode only; RecBole alone would replace the
    whole dict and split randomly 8:1:1."""
    from recbole_sada.config import build_config

    config = build_config("SASRec", "tiny", config_dict={"data_path": str(tiny_root), "state": "ERROR"},
                          cmd_args=["--eval_args={'mode': 'uni100'}"])
    args = config["eval_args"]
    assert args["split"] == {"LS": "valid_and_test"} and args["order"] == "TO" and args["group_by"] == "user"
    assert args["mode"] in ("uni100", {"valid": "uni100", "test": "uni100"})


def test_extra_test_mode_is_a_second_pass_of_the_same_model(tiny_root, tmp_path):
    """extra_test_modes: [uni20] tests the best model again with sampled negatives; the full-ranking
    result is unchanged and the sampled pass has its own group metrics."""
    from recbole_sada.quick_start import run_recbole_sada

    cfg = {
        "data_path": str(tiny_root), "checkpoint_dir": str(tmp_path), "epochs": 1, "hidden_size": 16,
        "inner_size": 32, "n_layers": 1, "n_heads": 1, "train_batch_size": 32, "eval_batch_size": 16,
        "MAX_ITEM_LIST_LENGTH": 10, "show_progress": False, "state": "WARNING", "train_mode": "sequence",
        "topk": [1, 5, 10], "valid_metric": "NDCG@10",
    }
    plain = run_recbole_sada("SASRec", "tiny", config_dict=cfg)
    both = run_recbole_sada("SASRec", "tiny", config_dict={**cfg, "extra_test_modes": ["uni20"]})
    assert both["test_result"] == plain["test_result"] and plain["extra_tests"] == {}
    sampled = both["extra_tests"]["uni20"]
    assert both["config"]["eval_args"]["mode"]["test"] == "full"  # config restored
    for key, value in sampled["test_result"].items():
        assert sampled["test_groups"]["all"][key] == pytest.approx(value, abs=1e-12), key
    assert sampled["test_result"]["hit@10"] > both["test_result"]["hit@10"]
    # the same test users fall into the same groups as in the full-ranking pass (user ids read right)
    assert {g: v["n"] for g, v in sampled["test_groups"].items()} == {g: v["n"] for g, v in both["test_groups"].items()}


@pytest.mark.parametrize("value", ["['uni']", "['full', 'uni0']", "['top100']"])
def test_bad_extra_test_mode_is_refused_before_training(tiny_root, value):
    from recbole_sada.config import build_config
    from recbole_sada.errors import InputError

    with pytest.raises(InputError, match="extra_test_modes.*uni<N>"):
        build_config("SASRec", "tiny", config_dict={"data_path": str(tiny_root), "state": "ERROR"},
                     cmd_args=[f"--extra_test_modes={value}"])
    one = build_config("SASRec", "tiny", config_dict={"data_path": str(tiny_root), "state": "ERROR",
                                                      "extra_test_modes": "uni100"})
    assert one["extra_test_modes"] == ["uni100"]  # a single mode need not be a list


def test_group_sets_regroup_the_same_ranks(trained):
    """A second group definition (LLM-ESR's long tail) from the same recorded ranks: the default
    definition written out again gives the main groups; a count threshold splits items by it."""
    from recbole_sada.evaluation.groups import item_train_popularity

    (config, _, train_data, _, test_data), result = trained
    trainer = result["trainer"]
    config["group_sets"] = {"same": {}, "llmesr": {"user_group_edges": [7], "item_tail_below": 4}}
    try:
        grouped = GroupEvaluator(config, train_data._dataset)
        with grouped.recording(trainer):
            trainer.evaluate(test_data, load_best_model=False)
        main, sets = grouped.result(), grouped.set_results()
    finally:
        config["group_sets"] = None
    assert sets["same"] == main
    alt = sets["llmesr"]
    assert list(alt) == ["all", "users[0,7)", "users[7,inf)", "items:head", "items:tail"]
    users, items, _ = grouped.recorder.arrays()
    pop = item_train_popularity(train_data._dataset)
    assert alt["items:tail"]["n"] == int((pop[items] < 4).sum())
    assert alt["items:head"]["n"] + alt["items:tail"]["n"] == alt["all"]["n"] == main["all"]["n"]
    with pytest.raises(ValueError, match="item_tail_below"):
        config["group_sets"] = {"bad": {"item_tail_below": 0}}
        try:
            GroupEvaluator(config, train_data._dataset)
        finally:
            config["group_sets"] = None


def test_bad_group_sets_is_a_one_line_error_before_training(tiny_root):
    from recbole_sada.config import build_config
    from recbole_sada.errors import InputError

    with pytest.raises(InputError) as err:
        build_config("SASRec", "tiny", config_dict={"data_path": str(tiny_root), "state": "WARNING",
                                                    "group_sets": {"x": {"item_tail_below": 0}}})
    assert "group_sets.x.item_tail_below" in str(err.value) and "--group_sets" in str(err.value)
    assert "\n" not in str(err.value)

