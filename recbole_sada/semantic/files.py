"""Semantic item/user features written by ``python -m recbole_sada.preprocess``: files and loading.

Files, in the user's data folder ``<data_path>/<dataset>/`` (never inside an installed package):

``<dataset>.itememb``
    ``item_id:token  item_emb:float_seq`` (the id field is ``ITEM_ID_FIELD``), one row per item
    of the dataset, values space separated.  Items without text have a zero vector.
``<dataset>.useremb``
    ``user_id:token  user_emb:float_seq  user_cluster:token``: the embedding of the user's text
    (built from training interactions only) and its K-means cluster, ``-1`` for users without
    training text.
``<dataset>.clusters.json``
    ``distance``: the K x K Euclidean distances between cluster centroids (the loader orders
    each cluster's others from nearest to farthest from it), ``sizes``.
``<dataset>.semantic.json``
    The sidecar: encoder, dimension, text settings, counts and the SHA-256 of the ``.inter`` and
    ``.item`` files the features were built from.  Written last: it marks a complete build.

Typical use inside a model::

    from recbole_sada.semantic.files import load_semantic_features

    feats = load_semantic_features(config, dataset)   # builds the files first if missing
    self.register_buffer("item_sem", feats.item_semantic)

The features are read here and mapped to RecBole's remapped ids with the dataset's token map,
rather than through ``additional_feat_suffix``: loading a field named like ``ITEM_ID_FIELD`` from
an extra file makes RecBole re-assign that field's source, an alias field turns ids unknown to the
dataset into new item ids instead of an error, cluster tokens would be re-numbered, and the files
would have to exist before the dataset is built.
"""
from __future__ import annotations

import csv
import json
import logging
import random
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from recbole_sada.config import PROPERTIES_DIR, data_root
from recbole_sada.errors import InputError
from recbole_sada.fileio import file_sha256 as _file_sha256

logger = logging.getLogger(__name__)

SETTINGS_FILE = PROPERTIES_DIR / "semantic.yaml"
SUFFIXES = {"item": "itememb", "user": "useremb", "clusters": "clusters.json", "sidecar": "semantic.json"}
ITEM_EMB_FIELD = "item_emb"
USER_EMB_FIELD = "user_emb"
USER_CLUSTER_FIELD = "user_cluster"
NO_CLUSTER = -1
FORMAT_VERSION = 1
# Settings recorded in the sidecar; a config that differs from them gets a warning.
_RECORDED = ("item_text_fields", "item_text_template", "user_text_max_items", "n_clusters",
             "cluster_seed")


# ------------------------------------------------------------------------------ settings
def _lookup(config: Any, key: str) -> Any:
    try:
        return config[key] if key in config else None
    except (KeyError, TypeError):
        return None


def semantic_defaults() -> dict:
    """The defaults of ``properties/semantic.yaml``."""
    with open(SETTINGS_FILE, encoding="utf-8") as f:
        return yaml.safe_load(f) or {}


def semantic_settings(config: Any = None) -> dict:
    """Feature settings: ``properties/semantic.yaml`` overlaid by the non-null values of ``config``.

    Raises:
        InputError: a value of the wrong type or range (one line naming the key).
    """
    merged = semantic_defaults()
    for key in list(merged):
        value = _lookup(config, key) if config is not None else None
        if value is not None:
            merged[key] = value
    return _validate(merged)


def _as_int(settings: dict, key: str, minimum: int) -> None:
    value = settings[key]
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise InputError(f"config key {key} must be an integer >= {minimum}, got {value!r}")
    settings[key] = int(value)


def _validate(settings: dict) -> dict:
    fields = settings.get("item_text_fields")
    if isinstance(fields, str):  # "title,categories", "[title, categories]" or "title categories"
        fields = [f for f in fields.strip("[]() ").replace(",", " ").replace("'", " ")
                  .replace('"', " ").split() if f]
    if fields is not None:
        if not isinstance(fields, (list, tuple)) or not fields or not all(
                isinstance(f, str) and f for f in fields):
            raise InputError(
                f"config key item_text_fields must be a non-empty list of .item field names, got {fields!r}")
        fields = list(dict.fromkeys(fields))
    settings["item_text_fields"] = fields
    template = settings.get("item_text_template")
    if template is not None and not isinstance(template, str):
        raise InputError(f"config key item_text_template must be a string, got {template!r}")
    _as_int(settings, "user_text_max_items", 1)
    _as_int(settings, "n_clusters", 2)
    _as_int(settings, "cluster_seed", 0)
    if settings.get("semantic_dim") is not None:
        _as_int(settings, "semantic_dim", 1)
    if not isinstance(settings.get("semantic_auto_build"), bool):
        raise InputError(
            f"config key semantic_auto_build must be True or False, got {settings.get('semantic_auto_build')!r}")
    return settings


