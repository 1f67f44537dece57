"""Semantic preprocessing: item/user text, .itememb/.useremb files, clusters, loading, bad input.

Uses the packaged MiniLM encoder with its cache in a temporary folder and a tiny synthetic
dataset (30 users, 40 items with titles); the real ml-100k run happens in CI (CI set) or with SADA_SLOW_TESTS=1.
"""
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from recbole_sada.config import build_config
from recbole_sada.errors import InputError
from recbole_sada.preprocess import run_preprocess
from recbole_sada.preprocess.build import (
    build_semantic_features,
    cluster_users,
    load_train_split,
    training_histories,
)
from recbole_sada.preprocess.text import (
    clean_value,
    compile_template,
    item_texts,
    read_item_table,
    render_user_text,
)
from recbole_sada.semantic import SemanticError, get_encoder
from recbole_sada.semantic.files import (
    NO_CLUSTER,
    check_sidecar,
    ensure_semantic_features,
    feature_paths,
    load_semantic_features,
    read_embedding_file,
)

# RecBole evals string config values: a template like "{title}[ ({genre})]" warns while compiling
pytestmark = pytest.mark.filterwarnings("ignore::SyntaxWarning")

ROOT = Path(__file__).resolve().parents[1]
NAME = "tinysem"
N_USERS, N_ITEMS = 30, 40
GENRES = ["action", "comedy", "drama", "horror", "space opera"]


def title(i):
    """Unique, non-overlapping titles (no title is a substring of another)."""
    return f"<movie {i:03d}> the {GENRES[i % len(GENRES)]} story"


def write_dataset(root, name=NAME, with_item=True, blank_titles=False, seed=0):
    """Atomic files of a tiny dataset; returns ``{user token: item tokens in time order}``.

    Rows are written in shuffled order (the pipeline must sort by timestamp); item i40 has blank
    fields, item i41 appears in .inter but not in .item, item i99 is in .item only.
    """
    rng = random.Random(seed)
    folder = Path(root) / name
    folder.mkdir(parents=True, exist_ok=True)
    sequences, rows = {}, []
    for u in range(1, N_USERS + 1):
        items = rng.sample(range(1, N_ITEMS + 1), rng.randint(6, 11))
        if u == 1:
            items[2] = 41  # an item without a .item row, in user 1's training part
        tokens = [f"i{i}" for i in items]
        sequences[f"u{u}"] = tokens
        times = sorted(rng.sample(range(1000, 9000), len(tokens)))
        rows += [(f"u{u}", t, ts) for t, ts in zip(tokens, times)]
    rng.shuffle(rows)
    with open(folder / f"{name}.inter", "w") as f:
        f.write("user_id:token\titem_id:token\ttimestamp:float\n")
        f.writelines(f"{u}\t{i}\t{t}\n" for u, i, t in rows)
    if with_item:
        with open(folder / f"{name}.item", "w") as f:
            f.write("item_id:token\ttitle:token\tgenre:token_seq\n")
            for i in list(range(1, N_ITEMS + 1)) + [99]:
                blank = blank_titles or i == 40
                genre = GENRES[i % len(GENRES)].replace(" ", "_")
                f.write(f"i{i}\t{'' if blank else title(i)}\t{'' if blank else genre}\n")
    return sequences


def overrides(root, tmp_cache, **extra):
    cfg = {
        "data_path": str(root),
        "cache_dir": str(tmp_cache),
        "n_clusters": 3,
        "item_text_fields": ["title", "genre"],
        "item_text_template": "{title}[ ({genre})]",
        "show_progress": False,
        "state": "WARNING",
        "MAX_ITEM_LIST_LENGTH": 10,
    }
    cfg.update(extra)
    return cfg


