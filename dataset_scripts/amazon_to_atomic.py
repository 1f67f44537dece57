"""Convert raw Amazon review/metadata dumps into RecBole atomic files.

Input: ``reviews_<Category>.json(.gz)`` (fields ``reviewerID``, ``asin``,
``overall``, ``unixReviewTime``) and, optionally, ``meta_<Category>.json(.gz)``
(fields ``asin``, ``title``, ``brand``, ``categories``).  Both may be JSON
lines or the Python-literal dict lines of the 2014 dumps.

Output:

* ``<dataset>.inter``: ``user_id:token  item_id:token  rating:float
  timestamp:float`` (reviewerID, asin, overall, unixReviewTime), grouped by
  user in order of first appearance, each user's rows sorted by time (ties
  keep file order).  Repeated (user, item) reviews are kept.
* ``<dataset>.item`` (only with metadata): ``item_id:token  title:token
  brand:token  categories:token_seq`` for every item left after filtering,
  in order of first appearance in ``.inter``; items without a metadata
  record get empty fields and are counted.  Text encodings are those of
  ``s3rec_to_atomic`` (whitespace collapsed, ``"`` -> ``''``, category names
  with inner spaces -> ``_``, space separated, duplicates dropped).

Users and items are filtered to the k-core iteratively (``--k 5`` by
default; ``--k 0`` disables): rows of users or items with fewer than k
interactions are removed, repeatedly, until every remaining user and item
has at least k.

Malformed input raises ``ValueError("<file>:<line>: <reason>")``; the command
line prints that message to stderr and exits with status 2.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any, NamedTuple, Sequence

try:
    from .s3rec_to_atomic import (
        check_dataset_name,
        line_error,
        load_metadata,
        numbered_lines,
        parse_record,
        write_atomic,
    )
except ImportError:  # run as a script: the folder itself is on sys.path
    from s3rec_to_atomic import (  # type: ignore[no-redef]
        check_dataset_name,
        line_error,
        load_metadata,
        numbered_lines,
        parse_record,
        write_atomic,
    )

INTER_HEADER = ("user_id:token", "item_id:token", "rating:float", "timestamp:float")
ITEM_HEADER = ("item_id:token", "title:token", "brand:token", "categories:token_seq")


class Review(NamedTuple):
    """One interaction taken from a review line."""

    user: str
    item: str
    rating: float
    timestamp: int


def _token(record: dict, key: str, path: os.PathLike | str, lineno: int) -> str:
    """A non-empty single-line string field, used as a RecBole token."""
    value = record.get(key)
    if not isinstance(value, str) or not value.strip():
        raise line_error(path, lineno, f"missing or empty {key!r}")
    if any(char in value for char in "\t\r\n"):
        raise line_error(path, lineno, f"{key!r} contains a tab or line break")
    return value.strip()


def _rating(record: dict, path: os.PathLike | str, lineno: int) -> float:
    """The ``overall`` star rating as a finite float."""
    value = record.get("overall")
    if isinstance(value, bool):
        value = None
    try:
        rating = float(value)
    except (TypeError, ValueError):
        raise line_error(path, lineno, f"'overall' {value!r} is not a number") from None
    if not math.isfinite(rating):
        raise line_error(path, lineno, f"'overall' {value!r} is not finite")
    return rating


def _timestamp(record: dict, path: os.PathLike | str, lineno: int) -> int:
    """The ``unixReviewTime`` as an integer number of seconds."""
    value = record.get("unixReviewTime")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    elif isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            pass
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise line_error(path, lineno, f"'unixReviewTime' {value!r} is not an integer")


def read_reviews(reviews_path: os.PathLike | str) -> list[Review]:
    """Parse and validate every review line."""
    reviews = []
    for lineno, line in numbered_lines(reviews_path):
        record = parse_record(line, reviews_path, lineno)
        reviews.append(
            Review(
                user=_token(record, "reviewerID", reviews_path, lineno),
                item=_token(record, "asin", reviews_path, lineno),
                rating=_rating(record, reviews_path, lineno),
                timestamp=_timestamp(record, reviews_path, lineno),
            )
        )
    if not reviews:
        raise ValueError(f"{reviews_path}: no reviews")
    return reviews


def kcore_filter(reviews: list[Review], k: int) -> tuple[list[Review], int]:
    """Iteratively keep users and items with at least ``k`` interactions.

    Returns the surviving reviews (input order kept) and the number of
    filtering rounds that removed something.  ``k <= 1`` keeps everything.
    """
    if k <= 1:
        return list(reviews), 0
    rounds = 0
    while True:
        users = Counter(review.user for review in reviews)
        items = Counter(review.item for review in reviews)
        kept = [r for r in reviews if users[r.user] >= k and items[r.item] >= k]
        if len(kept) == len(reviews):
            return kept, rounds
        reviews = kept
        rounds += 1


def order_by_user_time(reviews: list[Review]) -> list[Review]:
    """Group by user (first appearance order), then sort each user by time."""
    first_seen: dict[str, int] = {}
    for review in reviews:
        first_seen.setdefault(review.user, len(first_seen))
    return sorted(reviews, key=lambda r: (first_seen[r.user], r.timestamp))


def _number(value: float) -> str:
    """Write integral floats without a trailing ``.0``."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def convert_amazon(
    reviews_path: os.PathLike | str,
    output_dir: os.PathLike | str,
    dataset: str,
    meta_path: os.PathLike | str | None = None,
    k: int = 5,
) -> dict:
    """Convert Amazon reviews (and optional metadata) to atomic files.

    Returns a dict of counts: ``reviews`` (lines read), ``users``, ``items``,
    ``interactions`` (after k-core), ``kcore_rounds``, ``item_rows`` (0
    without metadata) and ``items_without_metadata``.
    """
    check_dataset_name(dataset)
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    reviews = read_reviews(reviews_path)
    kept, rounds = kcore_filter(reviews, k)
    kept = order_by_user_time(kept)
    items = list(dict.fromkeys(review.item for review in kept))
    counts: dict[str, Any] = {
        "reviews": len(reviews),
        "users": len({review.user for review in kept}),
        "items": len(items),
        "interactions": len(kept),
        "kcore_rounds": rounds,
        "item_rows": 0,
        "items_without_metadata": 0,
    }
    item_table = None
    if meta_path is not None:
        metadata = load_metadata(meta_path, set(items))
        empty = ("", "", "")
        item_table = [[item, *metadata.get(item, empty)] for item in items]
        counts["items_without_metadata"] = sum(1 for item in items if item not in metadata)

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(
        out / f"{dataset}.inter",
        INTER_HEADER,
        ((r.user, r.item, _number(r.rating), r.timestamp) for r in kept),
    )
    if item_table is not None:
        counts["item_rows"] = write_atomic(out / f"{dataset}.item", ITEM_HEADER, item_table)
    return counts


def build_parser() -> argparse.ArgumentParser:
    """Command-line interface."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reviews", required=True, help="reviews_<Cat>.json(.gz)")
    parser.add_argument("--meta", help="meta_<Cat>.json(.gz) (optional)")
    parser.add_argument("--output-dir", required=True, help="folder for <dataset>.inter/.item")
    parser.add_argument("--dataset", required=True, help="dataset name (file stem)")
    parser.add_argument("--k", type=int, default=5, help="k-core threshold (0 disables)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the converter; malformed input exits with status 2."""
    args = build_parser().parse_args(argv)
    try:
        counts = convert_amazon(
            args.reviews, args.output_dir, args.dataset, meta_path=args.meta, k=args.k
        )
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(
        f"{args.dataset}: {counts['users']} users, {counts['items']} items, "
        f"{counts['interactions']} interactions ({counts['reviews']} reviews read, "
        f"k={args.k}, {counts['kcore_rounds']} filtering rounds) -> "
        f"{Path(args.output_dir) / (args.dataset + '.inter')}"
    )
    if counts["item_rows"]:
        print(
            f"{args.dataset}.item: {counts['item_rows']} rows, "
            f"{counts['items_without_metadata']} items without metadata"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