# ------------------------------------------------------------------------------ files
def feature_dir(config: Any) -> Path:
    """``<data_path>/<dataset>``: the user's data folder (ml-100k included), never the package copy."""
    return Path(data_root(config)) / config["dataset"]


def feature_paths(config: Any) -> dict:
    """``{"item", "user", "clusters", "sidecar"}`` -> path of each feature file."""
    folder, name = feature_dir(config), config["dataset"]
    return {kind: folder / f"{name}.{suffix}" for kind, suffix in SUFFIXES.items()}


def data_files(config: Any) -> dict:
    """``{"inter", "item"}`` -> the atomic files the dataset is read from."""
    folder, name = Path(config["data_path"]), config["dataset"]
    return {kind: folder / f"{name}.{kind}" for kind in ("inter", "item")}


def file_sha256(path) -> str | None:
    """SHA-256 of a file, ``None`` when it does not exist."""
    return _file_sha256(path, missing_ok=True)


def rebuild_command(config: Any) -> str:
    """The command that rebuilds the features of ``config``'s dataset."""
    command = f"python -m recbole_sada.preprocess --dataset={config['dataset']}"
    root = str(data_root(config))
    if root.rstrip("/") != "dataset":
        command += f" --data_path={root}"
    return command + " (with the same --config_files and overrides as training)"


# ------------------------------------------------------------------------------ reading
def read_embedding_file(path, id_field: str, value_field: str, extra_field: str | None = None):
    """Read an atomic ``token / float_seq [/ token]`` file.

    Returns:
        (tokens, matrix, extra): ``list[str]``, ``(n, d)`` float32 array, ``list[str]`` or None.

    Raises:
        InputError: missing file, wrong header, rows of unequal length, non-numbers, NaN or inf.
    """
    import pandas as pd

    path = Path(path)
    expected = [f"{id_field}:token", f"{value_field}:float_seq"]
    if extra_field:
        expected.append(f"{extra_field}:token")
    with open(path, encoding="utf-8") as f:
        header = f.readline().rstrip("\r\n").split("\t")
    if header != expected:
        raise InputError(
            f"{path}: header is {' '.join(header)}, expected {' '.join(expected)}; rebuild it "
            "with python -m recbole_sada.preprocess")
    frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, quoting=csv.QUOTE_NONE,
                        encoding="utf-8")
    tokens = frame.iloc[:, 0].tolist()
    values = frame.iloc[:, 1].tolist()
    lengths = {v.count(" ") + 1 for v in values}
    if len(lengths) > 1:
        raise InputError(
            f"{path}: embedding rows have different lengths {sorted(lengths)[:5]}; the file is "
            "corrupt, rebuild it with python -m recbole_sada.preprocess")
    try:
        matrix = np.array(" ".join(values).split(), dtype=np.float32).reshape(len(values), -1)
    except ValueError:
        raise InputError(
            f"{path}: an embedding value is not a number; the file is corrupt, rebuild it with "
            "python -m recbole_sada.preprocess") from None
    finite = np.isfinite(matrix).all(axis=1)
    if not finite.all():
        bad = int(np.flatnonzero(~finite)[0])
        raise InputError(
            f"{path}: {int((~finite).sum())} rows hold NaN or infinite values (first: {id_field} "
            f"{tokens[bad]!r}, line {bad + 2}); rebuild it with python -m recbole_sada.preprocess")
    extra = frame.iloc[:, 2].tolist() if extra_field else None
    return tokens, matrix, extra


