"""Semantic preprocessing benchmark -> results/semantic.md.

    python benchmarks/semantic_encode.py [--s3rec-dir ../shared/datasets/s3rec] [--data-path DIR]
        [--out results/semantic.md] [--sections 1,2,3,4,5] [--repeats 5] [--beauty-repeats 2]
        [--limit N]

Sections (``--sections`` runs a subset and replaces only those sections in ``--out``; each section
records the command and machine load of its own run):

1. Encoding throughput of the plugin's cached encoder path on the ml-100k item texts and the
   12,101 Beauty item texts, against ``SentenceTransformer.encode`` called directly on the same
   texts with the same loaded model (fresh cache for every plugin run; runs alternate).  Both wall
   time and process CPU time are reported: on shared cores the CPU time is the fairer comparison.
2. A second pass through the same cache: model calls (must be 0) and time.
3. The whole preprocessing (``build_semantic_features``, fresh cache) of both datasets, run twice:
   items/s, users/s, K-means time, model calls of the rerun.  Writes the feature files.
4. The 5 nearest items (cosine of the written item embeddings) of 10 well-known ml-100k movies
   and of the 10 most popular Beauty products.
5. User clusters of both datasets summarised by the categories / genres of their training items.

Beauty comes from the S3-Rec files (``Beauty.txt`` + ``Beauty.item``), converted with
``dataset_scripts/s3rec_to_atomic.py`` into ``<data-path>/beauty`` when absent; without them the
Beauty parts are skipped with a message.  ``--limit`` caps the texts of section 1 (smoke runs).
"""
import argparse
import logging
import os
import platform
import re
import shutil
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WELL_KNOWN_MOVIES = [
    "Toy Story (1995)", "Star Wars (1977)", "Fargo (1996)", "Godfather, The (1972)",
    "Pulp Fiction (1994)", "Silence of the Lambs, The (1991)", "Titanic (1997)",
    "Jurassic Park (1993)", "Schindler's List (1993)", "Aliens (1986)",
]
TITLE = "# Semantic preprocessing: encoding throughput, caching, sanity checks"


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


class Data:
    """Config, item texts, .item table and built dataset of one benchmark dataset."""

    def __init__(self, name, data_path, cache_dir):
        from recbole_sada.preprocess.build import ensure_user_copy, load_train_split
        from recbole_sada.preprocess.text import item_texts, read_item_table
        from recbole_sada.semantic.files import data_files, feature_paths, semantic_settings

        self.name = name
        self.config = make_config(name, data_path, cache_dir)
        if ensure_user_copy(self.config):
            self.config = make_config(name, data_path, cache_dir)
        settings = semantic_settings(self.config)
        self.table = read_item_table(data_files(self.config)["item"], self.config["ITEM_ID_FIELD"],
                                     settings["item_text_fields"])
        fields = settings["item_text_fields"] or list(self.table.columns)
        text_of = item_texts(self.table, fields, settings["item_text_template"])
        self.prepared = load_train_split(self.config)
        dataset = self.prepared[0]
        self.tokens = [str(t) for t in dataset.field2id_token[self.config["ITEM_ID_FIELD"]][1:]]
        self.texts = [text_of.get(t, "") for t in self.tokens]
        self.paths = feature_paths(self.config)
        self._histories = None

    @property
    def histories(self):
        from recbole_sada.preprocess.build import training_histories

        if self._histories is None:
            self._histories = training_histories(self.prepared[1])
        return self._histories


# ------------------------------------------------------------------------------ 1-2. throughput
def throughput(name, texts, model, repeats, tmp_root):
    """Alternate direct sentence-transformers and the plugin's cached path; return a dict."""
    from recbole_sada.preprocess.build import encode_texts
    from recbole_sada.semantic import SemanticCache, SentenceTransformerEncoder

    texts = list(dict.fromkeys(t for t in texts if t))  # distinct: the plugin dedups anyway
    runs = {"direct": [], "plugin": []}
    encoder = reference = ours = None
    def timed(kind, function):
        wall, cpu = time.perf_counter(), time.process_time()
        result = function()
        runs[kind].append((time.perf_counter() - wall, time.process_time() - cpu))
        return result

    for r in range(repeats):
        encoder = SentenceTransformerEncoder(None, SemanticCache(Path(tmp_root) / f"{name}-{r}"),
                                             batch_size=128)
        encoder._model = model  # share the loaded model: time encoding, not loading
        calls = [
            ("direct", lambda: model.encode(texts, batch_size=128, normalize_embeddings=True,
                                            convert_to_numpy=True, show_progress_bar=False)),
            ("plugin", lambda: encode_texts(encoder, texts, show_progress=False)),
        ]
        # the first of a pair tends to run slower: alternate which one goes first
        for kind, function in (calls if r % 2 == 0 else calls[::-1]):
            if kind == "direct":
                reference = timed(kind, function)
            else:
                ours = timed(kind, function)
    calls_first = encoder.stats.model_calls
    wall = time.perf_counter()
    encode_texts(encoder, texts, show_progress=False)
    return {
        "n": len(texts), "runs": runs, "max_diff": float(np.abs(ours - reference).max()),
        "calls_first": calls_first, "calls_second": encoder.stats.model_calls - calls_first,
        "second_s": time.perf_counter() - wall,
    }


