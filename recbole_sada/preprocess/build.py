"""Item text -> ``.itememb``, user training text -> ``.useremb`` + K-means clusters.

:func:`build_semantic_features` is the whole pipeline (see
:mod:`recbole_sada.semantic.files` for the files it writes):

1. item text from the configured ``.item`` fields and template (:mod:`.text`);
2. the dataset is built by RecBole with the given config (filters, ``eval_args``...) and each
   user's history is read from the *train split*, so valid and test items never reach the user
   text or the clustering, whatever the split settings;
3. texts are encoded through the cached encoder (a rerun costs no model call), item and user
   texts sorted by length so that batches pad little;
4. optional PCA to ``semantic_dim`` (fit on the items of the train split only, applied to every
   item and user, so an item seen only in valid/test is encoded but never fit on);
5. K-means (scikit-learn, ``n_init`` 10, ``cluster_seed``) on the users that have text.
"""
from __future__ import annotations

import io
import json
import logging
import shutil
import time
import warnings
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from recbole_sada.config import data_root, packaged_dataset_dir
from recbole_sada.errors import InputError
from recbole_sada.fileio import atomic_path
from recbole_sada.preprocess.text import item_texts, iter_user_texts, read_item_table
from recbole_sada.semantic.files import (
    FORMAT_VERSION,
    ITEM_EMB_FIELD,
    NO_CLUSTER,
    USER_CLUSTER_FIELD,
    USER_EMB_FIELD,
    _RECORDED,
    data_files,
    feature_dir,
    feature_paths,
    file_sha256,
    preserved_rng,
    semantic_settings,
)

logger = logging.getLogger(__name__)

KMEANS_N_INIT = 10
PACKAGED_COPY_SUFFIXES = ("inter", "item", "user")
FLOAT_FORMAT = "%.6g"


# ------------------------------------------------------------------------------ data
def ensure_user_copy(config, log: bool = True) -> bool:
    """Copy RecBole's packaged ml-100k atomic files into ``<data_path>/ml-100k/`` when the user
    has no copy there (feature files then live beside the data, never in site-packages).

    Returns:
        True when files were copied.
    """
    name = config["dataset"]
    target = Path(data_root(config)) / name
    source = packaged_dataset_dir(name)
    if source is None or (target / f"{name}.inter").is_file():
        return False
    target.mkdir(parents=True, exist_ok=True)
    copied = []
    for suffix in PACKAGED_COPY_SUFFIXES:
        path = source / f"{name}.{suffix}"
        if path.is_file():
            shutil.copyfile(path, target / path.name)
            copied.append(path.name)
    if log:
        logger.info("copied RecBole's packaged %s (%s) to %s", name, ", ".join(copied), target)
    return True


@contextmanager
def _quiet_recbole():
    """Hide RecBole's INFO logging while building a helper dataset (the run logs its own)."""
    previous = logging.root.manager.disable
    logging.disable(max(previous, logging.INFO))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # pandas chained assignment in RecBole
            yield
    finally:
        logging.disable(previous)


def training_histories(train_dataset):
    """Each user's training items, oldest first, as tokens: ``{user token: [item tokens]}``.

    ``train_dataset`` is the train split built by RecBole (leave-one-out: each user's last two
    interactions, the valid and test targets, are not in it).  Sequential splits (prefix or
    sequence mode) are read with :func:`recbole_sada.data.dataset.training_sequences`; other splits
    by grouping their interactions, which RecBole keeps in time order.
    """
    cfg = train_dataset.config
    uid_field, iid_field = train_dataset.uid_field, train_dataset.iid_field
    list_field = iid_field + (cfg["LIST_SUFFIX"] or "_list")
    if list_field in train_dataset.inter_feat.interaction:
        from recbole_sada.data.dataset import training_sequences

        uids, seqs = training_sequences(train_dataset)
    else:
        uid = train_dataset.inter_feat[uid_field].numpy()
        iid = train_dataset.inter_feat[iid_field].numpy()
        order = np.argsort(uid, kind="stable")
        uid, iid = uid[order], iid[order]
        starts = np.flatnonzero(np.r_[True, uid[1:] != uid[:-1]]) if len(uid) else np.array([], int)
        uids = uid[starts]
        seqs = np.split(iid, starts[1:]) if len(uid) else []
    user_tokens = train_dataset.field2id_token[uid_field]
    item_tokens = train_dataset.field2id_token[iid_field]
    return {str(user_tokens[u]): [str(t) for t in item_tokens[np.asarray(s)]]
            for u, s in zip(uids, seqs)}


def load_train_split(config):
    """Build the dataset with RecBole (quietly) and return ``(dataset, train split)``."""
    from recbole_sada.data import create_dataset

    with _quiet_recbole():
        dataset = create_dataset(config)
        train = dataset.build()[0]
    return dataset, train