def _align(dataset, field_name: str, tokens, matrix: np.ndarray, path: Path, fix: str) -> np.ndarray:
    """Rows of ``matrix`` placed at the dataset's remapped ids of ``tokens``; row 0 stays zero."""
    token2id = dataset.field2token_id[field_name]
    size = dataset.num(field_name)
    unknown = [t for t in tokens if t not in token2id or token2id[t] == 0]
    if unknown:
        raise InputError(
            f"{path}: {len(unknown)} {field_name}s are not in dataset '{dataset.dataset_name}' "
            f"(e.g. {', '.join(map(repr, unknown[:3]))}); the features were built for other data, "
            f"rebuild with: {fix}")
    ids = np.fromiter((token2id[t] for t in tokens), dtype=np.int64, count=len(tokens))
    if len(np.unique(ids)) != len(ids):
        raise InputError(f"{path}: repeated {field_name}s; rebuild with: {fix}")
    if len(ids) != size - 1:
        have = np.zeros(size, dtype=bool)
        have[ids] = True
        lacking = [dataset.field2id_token[field_name][i] for i in np.flatnonzero(~have)[1:4]]
        raise InputError(
            f"{path}: {size - 1 - len(ids)} {field_name}s of dataset '{dataset.dataset_name}' have "
            f"no row (e.g. {', '.join(map(repr, lacking))}); rebuild with: {fix}")
    out = np.zeros((size, matrix.shape[1]), dtype=np.float32)
    out[ids] = matrix
    return out


# ------------------------------------------------------------------------------ API
@dataclass
class SemanticFeatures:
    """Semantic features aligned with a RecBole dataset's remapped ids.

    Attributes:
        item_semantic: ``(n_items, d)`` float32; row ``i`` = item id ``i``; row 0 (padding) zeros,
            as are items without text.
        user_semantic: ``(n_users, d)`` float32; row 0 (padding) zeros, as are users without
            training text.
        user_cluster: ``(n_users,)`` int64 cluster of each user in ``[0, K)``; ``-1``
            (:data:`NO_CLUSTER`) for the padding user 0 and users without training text.
        cluster_distance: ``(K, K)`` float32 Euclidean distances between cluster centroids.
        cluster_nearest: ``(K, K-1)`` int64; row ``c`` = the other clusters, nearest first
            (``cluster_nearest[c, 0]`` is the cluster adjacent to ``c``).
        dim: ``d``.
        sidecar: the ``<dataset>.semantic.json`` record (encoder, settings, counts, hashes).
    """

    item_semantic: torch.Tensor
    user_semantic: torch.Tensor
    user_cluster: torch.Tensor
    cluster_distance: torch.Tensor
    cluster_nearest: torch.Tensor
    dim: int
    sidecar: dict = field(default_factory=dict)

    @property
    def n_clusters(self) -> int:
        return int(self.cluster_distance.shape[0])