def section_throughput(data, model, args, tmp_root):
    rows, checks = [], []
    for d in data.values():
        repeats = args.repeats if d.name == "ml-100k" else args.beauty_repeats
        texts = d.texts[: args.limit] if args.limit else d.texts
        print(f"[{d.name}] timing {len(texts)} item texts x {repeats}", file=sys.stderr)
        r = throughput(d.name, texts, model, repeats, tmp_root)
        wall = {k: np.median([w for w, _ in v]) for k, v in r["runs"].items()}
        cpu = {k: np.median([c for _, c in v]) for k, v in r["runs"].items()}
        runs = {k: " / ".join(f"{w:.0f} ({c:.0f})" for w, c in v) for k, v in r["runs"].items()}
        # per pair (both runs under about the same load), then the median over pairs
        pair = {i: np.median([dr[i] / pr[i] - 1 for dr, pr in zip(r["runs"]["direct"], r["runs"]["plugin"])])
                for i in (0, 1)}
        rows.append((d.name, r["n"], f"{r['n'] / wall['direct']:.0f}", f"{r['n'] / wall['plugin']:.0f}",
                     f"{100 * pair[0]:+.1f}%",
                     f"{r['n'] / cpu['direct']:.0f}", f"{r['n'] / cpu['plugin']:.0f}",
                     f"{100 * pair[1]:+.1f}%",
                     runs["direct"], runs["plugin"], f"{r['max_diff']:.1e}"))
        checks.append((d.name, r["n"], r["calls_first"], r["calls_second"], f"{r['second_s']:.2f}"))
    one = [
        "Plugin = `recbole_sada.preprocess.build.encode_texts` (cache lookup, dedup, texts sorted "
        "by length, batches of 128, every batch written to the SQLite cache), fresh cache each run. "
        "Direct = `SentenceTransformer.encode(texts, batch_size=128, normalize_embeddings=True)` on "
        "the same loaded model (it also sorts by length). Runs alternate, and which of the pair goes "
        "first alternates too (direct first in runs 1, 3, 5); the rates are those of the median run, by wall time and by process CPU time "
        "(all threads). Plugin vs direct: median over the pairs of (direct time / plugin time - 1), "
        "+ = the plugin is faster; pairs cancel most of the load changes of a shared machine. Distinct non-empty texts only. "
        "Max diff = largest absolute difference between the two embeddings.",
        "",
        md_table(["dataset", "texts", "direct items/s (wall)", "plugin items/s (wall)",
                  "plugin vs direct (wall)", "direct items/CPU-s", "plugin items/CPU-s",
                  "plugin vs direct (CPU)", "direct runs: wall (CPU) s", "plugin runs: wall (CPU) s",
                  "max diff"], rows),
    ]
    two = [
        "The last plugin run's cache, read again: every text is a cache hit.",
        "",
        md_table(["dataset", "texts", "model calls, first pass", "model calls, second pass",
                  "second pass (s)"], checks),
    ]
    return {1: ("Item encoding throughput", one), 2: ("Second pass through the same cache", two)}