# ------------------------------------------------------------------------------ encoding
def _token_window(encoder):
    """``(count tokens of texts, tokens available)`` of a local sentence-transformers encoder;
    ``None`` when unknown (API encoders take far longer inputs)."""
    from recbole_sada.semantic import SentenceTransformerEncoder

    if not isinstance(encoder, SentenceTransformerEncoder):
        return None
    model = encoder._load()  # the loaded SentenceTransformer (loading is not a model call)
    tokenizer, limit = getattr(model, "tokenizer", None), getattr(model, "max_seq_length", None)
    if tokenizer is None or not limit:
        return None

    def count(texts):
        if not texts:
            return []
        return [len(ids) for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]]

    return count, int(limit) - 2  # [CLS] and [SEP]


def encode_texts(encoder, texts, show_progress: bool, dim: int | None = None):
    """Encode ``texts`` (empty ones get zero rows) through the cached encoder.

    Distinct non-empty texts go to the encoder sorted by length, so each batch pads little.
    ``dim`` sizes the result when every text is empty (else the encoder is asked).

    Returns:
        ``(n, d)`` float32 array.
    """
    unique = sorted({t for t in texts if t}, key=lambda t: (len(t), t))
    vectors = encoder.encode(unique, show_progress=show_progress) if unique else None
    dim = vectors.shape[1] if vectors is not None else (dim or encoder.dim or 0)
    row = {t: i for i, t in enumerate(unique)}
    out = np.zeros((len(texts), dim), dtype=np.float32)
    index = [(i, row[t]) for i, t in enumerate(texts) if t]
    if index:
        rows, src = map(np.array, zip(*index))
        out[rows] = vectors[src]
    return out


def reduce_dim(items: np.ndarray, users: np.ndarray, dim: int | None, seed: int, item_path,
               fit_rows: np.ndarray | None = None):
    """PCA to ``dim`` fit on the non-zero item rows among ``fit_rows`` (the items of the train
    split; default all), applied to every row; zero rows stay zero.

    Returns:
        ``(items, users, info)`` with ``info`` None when ``dim`` is None or the encoder's size.
    """
    if dim is None or dim == items.shape[1]:
        return items, users, None
    from sklearn.decomposition import PCA

    item_rows, user_rows = items.any(axis=1), users.any(axis=1)
    fit = item_rows if fit_rows is None else item_rows & np.asarray(fit_rows, dtype=bool)
    limit = min(items.shape[1], int(fit.sum()))
    if dim > limit:
        raise InputError(
            f"semantic_dim {dim} is larger than the encoder size {items.shape[1]} or the "
            f"{int(fit.sum())} training items with text in {item_path}; set semantic_dim <= {limit}")
    pca = PCA(n_components=dim, svd_solver="full", random_state=seed).fit(items[fit])
    new_items = np.zeros((len(items), dim), dtype=np.float32)
    new_users = np.zeros((len(users), dim), dtype=np.float32)
    new_items[item_rows] = pca.transform(items[item_rows])
    if user_rows.any():
        new_users[user_rows] = pca.transform(users[user_rows])
    info = {"dim": dim, "from_dim": int(items.shape[1]), "fit_items": int(fit.sum()),
            "explained_variance": round(float(pca.explained_variance_ratio_.sum()), 4)}
    return new_items, new_users, info


def cluster_users(vectors: np.ndarray, n_clusters: int, seed: int, users_path=None):
    """K-means on the non-zero rows (scikit-learn, ``n_init`` 10, ``random_state=seed``).

    Returns:
        ``(labels, distance)``: int64 labels (``-1`` for zero rows) and the ``(K, K)`` Euclidean
        distances between the centroids.
    """
    from sklearn.cluster import KMeans
    from sklearn.metrics import pairwise_distances

    rows = vectors.any(axis=1)
    if rows.sum() < n_clusters:
        raise InputError(
            f"n_clusters is {n_clusters} but only {int(rows.sum())} users have training text"
            f"{f' for {users_path}' if users_path else ''}; lower n_clusters")
    kmeans = KMeans(n_clusters=n_clusters, n_init=KMEANS_N_INIT, random_state=seed)
    labels = np.full(len(vectors), NO_CLUSTER, dtype=np.int64)
    labels[rows] = kmeans.fit_predict(vectors[rows].astype(np.float64))
    distance = pairwise_distances(kmeans.cluster_centers_)
    return labels, distance


# ------------------------------------------------------------------------------ writing
def _write_atomic(path: Path, write):
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            write(f)


