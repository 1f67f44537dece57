"""Convert an S3-Rec sequence file into RecBole atomic files.

The S3-Rec / CoSeRec / ICLRec / BASRec releases of the Amazon data ship one
line per user::

    user_id item_1 item_2 ... item_n

with the items in time order and integer ids starting at 1.  This script
writes ``<dataset>.inter`` (``user_id:token  item_id:token  timestamp:float``)
where the timestamp is the 1-based position of the item in the user's line,
so RecBole's ``order: TO`` reproduces the line order and the leave-one-out
split is the papers' one (last item = test, second last = valid).

Item text can be added in one of two ways:

* ``--item-file``: an atomic item file keyed by the same integer ids
  (header validated, rows copied);
* ``--meta`` + ``--asin-map``: an ASIN-keyed Amazon metadata dump (JSON lines
  or the Python-literal dict lines of the 2014 dumps, optionally gzipped)
  joined through an ``item_id<TAB>asin`` map.

Text encodings used in the written ``.item`` file:

* ``title:token`` and ``brand:token``: every whitespace run (tabs, newlines
  included) becomes one space, the value is stripped, and a double quote
  ``"`` becomes two single quotes ``''`` (a field starting with ``"`` would
  otherwise be read as a quoted field by the tab-separated reader).
* ``categories:token_seq``: the category tree (list of lists, or a flat list)
  is flattened, each category name has its inner whitespace replaced by
  ``_`` (``Nail Polish`` -> ``Nail_Polish``), duplicates are dropped keeping
  the first occurrence, and the names are joined by single spaces (RecBole's
  default ``seq_separator``).

Malformed input raises ``ValueError("<file>:<line>: <reason>")``; the command
line prints that message to stderr and exits with status 2.
"""

from __future__ import annotations

import argparse
import ast
import gzip
import json
import math
import os
import sys
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

INTER_HEADER = ("user_id:token", "item_id:token", "timestamp:float")
ITEM_HEADER = ("item_id:token", "title:token", "categories:token_seq")
META_ITEM_HEADER = ("item_id:token", "title:token", "brand:token", "categories:token_seq")
ATOMIC_TYPES = ("token", "token_seq", "float", "float_seq")
GZIP_MAGIC = b"\x1f\x8b"


# ---------------------------------------------------------------------------
# Shared helpers (also used by the raw Amazon converter)
# ---------------------------------------------------------------------------


def line_error(path: os.PathLike | str, lineno: int, reason: str) -> ValueError:
    """Build the ``ValueError`` used for every malformed input line."""
    return ValueError(f"{path}:{lineno}: {reason}")


def open_text(path: os.PathLike | str):
    """Open a UTF-8 text file for reading, transparently gunzipping it."""
    with open(path, "rb") as handle:
        magic = handle.read(2)
    if magic == GZIP_MAGIC:
        return gzip.open(path, "rt", encoding="utf-8", newline="\n")
    return open(path, "r", encoding="utf-8", newline="\n")


def numbered_lines(path: os.PathLike | str) -> Iterator[tuple[int, str]]:
    """Yield ``(1-based line number, line without its line terminator)``."""
    with open_text(path) as handle:
        for lineno, line in enumerate(handle, start=1):
            yield lineno, line.rstrip("\r\n")


def parse_record(line: str, path: os.PathLike | str, lineno: int) -> dict:
    """Parse one metadata/review line: JSON first, then a Python literal."""
    if not line.strip():
        raise line_error(path, lineno, "empty line")
    try:
        record = json.loads(line)
    except ValueError:
        try:
            record = ast.literal_eval(line)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            raise line_error(path, lineno, "neither JSON nor a Python literal") from None
    if not isinstance(record, dict):
        raise line_error(path, lineno, f"expected an object, got {type(record).__name__}")
    return record