# ------------------------------------------------------------------------------ 3. preprocessing
def section_preprocess(data, tmp_root):
    from recbole_sada.preprocess.build import build_semantic_features
    from recbole_sada.semantic import get_encoder

    rows = []
    for d in data.values():
        print(f"[{d.name}] preprocessing (items, users, K-means) twice", file=sys.stderr)
        config = make_config(d.name, Path(d.config["data_path"]).parent, tmp_root / f"cache-{d.name}")
        encoder = get_encoder(config)
        encoder.dim  # load the model before timing
        for label in ("first", "second"):
            s = build_semantic_features(config, log=True, show_progress=label == "first",
                                        encoder=encoder, prepared=d.prepared)
            rows.append((d.name, label, s["counts"]["items"], s["timing"]["items_per_s"],
                         s["counts"]["users"], s["timing"]["users_per_s"],
                         s["timing"]["cluster_seconds"], s["encoder_stats"]["model_calls"],
                         f"{s['encoder_stats']['cache_hits']}/{s['encoder_stats']['texts']}",
                         s["timing"]["total_seconds"]))
    text = [
        "Fresh cache: the first run encodes everything (model loaded beforehand), the second "
        "reads the cache. Items/s and users/s include cache lookups and writes; total includes "
        "reading the files, K-means and writing the feature files (not building the RecBole "
        "dataset, done once before). User texts are long (up to the 254-token window of MiniLM), "
        "hence far slower than item texts.",
        "",
        md_table(["dataset", "run", "items", "items/s", "users", "users/s", "K-means (s)",
                  "model calls", "cache hits/texts", "total (s)"], rows),
    ]
    return {3: ("Whole preprocessing (`build_semantic_features`), run twice", text)}


# ------------------------------------------------------------------------------ 4-5. sanity
def neighbours(item_path, queries, labels, k=5):
    from recbole_sada.semantic.files import read_embedding_file

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


def missing_note(d):
    return [f"{d.paths['item']} missing: run section 3 or `python -m recbole_sada.preprocess "
            f"--dataset={d.name}` first."]


def section_neighbours(data):
    text = []
    d = data["ml-100k"]
    if d.paths["item"].is_file():
        titles = {t: f"{v} ({y})" for t, v, y in zip(
            d.table.tokens, d.table.columns["movie_title"], d.table.columns["release_year"])}
        by_title = {v: t for t, v in titles.items()}
        queries = [by_title[m] for m in WELL_KNOWN_MOVIES if m in by_title]
        text += ["### ml-100k: 10 well-known movies", "",
                 md_table(["movie", "5 nearest (cosine)"], neighbours(d.paths["item"], queries, titles)), ""]
    else:
        text += missing_note(d)
    if "beauty" in data:
        d = data["beauty"]
        if d.paths["item"].is_file():
            popularity = Counter(i for items in d.histories.values() for i in items)
            queries = [t for t, _ in popularity.most_common(10)]
            labels = dict(zip(d.table.tokens, d.table.columns["title"]))
            text += ["### Beauty: the 10 most popular products (training interactions)", "",
                     md_table(["product", "5 nearest (cosine)"], neighbours(d.paths["item"], queries, labels))]
        else:
            text += missing_note(d)
    return {4: ("Nearest items by semantic embedding (cosine)", text)}


def beauty_leaf_categories(table):
    """``{item token: [most specific category]}`` of the S3-Rec Beauty.item categories."""
    from recbole_sada.preprocess.text import split_quoted_list

    out = {}
    for token, value in zip(table.tokens, table.columns["categories"]):
        parts = [p for p in split_quoted_list(value) if p and p != "Beauty"] if value.strip() else []
        out[token] = parts[-1:]
    return out


def cluster_summary(user_path, histories, cats, top=3):
    from recbole_sada.semantic.files import read_embedding_file

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
        tops = ", ".join(f"{c} {100 * v / n:.0f}% ({100 * overall[c] / total:.0f}%)"
                         for c, v in counter.most_common(top))
        rows.append((cluster, len(by_cluster[cluster]), tops))
    return rows


def section_clusters(data):
    text = ["Share of each category among the training interactions of the cluster's users; in "
            "brackets, its share among all users' training interactions.", ""]
    if "beauty" in data:
        d = data["beauty"]
        if d.paths["user"].is_file():
            text += ["### Beauty (most specific category of each item)", "",
                     md_table(["cluster", "users", "top categories: cluster share (overall share)"],
                              cluster_summary(d.paths["user"], d.histories, beauty_leaf_categories(d.table))),
                     ""]
        else:
            text += missing_note(d)
    d = data["ml-100k"]
    if d.paths["user"].is_file():
        genres = {t: v.split() for t, v in zip(d.table.tokens, d.table.columns["class"])}
        text += ["### ml-100k (genres)", "",
                 md_table(["cluster", "users", "top genres: cluster share (overall share)"],
                          cluster_summary(d.paths["user"], d.histories, genres))]
    else:
        text += missing_note(d)
    return {5: ("User clusters (K-means, 10 clusters, on user embeddings of training items)", text)}