def write_embedding_file(path: Path, header, tokens, matrix: np.ndarray, extra=None):
    """Write an atomic file ``token <tab> v1 v2 ... [<tab> extra]`` (written to a temporary file
    and renamed, so a reader never sees half a file)."""
    buffer = io.StringIO()
    np.savetxt(buffer, matrix, fmt=FLOAT_FORMAT, delimiter=" ")
    rows = buffer.getvalue().splitlines()

    def write(f):
        f.write("\t".join(header) + "\n")
        if extra is None:
            f.writelines(f"{t}\t{r}\n" for t, r in zip(tokens, rows))
        else:
            f.writelines(f"{t}\t{r}\t{e}\n" for t, r, e in zip(tokens, rows, extra))

    _write_atomic(path, write)


def _write_json(path: Path, record):
    """One key per line; a list of lists gets one inner list per line."""
    def value(v):
        if isinstance(v, list) and v and isinstance(v[0], list):
            return "[\n  " + ",\n  ".join(json.dumps(row) for row in v) + "\n ]"
        return json.dumps(v, ensure_ascii=False)

    text = "{\n" + ",\n".join(f" {json.dumps(k)}: {value(v)}" for k, v in record.items()) + "\n}\n"
    _write_atomic(path, lambda f: f.write(text))