def clean_text(value: Any) -> str:
    """Encode a free-text value (title, brand) as a single-line token."""
    if value is None:
        return ""
    if isinstance(value, float) and math.isnan(value):
        return ""
    text = " ".join(str(value).split())
    return text.replace('"', "''")


def _flatten(value: Any) -> Iterator[str]:
    """Yield every string inside arbitrarily nested lists/tuples."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, (list, tuple)):
        for element in value:
            yield from _flatten(element)


def encode_categories(value: Any) -> str:
    """Encode a category tree as a space-separated ``token_seq`` value.

    Inner whitespace of a category name becomes ``_``, duplicates are removed
    (first occurrence kept) and empty names are skipped.
    """
    seen: dict[str, None] = {}
    for name in _flatten(value):
        token = "_".join(name.split()).replace('"', "''")
        if token:
            seen.setdefault(token, None)
    return " ".join(seen)


def metadata_fields(record: dict) -> tuple[str, str, str]:
    """Return ``(title, brand, categories)`` of one Amazon metadata record.

    Both the 2014 field ``categories`` (list of lists) and the 2018 field
    ``category`` (flat list) are understood.
    """
    categories = record.get("categories")
    if categories is None:
        categories = record.get("category")
    return (
        clean_text(record.get("title")),
        clean_text(record.get("brand")),
        encode_categories(categories),
    )


def load_metadata(
    meta_path: os.PathLike | str, wanted: set[str] | None = None
) -> dict[str, tuple[str, str, str]]:
    """Read an ASIN-keyed metadata dump into ``{asin: (title, brand, categories)}``.

    Every line is parsed and validated; only ASINs in ``wanted`` are kept
    (all of them when ``wanted`` is None).  When an ASIN occurs twice the
    first record wins.
    """
    metadata: dict[str, tuple[str, str, str]] = {}
    for lineno, line in numbered_lines(meta_path):
        record = parse_record(line, meta_path, lineno)
        asin = record.get("asin")
        if not isinstance(asin, str) or not asin.strip():
            raise line_error(meta_path, lineno, "missing or empty 'asin'")
        asin = asin.strip()
        if (wanted is None or asin in wanted) and asin not in metadata:
            metadata[asin] = metadata_fields(record)
    return metadata


def write_atomic(path: Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> int:
    """Write a tab-separated atomic file and return the number of data rows."""
    count = 0
    with open(path, "w", encoding="utf-8", newline="\n") as handle:
        handle.write("\t".join(header) + "\n")
        for row in rows:
            handle.write("\t".join(str(field) for field in row) + "\n")
            count += 1
    return count


def check_dataset_name(dataset: str) -> None:
    """Reject dataset names that cannot be used as a file stem."""
    if not dataset or dataset in (".", "..") or "/" in dataset or os.sep in dataset:
        raise ValueError(f"invalid dataset name {dataset!r}")


# ---------------------------------------------------------------------------
# S3-Rec specific readers
# ---------------------------------------------------------------------------


def parse_id(text: str, path: os.PathLike | str, lineno: int, what: str) -> int:
    """Parse a positive integer id or raise a line-numbered ``ValueError``."""
    try:
        value = int(text)
    except ValueError:
        raise line_error(path, lineno, f"{what} {text!r} is not an integer") from None
    if value < 1:
        raise line_error(path, lineno, f"{what} {value} is not a positive integer")
    return value


def read_sequences(input_path: os.PathLike | str) -> list[tuple[int, list[int]]]:
    """Read ``user_id item_1 ... item_n`` lines into ``[(user, [items])]``."""
    sequences: list[tuple[int, list[int]]] = []
    seen_users: dict[int, int] = {}
    for lineno, line in numbered_lines(input_path):
        fields = line.split()
        if not fields:
            raise line_error(input_path, lineno, "empty line")
        user = parse_id(fields[0], input_path, lineno, "user id")
        if len(fields) < 2:
            raise line_error(input_path, lineno, f"user {user} has no items")
        if user in seen_users:
            raise line_error(
                input_path, lineno, f"duplicate user id {user} (first on line {seen_users[user]})"
            )
        seen_users[user] = lineno
        items = [parse_id(field, input_path, lineno, "item id") for field in fields[1:]]
        sequences.append((user, items))
    if not sequences:
        raise ValueError(f"{input_path}: no user lines")
    return sequences


def parse_header(line: str, path: os.PathLike | str) -> list[str]:
    """Validate an atomic item header (``item_id:token`` first, typed fields)."""
    header = line.split("\t")
    if header[0] != "item_id:token":
        raise line_error(path, 1, f"header must start with 'item_id:token', got {header[0]!r}")
    names = set()
    for field in header:
        name, sep, kind = field.partition(":")
        if not sep or not name or kind not in ATOMIC_TYPES:
            raise line_error(path, 1, f"bad header field {field!r} (expected name:type)")
        if name in names:
            raise line_error(path, 1, f"duplicate header field {name!r}")
        names.add(name)
    return header


def read_item_file(item_file: os.PathLike | str) -> tuple[list[str], dict[int, list[str]]]:
    """Read an id-keyed atomic item file into ``(header, {item_id: fields})``."""
    header: list[str] | None = None
    rows: dict[int, list[str]] = {}
    for lineno, line in numbered_lines(item_file):
        if header is None:
            header = parse_header(line, item_file)
            continue
        if not line.strip():
            raise line_error(item_file, lineno, "empty line")
        fields = line.split("\t")
        if len(fields) != len(header):
            raise line_error(
                item_file, lineno, f"expected {len(header)} fields, got {len(fields)}"
            )
        item = parse_id(fields[0], item_file, lineno, "item id")
        if item in rows:
            raise line_error(item_file, lineno, f"duplicate item id {item}")
        rows[item] = fields[1:]
    if header is None:
        raise line_error(item_file, 1, "missing header")
    return header, rows


def read_asin_map(asin_map: os.PathLike | str) -> dict[int, str]:
    """Read ``item_id<TAB>asin`` lines (an ``item_id  asin`` header is allowed)."""
    mapping: dict[int, str] = {}
    seen_asins: dict[str, int] = {}
    for lineno, line in numbered_lines(asin_map):
        fields = line.split("\t")
        if lineno == 1 and fields[0].strip().lower().startswith("item_id"):
            continue
        if len(fields) != 2 or not fields[1].strip():
            raise line_error(asin_map, lineno, "expected 'item_id<TAB>asin'")
        item = parse_id(fields[0].strip(), asin_map, lineno, "item id")
        asin = fields[1].strip()
        if item in mapping:
            raise line_error(asin_map, lineno, f"duplicate item id {item}")
        if asin in seen_asins:
            raise line_error(
                asin_map, lineno, f"asin {asin} already mapped to item {seen_asins[asin]}"
            )
        mapping[item] = asin
        seen_asins[asin] = item
    return mapping


def inter_rows(sequences: list[tuple[int, list[int]]]) -> Iterator[tuple[int, int, int]]:
    """Yield ``(user, item, position)`` with 1-based positions in line order."""
    for user, items in sequences:
        for position, item in enumerate(items, start=1):
            yield user, item, position


def item_rows_from_file(
    items: list[int], item_file: os.PathLike | str, counts: dict
) -> tuple[list[str], list[list[Any]]]:
    """Build item rows for ``items`` from an id-keyed atomic item file."""
    header, rows = read_item_file(item_file)
    empty = [""] * (len(header) - 1)
    table = [[item, *rows.get(item, empty)] for item in items]
    counts["items_without_metadata"] = sum(1 for item in items if item not in rows)
    wanted = set(items)
    counts["item_rows_unused"] = sum(1 for item in rows if item not in wanted)
    return header, table


def item_rows_from_meta(
    items: list[int], meta_path: os.PathLike | str, asin_map: os.PathLike | str, counts: dict
) -> tuple[list[str], list[list[Any]]]:
    """Build item rows for ``items`` by joining metadata through an ASIN map."""
    asins = read_asin_map(asin_map)
    wanted = {asins[item] for item in items if item in asins}
    metadata = load_metadata(meta_path, wanted)
    table = []
    missing = 0
    for item in items:
        fields = metadata.get(asins.get(item, ""))
        if fields is None:
            missing += 1
            fields = ("", "", "")
        table.append([item, *fields])
    counts["items_without_asin"] = sum(1 for item in items if item not in asins)
    counts["items_without_metadata"] = missing
    return list(META_ITEM_HEADER), table


def convert_s3rec(
    input_path: os.PathLike | str,
    output_dir: os.PathLike | str,
    dataset: str,
    item_file: os.PathLike | str | None = None,
    meta_path: os.PathLike | str | None = None,
    asin_map: os.PathLike | str | None = None,
) -> dict:
    """Convert an S3-Rec sequence file (and optional item text) to atomic files.

    Everything is read and validated before anything is written.  Returns a
    dict of counts: ``users``, ``items``, ``interactions``, ``item_rows``
    (0 when no item file is written), ``items_without_metadata`` and, for
    ``item_file``, ``item_rows_unused`` (rows of ids absent from the
    sequences, dropped) or, for ``meta_path``, ``items_without_asin``.
    """
    check_dataset_name(dataset)
    if item_file is not None and meta_path is not None:
        raise ValueError("give either an item file or metadata, not both")
    if meta_path is not None and asin_map is None:
        raise ValueError("metadata needs an item_id -> asin map")
    if asin_map is not None and meta_path is None:
        raise ValueError("an asin map is only used together with metadata")

    sequences = read_sequences(input_path)
    items = sorted({item for _, seq in sequences for item in seq})
    counts = {
        "users": len(sequences),
        "items": len(items),
        "interactions": sum(len(seq) for _, seq in sequences),
        "item_rows": 0,
    }
    item_table = None
    if item_file is not None:
        item_table = item_rows_from_file(items, item_file, counts)
    elif meta_path is not None:
        item_table = item_rows_from_meta(items, meta_path, asin_map, counts)

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / f"{dataset}.inter", INTER_HEADER, inter_rows(sequences))
    if item_table is not None:
        header, rows = item_table
        counts["item_rows"] = write_atomic(out / f"{dataset}.item", header, rows)
    return counts


def format_summary(dataset: str, output_dir: os.PathLike | str, counts: dict) -> str:
    """One-paragraph human-readable summary of a conversion."""
    lines = [
        f"{dataset}: {counts['users']} users, {counts['items']} items, "
        f"{counts['interactions']} interactions -> {Path(output_dir) / (dataset + '.inter')}"
    ]
    if counts.get("item_rows"):
        lines.append(
            f"{dataset}.item: {counts['item_rows']} rows, "
            f"{counts.get('items_without_metadata', 0)} items without metadata"
        )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """Command-line interface."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", required=True, help="S3-Rec file: user_id item_1 ... item_n")
    parser.add_argument("--output-dir", required=True, help="folder for <dataset>.inter/.item")
    parser.add_argument("--dataset", required=True, help="dataset name (file stem)")
    text = parser.add_mutually_exclusive_group()
    text.add_argument("--item-file", help="id-keyed atomic item file to copy")
    text.add_argument("--meta", help="ASIN-keyed Amazon metadata (.json or .json.gz)")
    parser.add_argument("--asin-map", help="item_id<TAB>asin file (required with --meta)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the converter; malformed input exits with status 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if (args.meta is None) != (args.asin_map is None):
        parser.error("--meta and --asin-map go together")
    try:
        counts = convert_s3rec(
            args.input,
            args.output_dir,
            args.dataset,
            item_file=args.item_file,
            meta_path=args.meta,
            asin_map=args.asin_map,
        )
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(format_summary(args.dataset, args.output_dir, counts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
