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

from recbole_sada.errors import SADAInputError
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
        SADAInputError: one line naming the file, the problem and ``make_hint``.
    """
    path = Path(path)
    if not path.is_file():
        raise SADAInputError(f"LLMSeR needs the pseudo-item file {path}, which is missing; make it with: {make_hint}")
    with open(path, encoding="utf-8") as f:
        header = f.readline().rstrip("\r\n").split("\t")
        names = [h.partition(":")[0] for h in header]
        expected = [uid_field, PSEUDO_FIELD, RELIABILITY_FIELD]
        if names != expected:
            raise SADAInputError(
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
                raise SADAInputError(f"{path}:{lineno}: malformed row ({exc}); remake it with: {make_hint}") from None
            rows.append((parts[0], parts[1].split(), omega))
    meta = {}
    side = sidecar_path(path)
    if side.is_file():
        try:
            meta = json.loads(side.read_text())
        except json.JSONDecodeError:
            raise SADAInputError(f"{side} is not valid JSON; remake it with: {make_hint}") from None
    return rows, meta