# ------------------------------------------------------------------------------ pipeline
def build_semantic_features(config, log: bool = True, show_progress: bool | None = None,
                            encoder=None, prepared=None) -> dict:
    """Build the semantic feature files of ``config``'s dataset (overwriting them).

    Args:
        config: a RecBole ``Config`` (from :func:`recbole_sada.config.build_config`).
        log: log the stages and a summary line.
        show_progress: progress bars; None = ``config["show_progress"]``.
        encoder: a :class:`~recbole_sada.semantic.TextEncoder` to use instead of the configured
            one (benchmarks share one loaded model).
        prepared: ``(dataset, train split)`` already built from ``config``.

    Returns:
        dict: the sidecar record plus ``timing`` (seconds, items/s, users/s), ``encoder_stats``
        (texts, cache hits, model calls of this build) and ``paths``.

    Raises:
        InputError: missing ``.item`` file or field, all item texts empty, bad settings,
        unknown encoder backend, too few users for ``n_clusters``.
    """
    from tqdm.auto import tqdm

    from recbole_sada.semantic import get_encoder, resolve_config

    say = logger.info if log else (lambda *a, **k: None)
    progress = bool(config["show_progress"]) if show_progress is None else show_progress
    settings = semantic_settings(config)
    semantic = resolve_config(config)
    encoder = encoder or get_encoder(config)  # unknown backends fail here, before any work
    name = config["dataset"]
    iid_field, uid_field = config["ITEM_ID_FIELD"], config["USER_ID_FIELD"]
    ensure_user_copy(config, log=log)
    paths = feature_paths(config)
    files = data_files(config)
    started = time.time()
    stats0 = (encoder.stats.texts, encoder.stats.cache_hits, encoder.stats.model_calls,
              encoder.stats.encoded)

    # 1. item texts
    table = read_item_table(files["item"], iid_field, settings["item_text_fields"])
    fields = settings["item_text_fields"] or list(table.columns)
    text_of = item_texts(table, fields, settings["item_text_template"], config["seq_separator"] or " ")

    # 2. dataset and training histories
    with preserved_rng():
        dataset, train = prepared or load_train_split(config)
    item_tokens = [str(t) for t in dataset.field2id_token[iid_field][1:]]
    user_tokens = [str(t) for t in dataset.field2id_token[uid_field][1:]]
    histories = training_histories(train)
    texts = [text_of.get(t, "") for t in item_tokens]
    missing_rows = sum(t not in text_of for t in item_tokens)
    empty = sum(1 for t in texts if not t)
    if empty == len(texts):
        raise InputError(
            f"every item text is empty: the fields {', '.join(fields)} of {files['item']} are blank "
            f"for all {len(texts)} items of the dataset; choose other item_text_fields")
    unused_rows = len(set(text_of) - set(item_tokens))
    if empty:
        say("%d of %d items have no text (%d absent from %s, %d with blank fields): zero vectors",
            empty, len(texts), missing_rows, files["item"].name, empty - missing_rows)
    if missing_rows:
        logger.warning("%d items of %s have no row in %s", missing_rows, files["inter"].name,
                       files["item"].name)

    # 3. encode items
    say("encoding %d item texts with %s:%s", len(texts) - empty, encoder.backend, encoder.model)
    t0 = time.time()
    item_matrix = encode_texts(encoder, texts, progress)
    item_seconds = time.time() - t0

    # 4. user texts (training items only) and their encoding
    window = _token_window(encoder)
    tokens_of = max_tokens = None
    if window is not None:
        count, max_tokens = window
        text_items = [t for t in item_tokens if text_of.get(t)]
        tokens_of = dict(zip(text_items, count([text_of[t] for t in text_items])))
    user_histories = (histories.get(u, []) for u in user_tokens)
    user_texts = list(tqdm(
        iter_user_texts(user_histories, text_of, settings["user_text_max_items"], tokens_of, max_tokens),
        total=len(user_tokens), desc="user texts", unit="user", disable=not progress))
    users_empty = sum(1 for t in user_texts if not t)
    if users_empty:
        say("%d of %d users have no training text: zero vectors, cluster %d",
            users_empty, len(user_texts), NO_CLUSTER)
    say("encoding %d user texts (training items only, at most %d each)",
        len(user_texts) - users_empty, settings["user_text_max_items"])
    t0 = time.time()
    user_matrix = encode_texts(encoder, user_texts, progress, dim=item_matrix.shape[1])
    user_seconds = time.time() - t0
    encoder_dim = item_matrix.shape[1]

    # 5. PCA and K-means
    in_train = set(t for items in histories.values() for t in items)
    item_matrix, user_matrix, pca = reduce_dim(
        item_matrix, user_matrix, settings["semantic_dim"], settings["cluster_seed"], files["item"],
        fit_rows=np.array([t in in_train for t in item_tokens], dtype=bool))
    t0 = time.time()
    labels, distance = cluster_users(user_matrix, settings["n_clusters"], settings["cluster_seed"],
                                     paths["user"])
    cluster_seconds = time.time() - t0

    # 6. files (the sidecar last: it marks a complete build)
    feature_dir(config).mkdir(parents=True, exist_ok=True)
    write_embedding_file(paths["item"], [f"{iid_field}:token", f"{ITEM_EMB_FIELD}:float_seq"],
                         item_tokens, item_matrix)
    write_embedding_file(paths["user"], [f"{uid_field}:token", f"{USER_EMB_FIELD}:float_seq",
                                         f"{USER_CLUSTER_FIELD}:token"],
                         user_tokens, user_matrix, labels.tolist())
    sizes = np.bincount(labels[labels >= 0], minlength=settings["n_clusters"])
    _write_json(paths["clusters"], {
        "n_clusters": settings["n_clusters"],
        "metric": "euclidean distance between K-means centroids",
        "sizes": sizes.tolist(),
        "distance": np.round(distance, 6).tolist(),
    })
    stats = encoder.stats
    encoder_stats = {
        "texts": stats.texts - stats0[0],
        "cache_hits": stats.cache_hits - stats0[1],
        "model_calls": stats.model_calls - stats0[2],
        "encoded": stats.encoded - stats0[3],
    }
    sidecar = {
        "format": FORMAT_VERSION,
        "dataset": name,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "files": {k: p.name for k, p in paths.items() if k != "sidecar"},
        "id_fields": {"item": iid_field, "user": uid_field},
        "data_sha256": {k: file_sha256(p) for k, p in files.items()},
        "encoder": {"backend": encoder.backend, "model": encoder.model, "dim": int(encoder_dim),
                    "max_tokens": max_tokens, "batch_size": semantic["encoder_batch_size"]},
        "dim": int(item_matrix.shape[1]),
        "pca": pca,
        "item_text": {"fields": fields, "template": settings["item_text_template"]},
        "user_text": {"max_items": settings["user_text_max_items"],
                      "source": "train split only (valid and test interactions excluded)",
                      "order": "oldest first", "separator": "; "},
        "clusters": {"n_clusters": settings["n_clusters"], "seed": settings["cluster_seed"],
                     "n_init": KMEANS_N_INIT, "method": "scikit-learn KMeans"},
        "counts": {
            "items": len(item_tokens), "items_empty_text": empty,
            "items_missing_from_item_file": missing_rows, "item_rows_unused": unused_rows,
            "users": len(user_tokens), "users_empty_text": users_empty,
            "cluster_sizes": sizes.tolist(),
        },
        "settings": {k: settings[k] for k in _RECORDED},
    }
    _write_json(paths["sidecar"], sidecar)

    total = time.time() - started
    timing = {
        "item_seconds": round(item_seconds, 3), "user_seconds": round(user_seconds, 3),
        "cluster_seconds": round(cluster_seconds, 3), "total_seconds": round(total, 3),
        "items_per_s": round(len(texts) / max(item_seconds, 1e-9), 1),
        "users_per_s": round(len(user_texts) / max(user_seconds, 1e-9), 1),
    }
    say("semantic features %s: %d items (%d without text) %.0f items/s, %d users (%d without "
        "text) %.0f users/s, %d-d, %d clusters, cache hits %d/%d texts, %d model calls, %.1f s -> %s",
        name, len(texts), empty, timing["items_per_s"], len(user_texts), users_empty,
        timing["users_per_s"], sidecar["dim"], settings["n_clusters"],
        encoder_stats["cache_hits"], encoder_stats["texts"], encoder_stats["model_calls"],
        total, feature_dir(config))
    return dict(sidecar, timing=timing, encoder_stats=encoder_stats,
                paths={k: str(p) for k, p in paths.items()})
