"""Semantic preprocessing benchmark -> results/semantic.md.

    python benchmarks/semantic_encode.py [--s3rec-dir ../shared/datasets/s3rec] [--data-path DIR]
        [--out results/semantic.md] [--repeats 3] [--beauty-repeats 1] [--limit N] [--no-users]

1. Encoding throughput (items/s) of the plugin's cached encoder path on the ml-100k item texts and
   the 12,101 Beauty item texts, against ``SentenceTransformer.encode`` called directly on the same
   texts with the same loaded model (fresh cache for every timed plugin run; runs alternate).
2. A second pass through the same cache: model calls (must be 0) and time.
3. The whole preprocessing (``build_semantic_features``) of both datasets, run twice: items/s,
   users/s, K-means time, model calls of the rerun.
4. Sanity tables: the 5 nearest items (cosine of the written item embeddings) of 10 well-known
   ml-100k movies and of the 10 most popular Beauty products; users clusters of both datasets
   summarised by the most common categories / genres of their training items.

Beauty comes from the S3-Rec files (``Beauty.txt`` + ``Beauty.item``), converted with
``dataset_scripts/s3rec_to_atomic.py`` into ``<data-path>/beauty`` when absent; without them the
Beauty parts are skipped with a message.  ``--limit`` caps the texts of section 1 (smoke runs).
"""
import argparse
import os
import platform
import re
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WELL_KNOWN_MOVIES = [
    "Toy Story (1995)", "Star Wars (1977)", "Fargo (1996)", "Godfather, The (1972)",
    "Pulp Fiction (1994)", "Silence of the Lambs, The (1991)", "Titanic (1997)",
    "Jurassic Park (1993)", "Schindler's List (1993)", "Aliens (1986)",
]


def cpu_name():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def short(text, width=70):
    text = str(text)
    return text if len(text) <= width else text[: width - 1] + "…"


def md_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c).replace("|", "/") for c in row) + " |" for row in rows]
    return "\n".join(lines)


# ------------------------------------------------------------------------------ data
def make_config(dataset, data_path, cache_dir):
    from recbole_sada.config import build_config

    return build_config("SASRec", dataset, config_dict={
        "data_path": str(data_path), "cache_dir": str(cache_dir), "show_progress": False,
        "state": "WARNING"})


def prepare_beauty(s3rec_dir, data_path):
    """``<data_path>/beauty`` from the S3-Rec files; None (with a message) when they are absent."""
    folder = Path(data_path) / "beauty"
    if (folder / "beauty.inter").is_file() and (folder / "beauty.item").is_file():
        return folder
    txt, item = Path(s3rec_dir) / "Beauty.txt", Path(s3rec_dir) / "Beauty.item"
    if not (txt.is_file() and item.is_file()):
        print(f"Beauty skipped: {txt} or {item} not found (set --s3rec-dir)", file=sys.stderr)
        return None
    from dataset_scripts.s3rec_to_atomic import convert_s3rec

    convert_s3rec(str(txt), str(folder), "beauty", item_file=str(item))
    return folder


def dataset_item_texts(config):
    """Item tokens and texts of the dataset, as the preprocessing renders them."""
    from recbole_sada.preprocess.features import load_train_split
    from recbole_sada.preprocess.text import item_texts, read_item_table
    from recbole_sada.semantic.features import data_files, semantic_settings

    settings = semantic_settings(config)
    table = read_item_table(data_files(config)["item"], config["ITEM_ID_FIELD"], settings["item_text_fields"])
    fields = settings["item_text_fields"] or list(table.columns)
    text_of = item_texts(table, fields, settings["item_text_template"])
    dataset, train = load_train_split(config)
    tokens = [str(t) for t in dataset.field2id_token[config["ITEM_ID_FIELD"]][1:]]
    return tokens, [text_of.get(t, "") for t in tokens], table, (dataset, train)


