"""The ``.aug`` atomic file (pseudo-prior items and reliability per user) and its sidecar.

Format (tab separated, RecBole atomic header)::

    user_id:token   pseudo_items:token_seq   reliability:float
    196             242 302 51               0.734

* ``pseudo_items`` are item tokens (the ids of the ``.inter`` file, not RecBole's remapped ids),
  oldest first: the last one is placed right before the user's first training item.
* ``reliability`` is omega_u of LLMSeR (Eq. 6), in [0, 1].

The sidecar ``<file>.json`` records how the file was made (sizes, backbone, LLM, prompt
versions, fallback counts) and two fingerprints of the data it belongs to: the SHA-256 of the
``.inter`` file and of the users' training sequences as RecBole split them (so filtering options
that change the sequences are caught too).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from recbole_sada.errors import InputError
from recbole_sada.fileio import atomic_path, atomic_write_text, file_sha256  # noqa: F401 (re-exported)

AUG_SUFFIX = "aug"
PSEUDO_FIELD = "pseudo_items"
RELIABILITY_FIELD = "reliability"
FORMAT_VERSION = 1


def default_aug_path(config):
    """``aug_file`` of the config, else ``<data folder>/<dataset>.aug``."""
    path = config["aug_file"] if "aug_file" in config else None
    if path:
        return Path(path)
    return Path(config["data_path"]) / f"{config['dataset']}.{AUG_SUFFIX}"


def sidecar_path(aug_path):
    return Path(str(aug_path) + ".json")


def sequences_sha256(user_tokens, token_seqs):
    """Fingerprint of per-user token sequences (``user \\t items`` lines, users sorted by token)."""
    digest = hashlib.sha256()
    for user, items in sorted(zip(map(str, user_tokens), token_seqs)):
        digest.update(f"{user}\t{' '.join(map(str, items))}\n".encode())
    return digest.hexdigest()


def write_aug(path, uid_field, rows, meta):
    """Write ``rows`` (``(user token, [item tokens oldest first], reliability)``) and the sidecar.

    Both files are written to a temporary name first and then renamed, so a reader never sees a
    half-written file.
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(f"{uid_field}:token\t{PSEUDO_FIELD}:token_seq\t{RELIABILITY_FIELD}:float\n")
            for user, items, omega in rows:
                f.write(f"{user}\t{' '.join(map(str, items))}\t{float(omega):.6f}\n")
    atomic_write_text(sidecar_path(path), json.dumps({"format": FORMAT_VERSION, **meta}, indent=2, sort_keys=True, default=str))