# ------------------------------------------------------------------------------ output
def read_sections(path):
    """``{number: markdown}`` of the ``## N. ...`` sections of an earlier results file."""
    sections, current = {}, None
    if not Path(path).is_file():
        return sections
    for line in Path(path).read_text().splitlines():
        match = re.match(r"^## (\d+)\. ", line)
        if match:
            current = int(match.group(1))
            sections[current] = []
        if current is not None:
            sections[current].append(line)
    return {k: "\n".join(v).rstrip() for k, v in sections.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--s3rec-dir", default=os.environ.get(
        "SADA_S3REC_DIR", str(ROOT.parent / "shared" / "datasets" / "s3rec")))
    parser.add_argument("--data-path", default=str(ROOT / "dataset"),
                        help="data folder (ml-100k is copied there, Beauty converted there)")
    parser.add_argument("--out", default=str(ROOT / "results" / "semantic.md"))
    parser.add_argument("--sections", default="1,2,3,4,5", help="sections to run, e.g. 1,2")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs on ml-100k (median)")
    parser.add_argument("--beauty-repeats", type=int, default=2, help="timed runs on Beauty")
    parser.add_argument("--limit", type=int, default=None, help="at most N texts in section 1")
    args = parser.parse_args(argv)
    wanted = {int(s) for s in args.sections.split(",") if s.strip()}

    import sentence_transformers
    import torch

    from recbole_sada.semantic import packaged_encoder_path

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    logging.getLogger("recbole_sada").addHandler(handler)
    logging.getLogger("recbole_sada").setLevel(logging.INFO)

    command = "python benchmarks/semantic_encode.py " + " ".join(
        argv if argv is not None else sys.argv[1:])
    tmp_root = Path(tempfile.mkdtemp(prefix="sada-bench-"))
    load_start, started = os.getloadavg()[0], datetime.now()
    try:
        model = sentence_transformers.SentenceTransformer(str(packaged_encoder_path()), device="cpu")
        model.encode(["warm up"], show_progress_bar=False)
        data = {"ml-100k": Data("ml-100k", args.data_path, tmp_root / "unused")}
        if prepare_beauty(args.s3rec_dir, args.data_path) is not None:
            data["beauty"] = Data("beauty", args.data_path, tmp_root / "unused")
        new = {}
        if wanted & {1, 2}:
            new.update({k: v for k, v in section_throughput(data, model, args, tmp_root).items()
                        if k in wanted})
        if 3 in wanted:
            new.update(section_preprocess(data, tmp_root))
        if 4 in wanted:
            new.update(section_neighbours(data))
        if 5 in wanted:
            new.update(section_clusters(data))
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)

    run_line = (f"_Run {started:%Y-%m-%d %H:%M}: `{command.strip()}`; load average "
                f"{load_start:.1f} at start, {os.getloadavg()[0]:.1f} at end._")
    sections = read_sections(args.out)
    for number, (title, lines) in new.items():
        sections[number] = "\n".join([f"## {number}. {title}", "", run_line, ""] + lines).rstrip()
    header = [
        TITLE, "",
        f"Machine: {cpu_name()}, {os.cpu_count()} CPU cores shared with other jobs (each section "
        f"gives the load average of its run; under load, wall times swing 4x), torch {torch.__version__} with "
        f"{torch.get_num_threads()} threads, sentence-transformers {sentence_transformers.__version__}, "
        f"Python {platform.python_version()}. Encoder: the packaged all-MiniLM-L6-v2 (384-d) on "
        "CPU, batch 128. Data: RecBole's ml-100k and the S3-Rec Beauty split "
        "(`dataset_scripts/s3rec_to_atomic.py`). Regenerate with "
        "`python benchmarks/semantic_encode.py --data-path DIR` (see `--help`); each section "
        "names the command of its own run.", "",
    ]
    body = "\n\n".join(sections[k] for k in sorted(sections))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(header) + "\n" + body + "\n")
    print(f"wrote {args.out} (sections {', '.join(map(str, sorted(new)))})", file=sys.stderr)


if __name__ == "__main__":
    main()