# ------------------------------------------------------------------------------ 1. throughput
def throughput(name, texts, model, repeats, tmp_root):
    """Alternate direct sentence-transformers and the plugin's cached path; return a row dict."""
    from recbole_sada.preprocess.features import encode_texts
    from recbole_sada.semantic import SemanticCache, SentenceTransformerEncoder

    texts = list(dict.fromkeys(t for t in texts if t))  # distinct: the plugin dedups anyway
    direct, plugin, last_encoder = [], [], None
    for r in range(repeats):
        t0 = time.perf_counter()
        reference = model.encode(texts, batch_size=128, normalize_embeddings=True,
                                 convert_to_numpy=True, show_progress_bar=False)
        direct.append(time.perf_counter() - t0)
        encoder = SentenceTransformerEncoder(None, SemanticCache(Path(tmp_root) / f"{name}-{r}"),
                                             batch_size=128)
        encoder._model = model  # share the loaded model: time encoding, not loading
        t0 = time.perf_counter()
        ours = encode_texts(encoder, texts, show_progress=False)
        plugin.append(time.perf_counter() - t0)
        last_encoder = encoder
    max_diff = float(np.abs(ours - reference).max())
    calls_first = last_encoder.stats.model_calls
    t0 = time.perf_counter()
    encode_texts(last_encoder, texts, show_progress=False)
    second = time.perf_counter() - t0
    n = len(texts)
    return {
        "name": name, "n": n, "direct": n / np.median(direct), "plugin": n / np.median(plugin),
        "direct_runs": direct, "plugin_runs": plugin, "max_diff": max_diff,
        "calls_first": calls_first, "calls_second": last_encoder.stats.model_calls - calls_first,
        "second_s": second,
    }


# ------------------------------------------------------------------------------ 3. preprocessing
def preprocess_twice(config, prepared):
    from recbole_sada.preprocess.features import build_semantic_features
    from recbole_sada.semantic import get_encoder

    encoder = get_encoder(config)
    first = build_semantic_features(config, log=True, show_progress=True, encoder=encoder,
                                    prepared=prepared)
    second = build_semantic_features(config, log=True, show_progress=False, encoder=encoder,
                                     prepared=prepared)
    return first, second


# ------------------------------------------------------------------------------ 4. sanity
def neighbours(item_path, queries, labels, k=5):
    from recbole_sada.semantic.features import read_embedding_file

    tokens, matrix, _ = read_embedding_file(item_path, "item_id", "item_emb")
    index = {t: i for i, t in enumerate(tokens)}
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    unit = matrix / np.where(norms > 0, norms, 1)
    rows = []
    for token in queries:
        sims = unit @ unit[index[token]]
        sims[index[token]] = -np.inf
        sims[norms[:, 0] == 0] = -np.inf
        best = np.argsort(-sims, kind="stable")[:k]
        rows.append((short(labels.get(token, token), 48),
                     "; ".join(f"{short(labels.get(tokens[j], tokens[j]), 40)} ({sims[j]:.2f})" for j in best)))
    return rows


def categories_of(table, field, how):
    """``{item token: [category labels]}`` from a .item column."""
    out = {}
    for token, value in zip(table.tokens, table.columns[field]):
        if how == "quoted":
            parts = [a or b for a, b in re.findall(r"'([^']*)'|\"([^\"]*)\"", value)]
            parts = [p for p in parts if p != "Beauty"]
            out[token] = parts[-1:] if parts else []  # the most specific category
        else:
            out[token] = value.split()
    return out


def cluster_summary(user_path, histories, cats, top=3):
    from recbole_sada.semantic.features import read_embedding_file

    tokens, _, clusters = read_embedding_file(user_path, "user_id", "user_emb", "user_cluster")
    by_cluster = {}
    for token, cluster in zip(tokens, clusters):
        by_cluster.setdefault(int(cluster), []).append(token)
    overall = Counter(c for items in histories.values() for i in items for c in cats.get(i, []))
    total = sum(overall.values())
    rows = []
    for cluster in sorted(by_cluster):
        counter = Counter(c for u in by_cluster[cluster] for i in histories.get(u, [])
                          for c in cats.get(i, []))
        n = sum(counter.values()) or 1
        tops = ", ".join(f"{c} {100 * v / n:.0f}% (all users {100 * overall[c] / total:.0f}%)"
                         for c, v in counter.most_common(top))
        rows.append((cluster, len(by_cluster[cluster]), tops))
    return rows