def check_sidecar(config: Any, settings: dict | None = None) -> dict:
    """Read the sidecar and check it against the data files and the config.

    Raises:
        InputError: unreadable sidecar, ``.inter``/``.item`` changed since the build,
        ``semantic_dim`` set and different from the built dimension.
    """
    settings = settings or semantic_settings(config)
    paths = feature_paths(config)
    fix = rebuild_command(config)
    try:
        with open(paths["sidecar"], encoding="utf-8") as f:
            sidecar = json.load(f)
        hashes, dim = sidecar["data_sha256"], int(sidecar["dim"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(
            f"{paths['sidecar']} is unreadable ({type(exc).__name__}); rebuild with: {fix}") from None
    for kind, path in data_files(config).items():
        if hashes.get(kind) != file_sha256(path):
            raise InputError(
                f"{paths['sidecar']} does not match {path} (SHA-256 differs: the data changed "
                f"since the features were built); rebuild with: {fix}")
    wanted = settings.get("semantic_dim")
    if wanted is not None and wanted != dim:
        raise InputError(
            f"{paths['item']} holds {dim}-d embeddings but semantic_dim is {wanted}; rebuild "
            f"with: {fix} --semantic_dim={wanted}, or set semantic_dim to {dim} (or ~)")
    pca = sidecar.get("pca")
    if pca and "fit_items" not in pca:
        raise InputError(
            f"{paths['item']} was reduced by a PCA fit on every item, valid/test-only items included "
            f"(built by an older version); rebuild with: {fix} --semantic_dim={dim}")
    recorded = sidecar.get("settings", {})
    changed = [k for k in _RECORDED if k in recorded and recorded[k] != settings.get(k)]
    if changed:
        logger.warning(
            "%s was built with %s; the config now says %s. The existing features are used; "
            "rebuild with: %s", paths["sidecar"],
            ", ".join(f"{k}={recorded[k]!r}" for k in changed),
            ", ".join(f"{k}={settings.get(k)!r}" for k in changed), fix)
    return sidecar


@contextmanager
def preserved_rng():
    """Restore the Python, NumPy and torch random states afterwards (loading a model draws
    random numbers; training must not depend on whether the features were just built)."""
    states = (random.getstate(), np.random.get_state(), torch.random.get_rng_state())
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.random.set_rng_state(states[2])
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)


def ensure_semantic_features(config: Any, log: bool = True) -> dict:
    """Make sure the feature files of ``config``'s dataset exist and match; return the sidecar.

    Missing files are built with the configured encoder (by default the packaged offline
    MiniLM), unless ``semantic_auto_build`` is False.  Random states are left unchanged.

    Raises:
        InputError: files missing with building disabled, or a :func:`check_sidecar` error.
    """
    settings = semantic_settings(config)
    paths = feature_paths(config)
    missing = [p for p in paths.values() if not p.is_file()]
    if missing:
        if not settings["semantic_auto_build"]:
            raise InputError(
                f"semantic features missing: {missing[0]} not found (semantic_auto_build is False); "
                f"build them with: {rebuild_command(config)}")
        from recbole_sada.preprocess.build import build_semantic_features
        from recbole_sada.semantic import resolve_config

        encoder = resolve_config(config)
        if log:
            logger.info(
                "semantic features missing (%s); building them now with encoder %s:%s "
                "(same as: %s)", missing[0], encoder["encoder_backend"],
                encoder["encoder_model"] or "packaged all-MiniLM-L6-v2", rebuild_command(config))
        with preserved_rng():
            build_semantic_features(config, log=log)
    return check_sidecar(config, settings)


def load_semantic_features(config: Any, dataset, log: bool = True) -> SemanticFeatures:
    """Load the semantic features of ``dataset`` (any split: ids are shared), aligned with its
    remapped user and item ids.  Calls :func:`ensure_semantic_features` first.

    Raises:
        InputError: see :func:`ensure_semantic_features`; a file whose embedding size differs
        from the sidecar; ids in a file that the dataset lacks, or dataset ids without a row.
    """
    sidecar = ensure_semantic_features(config, log=log)
    paths = feature_paths(config)
    fix = rebuild_command(config)
    iid, uid = dataset.iid_field, dataset.uid_field
    item_tokens, item_matrix, _ = read_embedding_file(paths["item"], iid, ITEM_EMB_FIELD)
    user_tokens, user_matrix, clusters = read_embedding_file(
        paths["user"], uid, USER_EMB_FIELD, USER_CLUSTER_FIELD)
    dim = int(sidecar["dim"])
    for kind, matrix in (("item", item_matrix), ("user", user_matrix)):
        if matrix.shape[1] != dim:
            raise InputError(
                f"{paths[kind]} holds {matrix.shape[1]}-d embeddings but {paths['sidecar']} says "
                f"{dim}; rebuild with: {fix}")
    try:
        with open(paths["clusters"], encoding="utf-8") as f:
            distance = np.asarray(json.load(f)["distance"], dtype=np.float32)
        if distance.ndim != 2 or distance.shape[0] != distance.shape[1] or distance.shape[0] < 2:
            raise ValueError("not a square matrix")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(
            f"{paths['clusters']} has no K x K 'distance' matrix ({exc}); rebuild with: {fix}") from None
    n_clusters = distance.shape[0]
    try:
        cluster_ids = np.array([int(c) for c in clusters], dtype=np.int64)
        valid = not cluster_ids.size or (cluster_ids.min() >= NO_CLUSTER and cluster_ids.max() < n_clusters)
    except ValueError:
        valid = False
    if not valid:
        raise InputError(
            f"{paths['user']}: {USER_CLUSTER_FIELD} must be integers in [-1, {n_clusters}) as in "
            f"{paths['clusters']}; rebuild with: {fix}")

    item_semantic = _align(dataset, iid, item_tokens, item_matrix, paths["item"], fix)
    user_semantic = _align(dataset, uid, user_tokens, user_matrix, paths["user"], fix)
    user_cluster = np.full(dataset.num(uid), NO_CLUSTER, dtype=np.int64)
    user_cluster[np.array([dataset.field2token_id[uid][t] for t in user_tokens], dtype=np.int64)] = cluster_ids
    nearest = np.argsort(distance + np.diag(np.full(n_clusters, np.inf, dtype=np.float32)),
                         axis=1, kind="stable")[:, :-1]
    return SemanticFeatures(
        item_semantic=torch.from_numpy(item_semantic),
        user_semantic=torch.from_numpy(user_semantic),
        user_cluster=torch.from_numpy(user_cluster),
        cluster_distance=torch.from_numpy(distance),
        cluster_nearest=torch.from_numpy(nearest.astype(np.int64)),
        dim=dim,
        sidecar=sidecar,
    )