def config_for(root, cache, model="SASRec", **extra):
    return build_config(model, NAME, config_dict=overrides(root, cache, **extra))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The tiny dataset preprocessed once: (root, cache, sequences, summary, config)."""
    root = tmp_path_factory.mktemp("semdata")
    cache = tmp_path_factory.mktemp("semcache")
    sequences = write_dataset(root)
    summary = run_preprocess(NAME, config_dict=overrides(root, cache), log=False)
    return root, cache, sequences, summary, config_for(root, cache)


@pytest.fixture(scope="module")
def encoder(built):
    _, cache, _, _, config = built
    return get_encoder(config)


def copy_dataset(src_root, dst_root, name=NAME, features=True):
    dst = Path(dst_root) / name
    dst.mkdir(parents=True, exist_ok=True)
    for path in (Path(src_root) / name).iterdir():
        if features or path.suffix in (".inter", ".item"):
            shutil.copy(path, dst / path.name)
    return dst


def one_line_error(excinfo, *names):
    message = str(excinfo.value)
    assert "\n" not in message
    for name in names:
        assert str(name) in message, message
    return message


# ------------------------------------------------------------------------------ text
def test_default_text_fields_skip_links_and_ids(tmp_path):
    path = tmp_path / "x.item"
    path.write_text("item_id:token\tasin:token\ttitle:token\timUrl:token\tcode:token\tyear:token\tlink2:token\n"
                    "i1\tB000052YAN\tRed lipstick\thttp://a/1.jpg\tX1\t1999\thttp://shop/1\n"
                    "i2\tB00004TMFE\tBlue nail polish\thttp://a/2.jpg\tX2\t1999\twww.shop.com/2\n")
    table = read_item_table(path, "item_id", None)
    assert list(table.columns) == ["title", "year"]  # ids, links and distinct codes are not text
    assert list(read_item_table(path, "item_id", ["title", "asin"]).columns) == ["title", "asin"]  # as asked


def test_clean_value_and_template():
    assert clean_value("'Beauty', 'Makeup', \"Men's\", 'Nail Polish'", "token_seq") == \
        "Beauty, Makeup, Men's, Nail Polish"
    # S3-Rec Beauty.item: apostrophes inside single-quoted names are not escaped
    assert clean_value("'Beauty', 'Fragrance', 'Women's', 'Eau de Parfum'", "token_seq") == \
        "Beauty, Fragrance, Women's, Eau de Parfum"
    assert clean_value("Beauty Nail_Polish  Nail_Polish", "token_seq") == "Beauty Nail Polish"
    assert clean_value("Animation Children's Comedy", "token_seq") == "Animation Children's Comedy"
    assert clean_value("12 ''Pro'' &amp; Co", "token") == '12 "Pro" & Co'
    assert clean_value("1995.0", "float") == "1995"
    # CSV-style quoting, as pandas (hence RecBole) reads it
    assert clean_value('"Tom\'s ""Best"" Shop"', "token") == 'Tom\'s "Best" Shop'
    assert clean_value('"Men\'s", "Nail Polish"', "token_seq") == "Men's, Nail Polish"
    render = compile_template("{t}[ ({y})][. Genres: {g}]", ["t", "y", "g"])
    assert render({"t": "Toy Story", "y": "1995", "g": "Comedy"}) == "Toy Story (1995). Genres: Comedy"
    assert render({"t": "Toy Story", "y": "", "g": "Comedy"}) == "Toy Story. Genres: Comedy"
    assert render({"t": "", "y": "", "g": ""}) == ""
    assert render({"t": "", "y": "", "g": "Drama"}) == "Genres: Drama"
    assert compile_template(None, ["a", "b"])({"a": "x", "b": ""}) == "x"
    for bad in ("{t}[ ({y})", "{t}] x", "{t}[[{y}]]", "{nope}"):
        with pytest.raises(InputError) as excinfo:
            compile_template(bad, ["t", "y"])
        one_line_error(excinfo, "item_text_template")


def test_render_user_text_keeps_most_recent_in_time_order():
    texts = ["a", "b", "", "c", "d"]
    assert render_user_text(texts, 3) == "b; c; d"
    assert render_user_text(texts, 10) == "a; b; c; d"
    # token budget: each text costs 4 tokens (+1 per separator); 9 tokens keep the two newest
    assert render_user_text(texts, 10, [4] * 5, max_tokens=9) == "c; d"
    assert render_user_text(texts, 10, [50] * 5, max_tokens=9) == "d"  # newest always kept
    assert render_user_text([], 5) == ""


# ------------------------------------------------------------------------------ files
def test_files_written_and_well_formed(built):
    root, _, sequences, summary, config = built
    paths = feature_paths(config)
    assert all(p.is_file() for p in paths.values())
    assert all(str(p).startswith(str(root)) for p in paths.values())
    item_tokens, items, _ = read_embedding_file(paths["item"], "item_id", "item_emb")
    user_tokens, users, clusters = read_embedding_file(paths["user"], "user_id", "user_emb", "user_cluster")
    assert items.shape == (N_ITEMS + 1, 384) and users.shape == (N_USERS, 384)
    assert set(item_tokens) == {f"i{i}" for i in range(1, N_ITEMS + 1)} | {"i41"}
    assert set(user_tokens) == set(sequences)
    norms = dict(zip(item_tokens, np.linalg.norm(items, axis=1)))
    assert norms["i40"] == 0 and norms["i41"] == 0  # blank fields / no .item row
    assert all(abs(n - 1) < 1e-4 for t, n in norms.items() if t not in ("i40", "i41"))
    assert set(map(int, clusters)) <= {0, 1, 2}
    info = json.loads(paths["clusters"].read_text())
    distance = np.array(info["distance"])
    assert distance.shape == (3, 3) and np.allclose(distance, distance.T)
    assert np.allclose(np.diag(distance), 0) and (distance[~np.eye(3, dtype=bool)] > 0).all()
    assert sum(info["sizes"]) == N_USERS
    sidecar = json.loads(paths["sidecar"].read_text())
    assert sidecar["dim"] == 384 and sidecar["encoder"]["backend"] == "sentence-transformers"
    assert sidecar["counts"]["items_empty_text"] == 2
    assert sidecar["counts"]["items_missing_from_item_file"] == 1
    assert sidecar["counts"]["item_rows_unused"] == 1  # i99
    assert sidecar["clusters"] == {"n_clusters": 3, "seed": 2020, "n_init": 10,
                                   "method": "scikit-learn KMeans"}
    assert set(sidecar["data_sha256"]) == {"inter", "item"}
    assert summary["encoder_stats"]["model_calls"] > 0


def test_rerun_makes_no_model_calls_and_same_files(built, encoder):
    root, _, _, _, config = built
    paths = feature_paths(config)
    before = {k: paths[k].read_bytes() for k in ("item", "user", "clusters")}
    summary = build_semantic_features(config, log=False, encoder=encoder)
    assert summary["encoder_stats"]["model_calls"] == 0
    assert summary["encoder_stats"]["cache_hits"] == summary["encoder_stats"]["texts"] > 0
    assert {k: paths[k].read_bytes() for k in before} == before


# ------------------------------------------------------------------------------ leakage
def test_user_text_uses_training_items_only(built, encoder):
    root, _, sequences, _, config = built
    raw = pd.read_csv(root / NAME / f"{NAME}.inter", sep="\t", dtype=str)
    raw["t"] = raw["timestamp:float"].astype(float)
    raw = raw.sort_values("t", kind="stable")
    _, train = load_train_split(config)
    histories = training_histories(train)
    table = read_item_table(root / NAME / f"{NAME}.item", "item_id", ["title", "genre"])
    text_of = item_texts(table, ["title", "genre"], config["item_text_template"])
    user_tokens, users, _ = read_embedding_file(feature_paths(config)["user"], "user_id", "user_emb",
                                                "user_cluster")
    written = dict(zip(user_tokens, users))
    for user, group in raw.groupby("user_id:token", sort=False):
        ordered = group["item_id:token"].tolist()
        assert ordered == sequences[user]
        assert histories[user] == ordered[:-2]  # valid and test dropped, time order kept
        text = render_user_text([text_of.get(t, "") for t in histories[user]], 20)
        for held_out in ordered[-2:]:
            assert title(int(held_out[1:])) not in text
        for seen in ordered[-8:-2]:
            if text_of.get(seen):
                assert text_of[seen] in text
        # the written vector is the encoding of that text (budget not binding on tiny texts)
        assert np.allclose(written[user], encoder.encode([text])[0], atol=1e-5)


def test_kmeans_is_deterministic_with_its_seed():
    vectors = np.random.default_rng(1).normal(size=(60, 8)).astype(np.float32)
    vectors[5] = 0  # no text: no cluster
    a, da = cluster_users(vectors, 4, seed=7)
    b, db = cluster_users(vectors, 4, seed=7)
    assert (a == b).all() and np.array_equal(da, db)
    assert a[5] == NO_CLUSTER and set(a[a >= 0]) == {0, 1, 2, 3}
    with pytest.raises(InputError) as excinfo:
        cluster_users(vectors[:3], 4, seed=7)
    one_line_error(excinfo, "n_clusters")


# ------------------------------------------------------------------------------ loading
def test_loading_aligns_with_remapped_ids(built):
    from recbole_sada.data import create_dataset

    root, _, _, _, config = built
    dataset = create_dataset(config)
    feats = load_semantic_features(config, dataset, log=False)
    paths = feature_paths(config)
    item_tokens, items, _ = read_embedding_file(paths["item"], "item_id", "item_emb")
    user_tokens, users, clusters = read_embedding_file(paths["user"], "user_id", "user_emb", "user_cluster")
    assert feats.item_semantic.shape == (dataset.item_num, 384)
    assert feats.user_semantic.shape == (dataset.user_num, 384)
    assert feats.item_semantic.dtype == torch.float32 and feats.user_cluster.dtype == torch.int64
    assert feats.item_semantic[0].abs().sum() == 0 and feats.user_semantic[0].abs().sum() == 0
    assert feats.user_cluster[0] == NO_CLUSTER
    for token, vector in zip(item_tokens, items):
        assert torch.equal(feats.item_semantic[dataset.token2id("item_id", token)], torch.from_numpy(vector))
    for token, vector, cluster in zip(user_tokens, users, clusters):
        uid = dataset.token2id("user_id", token)
        assert torch.equal(feats.user_semantic[uid], torch.from_numpy(vector))
        assert feats.user_cluster[uid] == int(cluster)
    assert feats.dim == 384 and feats.n_clusters == 3
    assert feats.cluster_nearest.shape == (3, 2)
    for c in range(3):
        others = feats.cluster_nearest[c].tolist()
        assert c not in others
        assert feats.cluster_distance[c, others[0]] <= feats.cluster_distance[c, others[1]]


def test_ensure_builds_missing_files_and_keeps_rng(built, tmp_path):
    src_root, cache, _, _, _ = built
    copy_dataset(src_root, tmp_path, features=False)
    config = config_for(tmp_path, cache)
    torch.manual_seed(3)
    expected = torch.rand(3)
    torch.manual_seed(3)
    sidecar = ensure_semantic_features(config, log=False)
    assert torch.equal(torch.rand(3), expected)
    assert sidecar["dim"] == 384 and all(p.is_file() for p in feature_paths(config).values())


def test_pca_to_semantic_dim(built, encoder, tmp_path):
    src_root, cache, _, _, _ = built
    copy_dataset(src_root, tmp_path, features=False)
    config = config_for(tmp_path, cache, semantic_dim=8)
    summary = build_semantic_features(config, log=False, encoder=encoder)
    assert summary["dim"] == 8 and summary["pca"]["from_dim"] == 384
    assert summary["encoder_stats"]["model_calls"] == 0
    _, items, _ = read_embedding_file(feature_paths(config)["item"], "item_id", "item_emb")
    assert items.shape[1] == 8


def plant_held_out_items(root, variant, n=4):
    """Give users u1..u<n> a last interaction (their test item) with an item no one else has,
    titled differently in each ``variant``: those items occur only in held-out interactions."""
    folder = Path(root) / NAME
    with open(folder / f"{NAME}.inter", "a") as f:
        f.writelines(f"u{u}\th{u}\t99999\n" for u in range(1, n + 1))
    with open(folder / f"{NAME}.item", "a") as f:
        f.writelines(f"h{u}\t{variant} held-out product number {u * 7}\tsurprise\n" for u in range(1, n + 1))


def test_held_out_only_items_are_encoded_but_never_fit_on(built, encoder, tmp_path):
    """Two copies that differ only in the texts of items seen only in test interactions give the
    same training-derived features: user vectors, clusters, and the PCA of every other item."""
    src_root, cache, _, _, _ = built
    out = {}
    for variant in ("alpha", "omega"):
        root = tmp_path / variant
        copy_dataset(src_root, root, features=False)
        plant_held_out_items(root, variant)
        config = config_for(root, cache, semantic_dim=8)
        summary = build_semantic_features(config, log=False, encoder=encoder)
        paths = feature_paths(config)
        items = dict(zip(*read_embedding_file(paths["item"], "item_id", "item_emb")[:2]))
        out[variant] = (summary, items, paths["user"].read_text())
    (sa, ia, ua), (so, io, uo) = out["alpha"], out["omega"]
    assert sa["pca"]["fit_items"] == so["pca"]["fit_items"] < sa["counts"]["items"]
    assert ua == uo  # user embeddings and cluster labels, byte for byte
    trained = [t for t in ia if not str(t).startswith("h")]
    assert all(np.array_equal(ia[t], io[t]) for t in trained)
    assert not np.allclose(ia["h1"], io["h1"])  # held-out items are still encoded (their own text)


def test_features_reduced_by_an_older_pca_are_refused(built, encoder, tmp_path):
    src_root, cache, _, _, _ = built
    copy_dataset(src_root, tmp_path, features=False)
    config = config_for(tmp_path, cache, semantic_dim=8)
    build_semantic_features(config, log=False, encoder=encoder)
    sidecar_path = feature_paths(config)["sidecar"]
    record = json.loads(sidecar_path.read_text())
    del record["pca"]["fit_items"]
    sidecar_path.write_text(json.dumps(record))
    with pytest.raises(InputError) as excinfo:
        check_sidecar(config)
    one_line_error(excinfo, "PCA", "rebuild")


# ------------------------------------------------------------------------------ bad input
def test_missing_item_file(tmp_path):
    write_dataset(tmp_path, with_item=False)
    with pytest.raises(InputError) as excinfo:
        run_preprocess(NAME, config_dict=overrides(tmp_path, tmp_path / "c"), log=False)
    one_line_error(excinfo, tmp_path / NAME / f"{NAME}.item")


def test_field_absent_from_item_file(tmp_path):
    write_dataset(tmp_path)
    cfg = overrides(tmp_path, tmp_path / "c", item_text_fields=["title", "plot"])
    with pytest.raises(InputError) as excinfo:
        run_preprocess(NAME, config_dict=cfg, log=False)
    one_line_error(excinfo, "'plot'", f"{NAME}.item", "item_text_fields")


def test_all_texts_empty(tmp_path):
    write_dataset(tmp_path, blank_titles=True)
    with pytest.raises(InputError) as excinfo:
        run_preprocess(NAME, config_dict=overrides(tmp_path, tmp_path / "c"), log=False)
    one_line_error(excinfo, f"{NAME}.item", "empty")


def test_unknown_encoder_backend(tmp_path):
    write_dataset(tmp_path)
    cfg = overrides(tmp_path, tmp_path / "c", encoder_backend="word2vec")
    with pytest.raises(SemanticError) as excinfo:
        run_preprocess(NAME, config_dict=cfg, log=False)
    one_line_error(excinfo, "encoder_backend", "word2vec")


def test_missing_features_with_building_disabled(built, tmp_path):
    copy_dataset(built[0], tmp_path, features=False)
    config = config_for(tmp_path, built[1], semantic_auto_build=False)
    with pytest.raises(InputError) as excinfo:
        ensure_semantic_features(config)
    one_line_error(excinfo, f"{NAME}.itememb", "python -m recbole_sada.preprocess --dataset=tinysem")


def test_dimension_mismatch(built):
    root, cache, _, _, _ = built
    config = config_for(root, cache, semantic_dim=16)
    with pytest.raises(InputError) as excinfo:
        ensure_semantic_features(config)
    one_line_error(excinfo, f"{NAME}.itememb", "semantic_dim", "384")


def test_feature_ids_the_dataset_lacks(built, tmp_path):
    from recbole_sada.data import create_dataset

    copy_dataset(built[0], tmp_path)
    config = config_for(tmp_path, built[1])
    item_file = feature_paths(config)["item"]
    with open(item_file, "a") as f:
        f.write("zzz\t" + " ".join(["0.5"] * 384) + "\n")
    with pytest.raises(InputError) as excinfo:
        load_semantic_features(config, create_dataset(config), log=False)
    one_line_error(excinfo, item_file, "'zzz'")


def test_corrupt_embedding_rows(built, tmp_path):
    from recbole_sada.data import create_dataset

    copy_dataset(built[0], tmp_path)
    config = config_for(tmp_path, built[1])
    user_file = feature_paths(config)["user"]
    lines = user_file.read_text().splitlines()
    token, values, cluster = lines[1].split("\t")
    lines[1] = "\t".join([token, values.rsplit(" ", 1)[0], cluster])
    user_file.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError) as excinfo:
        load_semantic_features(config, create_dataset(config), log=False)
    one_line_error(excinfo, user_file, "lengths")


def test_sidecar_mismatch(built, tmp_path):
    copy_dataset(built[0], tmp_path)
    config = config_for(tmp_path, built[1])
    with open(tmp_path / NAME / f"{NAME}.item", "a") as f:
        f.write("i100\tone more title\tdrama\n")  # the data changed after preprocessing
    with pytest.raises(InputError) as excinfo:
        ensure_semantic_features(config)
    one_line_error(excinfo, f"{NAME}.semantic.json", f"{NAME}.item", "SHA-256",
                   "python -m recbole_sada.preprocess")


def test_cli_exit_code_2_on_bad_input(tmp_path):
    write_dataset(tmp_path, with_item=False)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, "-m", "recbole_sada.preprocess", f"--dataset={NAME}",
         f"--data_path={tmp_path}", f"--cache_dir={tmp_path / 'c'}", "--show_progress=False"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    lines = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
    assert len(lines) == 1 and f"{NAME}.item" in lines[0]


# ------------------------------------------------------------------------------ ml-100k
@pytest.mark.skipif(not (os.environ.get("SADA_SLOW_TESTS") or os.environ.get("CI")),
                    reason="real ml-100k preprocessing (~85 s of CPU): runs in CI or with SADA_SLOW_TESTS=1")
def test_ml100k_end_to_end(tmp_path):
    from recbole_sada.data import create_dataset

    cfg = {"data_path": str(tmp_path), "cache_dir": str(tmp_path / "cache"), "show_progress": False,
           "state": "WARNING", "n_clusters": 5}
    start = time.time()
    summary = run_preprocess("ml-100k", config_dict=cfg, log=False)
    assert time.time() - start < 600
    assert (tmp_path / "ml-100k" / "ml-100k.inter").is_file()  # copied from the recbole package
    assert summary["counts"]["items"] == 1682 and summary["counts"]["users"] == 943
    config = build_config("SASRec", "ml-100k", config_dict=cfg)
    assert Path(config["data_path"]).resolve() == (tmp_path / "ml-100k").resolve()
    feats = load_semantic_features(config, create_dataset(config), log=False)
    assert feats.item_semantic.shape == (1683, 384) and feats.n_clusters == 5
    assert (feats.user_cluster[1:] >= 0).all()


def test_prepare_builds_features_before_the_dataset_and_models_read_them_from_it(built, tmp_path, monkeypatch):
    """Side files are data: ``prepare`` builds missing features for a model that needs them
    before any dataset exists; the model reads them from the dataset, not from the files."""
    import recbole_sada.quick_start as qs

    copy_dataset(built[0], tmp_path, features=False)
    seen = []
    real = qs.create_dataset
    monkeypatch.setattr(qs, "create_dataset", lambda config: seen.append(
        all(p.is_file() for p in feature_paths(config).values())) or real(config))
    config, data, train_data, _, _ = qs.prepare("SADASASRec", NAME, None, overrides(tmp_path, built[1]), ())
    assert seen == [True]
    feats = train_data._dataset.semantic_features()
    assert train_data._dataset.semantic_features() is feats  # loaded once
    model = qs.get_model("SADASASRec")(config, train_data._dataset)
    assert torch.equal(model.item_semantic, feats.item_semantic.float())
    # a model that needs no features builds none
    other = tmp_path / "plain"
    copy_dataset(built[0], other, features=False)
    seen.clear()
    qs.prepare("SASRec", NAME, None, overrides(other, built[1]), ())
    assert seen == [False]