# ------------------------------------------------------------------------------ main
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--s3rec-dir", default=os.environ.get(
        "SADA_S3REC_DIR", str(ROOT.parent / "shared" / "datasets" / "s3rec")))
    parser.add_argument("--data-path", default=str(ROOT / "dataset"),
                        help="data folder (ml-100k is copied there, Beauty converted there)")
    parser.add_argument("--out", default=str(ROOT / "results" / "semantic.md"))
    parser.add_argument("--repeats", type=int, default=3, help="timed runs on ml-100k (median)")
    parser.add_argument("--beauty-repeats", type=int, default=1, help="timed runs on Beauty")
    parser.add_argument("--limit", type=int, default=None, help="at most N texts in section 1")
    parser.add_argument("--no-users", action="store_true",
                        help="skip section 3 and the cluster tables (user encoding is the slow part)")
    args = parser.parse_args(argv)

    import logging

    import sentence_transformers
    import torch

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    logging.getLogger("recbole_sada").addHandler(handler)
    logging.getLogger("recbole_sada").setLevel(logging.INFO)

    from recbole_sada.semantic import packaged_encoder_path

    command = "python benchmarks/semantic_encode.py " + " ".join(argv if argv is not None else sys.argv[1:])
    tmp_root = Path(tempfile.mkdtemp(prefix="sada-bench-"))
    load_before = os.getloadavg()
    model = sentence_transformers.SentenceTransformer(str(packaged_encoder_path()), device="cpu")
    model.encode(["warm up"], show_progress_bar=False)

    datasets = {"ml-100k": None}
    if prepare_beauty(args.s3rec_dir, args.data_path) is not None:
        datasets["beauty"] = None
    out = [
        "# Semantic preprocessing: encoding throughput, caching, sanity checks",
        "",
        f"Machine: {cpu_name()}, {os.cpu_count()} CPU cores (shared with other jobs), "
        f"torch {torch.__version__} with {torch.get_num_threads()} threads, "
        f"sentence-transformers {sentence_transformers.__version__}, Python {platform.python_version()}. "
        f"Encoder: the packaged all-MiniLM-L6-v2 (384-d) on CPU, batch 128. "
        f"Load average at start: {load_before[0]:.1f}.",
        "",
        f"Command: `{command.strip()}`",
        "",
    ]

    # 1-2. throughput and cache
    rows, checks = [], []
    for name in list(datasets):
        cache_dir = tmp_root / f"cache-{name}"
        config = make_config(name, args.data_path, cache_dir)
        if name == "ml-100k":
            from recbole_sada.preprocess.features import ensure_user_copy

            if ensure_user_copy(config):
                config = make_config(name, args.data_path, cache_dir)
        tokens, texts, table, prepared = dataset_item_texts(config)
        datasets[name] = (config, tokens, texts, table, prepared)
        sample = texts[: args.limit] if args.limit else texts
        repeats = args.repeats if name == "ml-100k" else args.beauty_repeats
        print(f"[{name}] timing {len(sample)} item texts x {repeats}", file=sys.stderr)
        r = throughput(name, sample, model, repeats, tmp_root)
        rows.append((name, r["n"], f"{r['direct']:.0f}", f"{r['plugin']:.0f}",
                     f"{100 * (r['plugin'] / r['direct'] - 1):+.1f}%",
                     " / ".join(f"{x:.1f}" for x in r["direct_runs"]),
                     " / ".join(f"{x:.1f}" for x in r["plugin_runs"]), f"{r['max_diff']:.1e}"))
        checks.append((name, r["calls_first"], r["calls_second"], f"{r['second_s']:.2f}"))
    out += [
        "## 1. Item encoding throughput",
        "",
        "Plugin = `recbole_sada.preprocess.features.encode_texts` (cache lookup, dedup, texts sorted "
        "by length, batches of 128, every batch written to the SQLite cache), fresh cache each run. "
        "Direct = `SentenceTransformer.encode(texts, batch_size=128, normalize_embeddings=True)` on "
        "the same loaded model. Runs alternate (direct, plugin, direct, ...); items/s of the median run. "
        "Max diff = largest absolute difference between the two embeddings.",
        "",
        md_table(["dataset", "texts", "direct items/s", "plugin items/s", "plugin vs direct",
                  "direct runs (s)", "plugin runs (s)", "max diff"], rows),
        "",
        "## 2. Second pass through the same cache",
        "",
        md_table(["dataset", "model calls, first pass", "model calls, second pass", "second pass (s)"], checks),
        "",
    ]

    # 3. whole preprocessing
    results = {}
    if not args.no_users:
        rows = []
        for name, (config, *_rest, prepared) in datasets.items():
            print(f"[{name}] preprocessing (items, users, K-means) twice", file=sys.stderr)
            first, second = preprocess_twice(config, prepared)
            results[name] = first
            for label, s in (("first", first), ("second", second)):
                rows.append((name, label, s["counts"]["items"], s["timing"]["items_per_s"],
                             s["counts"]["users"], s["timing"]["users_per_s"],
                             s["timing"]["cluster_seconds"], s["encoder_stats"]["model_calls"],
                             f"{s['encoder_stats']['cache_hits']}/{s['encoder_stats']['texts']}",
                             s["timing"]["total_seconds"]))
        out += [
            "## 3. Whole preprocessing (`build_semantic_features`), run twice",
            "",
            "Fresh cache: the first run encodes everything (model loaded beforehand), the second "
            "reads the cache. Items/s and users/s include cache lookups and writes. User texts are "
            "long (up to the 254-token window of MiniLM), hence far slower than item texts.",
            "",
            md_table(["dataset", "run", "items", "items/s", "users", "users/s", "K-means (s)",
                      "model calls", "cache hits/texts", "total (s)"], rows),
            "",
        ]

    # 4. sanity tables
    from recbole_sada.semantic.features import feature_paths

    config, tokens, texts, table, prepared = datasets["ml-100k"]
    paths = feature_paths(config)
    if paths["item"].is_file():
        title_field = "movie_title"
        titles = {t: f"{v} ({y})" for t, v, y in zip(
            table.tokens, table.columns[title_field], table.columns["release_year"])}
        by_title = {v: t for t, v in titles.items()}
        queries = [by_title[m] for m in WELL_KNOWN_MOVIES if m in by_title]
        out += ["## 4. Nearest items by semantic embedding (cosine)", "",
                "### ml-100k: 10 well-known movies", "",
                md_table(["movie", "5 nearest (cosine)"], neighbours(paths["item"], queries, titles)), ""]
    if "beauty" in datasets:
        config_b, tokens_b, texts_b, table_b, (dataset_b, train_b) = datasets["beauty"]
        paths_b = feature_paths(config_b)
        if paths_b["item"].is_file():
            from recbole_sada.preprocess.features import training_histories

            histories_b = training_histories(train_b)
            popularity = Counter(i for items in histories_b.values() for i in items)
            queries = [t for t, _ in popularity.most_common(10)]
            labels = dict(zip(table_b.tokens, table_b.columns["title"]))
            out += ["### Beauty: the 10 most popular products (training interactions)", "",
                    md_table(["product", "5 nearest (cosine)"], neighbours(paths_b["item"], queries, labels)), ""]
    if not args.no_users:
        from recbole_sada.preprocess.features import training_histories

        out += ["## 5. User clusters (K-means on user embeddings of training items)", "",
                "Share of each category among the training interactions of the cluster's users "
                "(in brackets: among all users' training interactions).", ""]
        if "beauty" in datasets:
            cats = categories_of(table_b, "categories", "quoted")
            out += ["### Beauty (most specific category of each item)", "",
                    md_table(["cluster", "users", "top categories"],
                             cluster_summary(paths_b["user"], histories_b, cats)), ""]
        genres = categories_of(table, "class", "tokens")
        out += ["### ml-100k (genres)", "",
                md_table(["cluster", "users", "top genres"],
                         cluster_summary(paths["user"], training_histories(prepared[1]), genres)), ""]
    out.append(f"Load average at the end: {os.getloadavg()[0]:.1f}.")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(out) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
