"""Checks of atomic files before RecBole reads them, so bad rows are one-line errors.

RecBole reads ``.inter`` / ``.item`` / ``.user`` (and extra feature) files with pandas, which
accepts a row with a missing field (the value becomes NaN, and RecBole fills a float column's NaN
with the column mean: a missing timestamp silently becomes the mean time), ignores nothing on an
extra field, and ends in a traceback on a non-numeric timestamp or a header-only file.
:func:`check_atomic_file` refuses each of these with the file, the line and the fix, and counts
exactly repeated ``(user, item, timestamp)`` rows of an ``.inter`` file
(:func:`duplicate_interactions`), which RecBole keeps unless ``rm_dup_inter`` is set.
"""
from __future__ import annotations

import math
import re
from pathlib import Path

from recbole_sada.errors import InputError

TYPES = ("token", "token_seq", "float", "float_seq")
_NOT_FINITE = re.compile(r"(?i)(?<![a-z])(nan|[+-]?inf(inity)?)(?![a-z])")


def _header(path: Path, line: str, sep: str):
    fields = []
    for part in line.rstrip("\r\n").split(sep):
        name, _, ftype = part.partition(":")
        if ftype not in TYPES:
            raise InputError(
                f"{path} line 1: header field {part!r} needs one of the types {', '.join(TYPES)} "
                f"(e.g. user_id:token, timestamp:float), fields separated by tabs")
        fields.append((name, ftype))
    return fields


def check_atomic_file(path, sep: str = "\t", time_field: str | None = None, encoding: str = "utf-8",
                      required: bool = True) -> int:
    """Check an atomic file row by row; returns the number of data rows.

    Raises:
        InputError: bad header, no data rows (``required``), a row with more or fewer fields
        than the header, a float field that is not a number, an empty ``time_field``, NaN or
        infinite values in a float / float_seq field.
    """
    path = Path(path)
    rows = 0
    with open(path, encoding=encoding) as f:
        first = f.readline()
        if not first.strip():
            raise InputError(f"{path} is empty: its first line must be the header (e.g. user_id:token)")
        fields = _header(path, first, sep)
        n = len(fields)
        floats = [(i, name) for i, (name, t) in enumerate(fields) if t == "float"]
        float_seqs = [(i, name) for i, (name, t) in enumerate(fields) if t == "float_seq"]
        for number, line in enumerate(f, start=2):
            line = line.rstrip("\r\n")
            if not line:
                continue
            values = line.split(sep)
            if len(values) != n:
                raise InputError(
                    f"{path} line {number} has {len(values)} fields, the header has {n} "
                    f"({', '.join(name for name, _ in fields)}): a missing or extra tab? fix or remove the line")
            for i, name in floats:
                value = values[i].strip()
                if not value:
                    if name == time_field:
                        raise InputError(f"{path} line {number}: empty {name}; every interaction needs a time")
                    continue
                try:
                    number_value = float(value)
                except ValueError:
                    raise InputError(
                        f"{path} line {number}: {name} is {value[:40]!r}, not a number (a float field; "
                        f"convert it, e.g. dates to Unix seconds)") from None
                if not math.isfinite(number_value):
                    raise InputError(f"{path} line {number}: {name} is {value!r}; values must be finite")
            for i, name in float_seqs:
                if _NOT_FINITE.search(values[i]):
                    raise InputError(
                        f"{path} line {number}: {name} holds NaN or infinite values; rebuild or fix the file")
            rows += 1
    if required and rows == 0:
        raise InputError(f"{path} has a header but no rows; add its interactions (one per line)")
    return rows


def duplicate_interactions(frame, uid_field: str, iid_field: str, time_field: str | None):
    """``(count, example)``: rows that repeat an earlier ``(user, item[, timestamp])`` row exactly,
    and the first such (user, item), or ``(0, None)``."""
    cols = [c for c in (uid_field, iid_field, time_field) if c and c in frame.columns]
    if len(cols) < 2:
        return 0, None
    dup = frame.duplicated(subset=cols, keep="first")
    count = int(dup.sum())
    if not count:
        return 0, None
    row = frame[dup].iloc[0]
    return count, (row[uid_field], row[iid_field])