def read_aug(path, uid_field, make_hint):
    """Read an ``.aug`` file.

    Args:
        path: the file.
        uid_field: expected user field name (``USER_ID_FIELD``).
        make_hint: the command that makes the file, quoted in every error.

    Returns:
        (rows, meta): ``rows`` is a list of ``(user token, [item tokens], reliability)``; ``meta``
        is the sidecar dict (empty when there is none).

    Raises:
        InputError: one line naming the file, the problem and ``make_hint``.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"LLMSeR needs the pseudo-item file {path}, which is missing; make it with: {make_hint}")
    with open(path, encoding="utf-8") as f:
        header = f.readline().rstrip("\r\n").split("\t")
        names = [h.partition(":")[0] for h in header]
        expected = [uid_field, PSEUDO_FIELD, RELIABILITY_FIELD]
        if names != expected:
            raise InputError(
                f"{path}: header {header} is not {expected} (with :token, :token_seq, :float); "
                f"remake it with: {make_hint}"
            )
        rows = []
        for lineno, line in enumerate(f, start=2):
            line = line.rstrip("\r\n")
            if not line:
                continue
            parts = line.split("\t")
            try:
                if len(parts) != 3:
                    raise ValueError(f"{len(parts)} fields")
                omega = float(parts[2])
                if not 0.0 <= omega <= 1.0:
                    raise ValueError(f"reliability {omega} outside [0, 1]")
            except ValueError as exc:
                raise InputError(f"{path}:{lineno}: malformed row ({exc}); remake it with: {make_hint}") from None
            rows.append((parts[0], parts[1].split(), omega))
    meta = {}
    side = sidecar_path(path)
    if side.is_file():
        try:
            meta = json.loads(side.read_text())
        except json.JSONDecodeError:
            raise InputError(f"{side} is not valid JSON; remake it with: {make_hint}") from None
    return rows, meta


# ------------------------------------------------------------------------------------ reading for a dataset
def make_command(config, backbone):
    """The command that (re)makes the ``.aug`` file of ``config``."""
    from recbole_sada.config import data_root

    cmd = f"python -m recbole_sada.llmser --dataset={config['dataset']} --backbone={backbone}"
    root = str(data_root(config))
    if root.rstrip("/") != "dataset":
        cmd += f" --data_path={root}"
    if config["aug_file"]:
        cmd += f" --aug_file={config['aug_file']}"
    return cmd


def load_pseudo_items(config, dataset, backbone):
    """Read and check the ``.aug`` file; map it to remapped ids.

    Returns:
        (pseudo, pseudo_len, omega, train_len): ``pseudo`` (n_users, M) int64 (oldest first, left
        aligned), ``pseudo_len`` (n_users,), ``omega`` (n_users,) float, ``train_len`` (n_users,).
    """
    from recbole_sada.data.dataset import training_sequences

    uid_field, iid_field = config["USER_ID_FIELD"], config["ITEM_ID_FIELD"]
    path = default_aug_path(config)
    hint = make_command(config, backbone)
    rows, meta = read_aug(path, uid_field, hint)
    uids, seqs = training_sequences(dataset)
    item_token = dataset.field2id_token[iid_field]
    user_token = dataset.field2id_token[uid_field]
    inter = Path(config["data_path"]) / f"{config['dataset']}.inter"
    if meta.get("inter_sha256") and inter.is_file() and meta["inter_sha256"] != file_sha256(inter):
        raise InputError(f"{path} was made from another version of {inter} (its SHA-256 differs); remake it with: {hint}")
    if meta.get("sequences_sha256"):
        current = sequences_sha256([user_token[u] for u in uids], [[item_token[i] for i in s] for s in seqs])
        if meta["sequences_sha256"] != current:
            raise InputError(
                f"{path} was made from other training sequences (different filtering or split options); remake it with: {hint}"
            )
    user_id = dataset.field2token_id[uid_field]
    item_id = dataset.field2token_id[iid_field]
    n_users = dataset.user_num
    width = max([len(items) for _, items, _ in rows] + [1])
    pseudo = np.zeros((n_users, width), dtype=np.int64)
    pseudo_len = np.zeros(n_users, dtype=np.int64)
    omega = np.zeros(n_users, dtype=np.float64)
    seen = np.zeros(n_users, dtype=bool)
    for user, items, w in rows:
        u = user_id.get(user)
        if u is None:
            raise InputError(f"{path}: user '{user}' is not in dataset '{config['dataset']}'; remake it with: {hint}")
        try:
            ids = [item_id[i] for i in items]
        except KeyError as exc:
            raise InputError(
                f"{path}: item '{exc.args[0]}' of user '{user}' is not in dataset '{config['dataset']}'; remake it with: {hint}"
            ) from None
        pseudo[u, : len(ids)] = ids
        pseudo_len[u] = len(ids)
        omega[u] = w
        seen[u] = True
    missing = [user_token[u] for u in uids if not seen[u]]
    if missing:
        raise InputError(
            f"{path} has no row for {len(missing)} of the {len(uids)} users with training data (e.g. "
            f"'{missing[0]}'); remake it with: {hint}"
        )
    train_len = np.zeros(n_users, dtype=np.int64)
    train_len[uids] = [len(s) for s in seqs]
    return pseudo, pseudo_len, omega, train_len
