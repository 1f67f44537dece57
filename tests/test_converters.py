"""Tests of the dataset converters (S3-Rec sequences and raw Amazon dumps)."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from dataset_scripts.amazon_to_atomic import (  # noqa: E402
    convert_amazon,
    kcore_filter,
    read_reviews,
)
from dataset_scripts.s3rec_to_atomic import (  # noqa: E402
    clean_text,
    convert_s3rec,
    encode_categories,
)

SHARED = Path(
    os.environ.get(
        "SADA_SHARED_DATASETS", Path(__file__).resolve().parents[2] / "shared" / "datasets"
    )
)
ITEM_HEADER = "item_id:token\ttitle:token\tcategories:token_seq"


def write(path: Path, text: str) -> Path:
    """Write ``text`` (gzipped when the name ends in .gz) and return the path."""
    if path.suffix == ".gz":
        with gzip.open(path, "wt", encoding="utf-8") as handle:
            handle.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def read_rows(path: Path) -> list[list[str]]:
    """Read an atomic file as rows of fields (header included)."""
    with open(path, encoding="utf-8", newline="\n") as handle:
        return [line.rstrip("\n").split("\t") for line in handle]


# ---------------------------------------------------------------------------
# S3-Rec sequences -> .inter
# ---------------------------------------------------------------------------


def test_inter_rows_keep_line_order_with_position_timestamps(tmp_path):
    src = write(tmp_path / "seq.txt", "3 5 2 5\n1 7\n2 9 8\n")
    counts = convert_s3rec(src, tmp_path / "out", "toy")
    rows = read_rows(tmp_path / "out" / "toy.inter")
    assert rows[0] == ["user_id:token", "item_id:token", "timestamp:float"]
    assert rows[1:] == [
        ["3", "5", "1"],
        ["3", "2", "2"],
        ["3", "5", "3"],  # a repeated item is kept at its own position
        ["1", "7", "1"],
        ["2", "9", "1"],
        ["2", "8", "2"],
    ]
    assert counts == {"users": 3, "items": 5, "interactions": 6, "item_rows": 0}
    assert not (tmp_path / "out" / "toy.item").exists()


def test_crlf_and_extra_spaces_are_accepted(tmp_path):
    src = write(tmp_path / "seq.txt", "1  4 6 \r\n2\t6\r\n")
    convert_s3rec(src, tmp_path, "toy")
    rows = read_rows(tmp_path / "toy.inter")
    assert rows[1:] == [["1", "4", "1"], ["1", "6", "2"], ["2", "6", "1"]]


# ---------------------------------------------------------------------------
# S3-Rec item text: id-keyed item file and ASIN-keyed metadata
# ---------------------------------------------------------------------------


def test_item_file_rows_copied_by_id(tmp_path):
    src = write(tmp_path / "seq.txt", "1 2 1\n2 3 4\n")
    item_file = write(
        tmp_path / "toy.item",
        f"{ITEM_HEADER}\n3\tThird\t'Beauty', 'Skin Care'\n1\tFirst\tBeauty\n"
        "2\t\tBeauty Makeup\n9\tUnused\tX\n",
    )
    counts = convert_s3rec(src, tmp_path / "out", "toy", item_file=item_file)
    rows = read_rows(tmp_path / "out" / "toy.item")
    assert rows == [
        ITEM_HEADER.split("\t"),
        ["1", "First", "Beauty"],
        ["2", "", "Beauty Makeup"],
        ["3", "Third", "'Beauty', 'Skin Care'"],
        ["4", "", ""],
    ]
    assert counts["item_rows"] == 4
    assert counts["items_without_metadata"] == 1
    assert counts["item_rows_unused"] == 1


META_LINES = [
    # 2014 style: Python literal with single quotes, tree of categories
    "{'asin': 'A1', 'title': 'Nail \"Red\"\\tPolish\\nNew', 'brand': 'OPI',"
    " 'categories': [['Beauty', 'Makeup', 'Nail Polish'], ['Beauty', 'Nails']]}",
    # JSON line, no brand, flat 2018-style category field
    json.dumps({"asin": "A2", "title": "  Cream  ", "category": ["Beauty", "Skin  Care"]}),
    # an ASIN that no item maps to
    json.dumps({"asin": "ZZ", "title": "Elsewhere", "categories": [["Other"]]}),
]


@pytest.mark.parametrize("meta_name", ["meta.json", "meta.json.gz"])
def test_item_join_through_asin_map(tmp_path, meta_name):
    src = write(tmp_path / "seq.txt", "1 1 2\n2 3 4 1\n")
    meta = write(tmp_path / meta_name, "\n".join(META_LINES) + "\n")
    asin_map = write(tmp_path / "asin.tsv", "item_id\tasin\n1\tA1\n2\tA2\n3\tA3\n")
    counts = convert_s3rec(src, tmp_path / "out", "toy", meta_path=meta, asin_map=asin_map)
    rows = read_rows(tmp_path / "out" / "toy.item")
    assert rows == [
        ["item_id:token", "title:token", "brand:token", "categories:token_seq"],
        ["1", "Nail ''Red'' Polish New", "OPI", "Beauty Makeup Nail_Polish Nails"],
        ["2", "Cream", "", "Beauty Skin_Care"],
        ["3", "", "", ""],  # mapped to an ASIN without metadata
        ["4", "", "", ""],  # not in the ASIN map at all
    ]
    assert counts["items_without_metadata"] == 2
    assert counts["items_without_asin"] == 1
    assert counts["item_rows"] == 4


def test_text_encodings():
    assert clean_text(None) == ""
    assert clean_text(" a\tb\r\nc  d ") == "a b c d"
    assert clean_text('"Quoted" 5"') == "''Quoted'' 5''"
    tree = [["Beauty", "Hair Care"], ["Beauty", " Hair  Care "]]
    assert encode_categories(tree) == "Beauty Hair_Care"
    assert encode_categories(["Tools & Accessories", ""]) == "Tools_&_Accessories"
    assert encode_categories(None) == ""


def test_item_file_and_metadata_are_exclusive(tmp_path):
    src = write(tmp_path / "seq.txt", "1 1\n")
    item_file = write(tmp_path / "toy.item", f"{ITEM_HEADER}\n1\tt\tc\n")
    with pytest.raises(ValueError, match="not both"):
        convert_s3rec(src, tmp_path, "toy", item_file=item_file, meta_path=item_file,
                      asin_map=item_file)
    with pytest.raises(ValueError, match="asin"):
        convert_s3rec(src, tmp_path, "toy", meta_path=item_file)


# ---------------------------------------------------------------------------
# Malformed input: ValueError naming the file and the 1-based line
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, lineno, reason",
    [
        ("1 2 3\n2 4 x5\n", 2, "not an integer"),
        ("1 2 3\nu2 4 5\n", 2, "not an integer"),
        ("1 2 3\n\n2 4 5\n", 2, "empty line"),
        ("1 2 3\n2 4\n3 1\n   \n", 4, "empty line"),
        ("1 2 3\n2\n", 2, "no items"),
        ("1 2 3\n2 4\n1 5\n", 3, "duplicate user id 1"),
        ("1 2 0\n", 1, "positive"),
    ],
)
def test_malformed_sequences(tmp_path, text, lineno, reason):
    src = write(tmp_path / "seq.txt", text)
    with pytest.raises(ValueError, match=reason) as info:
        convert_s3rec(src, tmp_path / "out", "toy")
    assert str(info.value).startswith(f"{src}:{lineno}:")
    assert not (tmp_path / "out" / "toy.inter").exists()


@pytest.mark.parametrize(
    "text, lineno",
    [
        ("item_id\tasin\n1\tA1\n2 A2\n", 3),  # no tab
        ("1\tA1\nx\tA2\n", 2),  # non-integer id
        ("1\tA1\n2\t\n", 2),  # empty asin
        ("1\tA1\n1\tA2\n", 2),  # duplicate id
        ("1\tA1\n2\tA1\n", 2),  # duplicate asin
        ("1\tA1\n2\tA2\textra\n", 2),  # extra field
    ],
)
def test_malformed_asin_map(tmp_path, text, lineno):
    src = write(tmp_path / "seq.txt", "1 1 2\n")
    meta = write(tmp_path / "meta.json", META_LINES[1] + "\n")
    asin_map = write(tmp_path / "asin.tsv", text)
    with pytest.raises(ValueError) as info:
        convert_s3rec(src, tmp_path, "toy", meta_path=meta, asin_map=asin_map)
    assert str(info.value).startswith(f"{asin_map}:{lineno}:")


@pytest.mark.parametrize(
    "text, lineno",
    [
        ("item_id\ttitle\tcategories\n1\tt\tc\n", 1),  # header without types
        ("title:token\titem_id:token\n", 1),  # item_id not first
        ("item_id:token\ttitle:text\n", 1),  # unknown type
        (f"{ITEM_HEADER}\n1\tt\tc\n2\tonly two\n", 3),  # wrong field count
        (f"{ITEM_HEADER}\n1\tt\tc\nb\tt\tc\n", 3),  # non-integer id
        (f"{ITEM_HEADER}\n1\tt\tc\n1\tt\tc\n", 3),  # duplicate id
    ],
)
def test_malformed_item_file(tmp_path, text, lineno):
    src = write(tmp_path / "seq.txt", "1 1 2\n")
    item_file = write(tmp_path / "toy.item", text)
    with pytest.raises(ValueError) as info:
        convert_s3rec(src, tmp_path / "out", "toy", item_file=item_file)
    assert str(info.value).startswith(f"{item_file}:{lineno}:")


def test_malformed_metadata_line(tmp_path):
    src = write(tmp_path / "seq.txt", "1 1\n")
    meta = write(tmp_path / "meta.json.gz", META_LINES[0] + "\n{'asin': 'A2', 'title': \n")
    asin_map = write(tmp_path / "asin.tsv", "1\tA1\n")
    with pytest.raises(ValueError, match="neither JSON") as info:
        convert_s3rec(src, tmp_path, "toy", meta_path=meta, asin_map=asin_map)
    assert str(info.value).startswith(f"{meta}:2:")


# ---------------------------------------------------------------------------
# Command lines
# ---------------------------------------------------------------------------


def run_script(name: str, *args: str) -> subprocess.CompletedProcess:
    """Run a converter script in a fresh interpreter."""
    return subprocess.run(
        [sys.executable, str(ROOT / "dataset_scripts" / name), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_s3rec_cli_success_and_malformed_exit_code(tmp_path):
    good = write(tmp_path / "good.txt", "1 1 2\n2 2 3\n")
    done = run_script("s3rec_to_atomic.py", "--input", str(good),
                      "--output-dir", str(tmp_path / "out"), "--dataset", "toy")
    assert done.returncode == 0, done.stderr
    assert "2 users, 3 items, 4 interactions" in done.stdout
    assert (tmp_path / "out" / "toy.inter").exists()

    bad = write(tmp_path / "bad.txt", "1 1 2\n2 2 three\n")
    done = run_script("s3rec_to_atomic.py", "--input", str(bad),
                      "--output-dir", str(tmp_path / "bad_out"), "--dataset", "toy")
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0
    assert f"{bad}:2:" in done.stderr


def test_amazon_cli_malformed_exit_code(tmp_path):
    reviews = write(tmp_path / "reviews.json", review_lines([("u1", "i1", 5, 1)]) + "oops\n")
    done = run_script("amazon_to_atomic.py", "--reviews", str(reviews),
                      "--output-dir", str(tmp_path), "--dataset", "toy", "--k", "0")
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0
    assert f"{reviews}:2:" in done.stderr


# ---------------------------------------------------------------------------
# Raw Amazon reviews -> .inter/.item with k-core filtering
# ---------------------------------------------------------------------------


def review_lines(reviews) -> str:
    """JSON lines for ``(user, asin, rating, time)`` tuples."""
    return "".join(
        json.dumps({"reviewerID": u, "asin": i, "overall": r, "unixReviewTime": t}) + "\n"
        for u, i, r, t in reviews
    )


def test_amazon_inter_and_item_files(tmp_path):
    reviews = write(
        tmp_path / "reviews.json.gz",
        review_lines([("u2", "B", 4.0, 30), ("u1", "A", 5.0, 20), ("u2", "A", 3.5, 10),
                      ("u1", "C", 1.0, 20)]),
    )
    meta = write(
        tmp_path / "meta.json.gz",
        "{'asin': 'A', 'title': 'Alpha\\tone', 'brand': 'Acme',"
        " 'categories': [['Beauty', 'Hair Care']]}\n"
        "{'asin': 'B', 'title': 'Beta'}\n",
    )
    counts = convert_amazon(reviews, tmp_path / "out", "toy", meta_path=meta, k=0)
    assert read_rows(tmp_path / "out" / "toy.inter") == [
        ["user_id:token", "item_id:token", "rating:float", "timestamp:float"],
        ["u2", "A", "3.5", "10"],  # grouped by user in order of appearance, sorted by time
        ["u2", "B", "4", "30"],
        ["u1", "A", "5", "20"],  # equal times keep file order
        ["u1", "C", "1", "20"],
    ]
    assert read_rows(tmp_path / "out" / "toy.item") == [
        ["item_id:token", "title:token", "brand:token", "categories:token_seq"],
        ["A", "Alpha one", "Acme", "Beauty Hair_Care"],
        ["B", "Beta", "", ""],
        ["C", "", "", ""],
    ]
    assert counts["users"] == 2 and counts["items"] == 3 and counts["interactions"] == 4
    assert counts["items_without_metadata"] == 1
    assert counts["item_rows"] == 3


def test_kcore_is_iterative(tmp_path):
    # k = 2.  Item "c" has one interaction and goes in round 1, which leaves user
    # u3 with one interaction; u3 goes in round 2, which leaves item "d" with one;
    # "d" goes in round 3, leaving u4 with one; u4 goes in round 4.
    # A single pass would only remove item "c".
    data = [
        ("u1", "a", 5, 1), ("u1", "b", 5, 2),
        ("u2", "a", 5, 1), ("u2", "b", 5, 2),
        ("u3", "c", 5, 1), ("u3", "d", 5, 2),
        ("u4", "d", 5, 1), ("u4", "a", 5, 2),
    ]
    reviews_path = write(tmp_path / "reviews.json", review_lines(data))
    kept, rounds = kcore_filter(read_reviews(reviews_path), 2)
    assert sorted((r.user, r.item) for r in kept) == [
        ("u1", "a"), ("u1", "b"), ("u2", "a"), ("u2", "b")
    ]
    assert rounds == 4

    counts = convert_amazon(reviews_path, tmp_path / "k2", "toy", k=2)
    assert (counts["users"], counts["items"], counts["interactions"]) == (2, 2, 4)
    assert counts["reviews"] == 8 and counts["kcore_rounds"] == 4
    assert not (tmp_path / "k2" / "toy.item").exists()

    counts = convert_amazon(reviews_path, tmp_path / "k0", "toy", k=0)
    assert (counts["users"], counts["items"], counts["interactions"]) == (4, 4, 8)


@pytest.mark.parametrize(
    "bad_line, reason",
    [
        ("not a record", "neither JSON"),
        ("", "empty line"),
        ('["a list"]', "expected an object"),
        ('{"reviewerID": "u9", "overall": 5, "unixReviewTime": 3}', "'asin'"),
        ('{"reviewerID": "u9", "asin": "a", "overall": "five", "unixReviewTime": 3}', "overall"),
        (
            '{"reviewerID": "u9", "asin": "a", "overall": 5, "unixReviewTime": "soon"}',
            "unixReviewTime",
        ),
        ("{'reviewerID': 'u\\t9', 'asin': 'a', 'overall': 5, 'unixReviewTime': 3}", "tab"),
    ],
)
def test_malformed_reviews(tmp_path, bad_line, reason):
    text = review_lines([("u1", "a", 5, 1), ("u2", "a", 4, 2)]) + bad_line + "\n"
    reviews = write(tmp_path / "reviews.json", text)
    with pytest.raises(ValueError, match=reason) as info:
        convert_amazon(reviews, tmp_path / "out", "toy", k=0)
    assert str(info.value).startswith(f"{reviews}:3:")
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------
# The real S3-Rec Beauty split
# ---------------------------------------------------------------------------


def test_real_beauty_conversion(tmp_path):
    s3rec = SHARED / "s3rec"
    if not (s3rec / "Beauty.txt").is_file():
        pytest.skip(f"shared benchmark data not found: {s3rec / 'Beauty.txt'} "
                    "(set SADA_SHARED_DATASETS to the datasets folder)")
    counts = convert_s3rec(s3rec / "Beauty.txt", tmp_path, "beauty",
                           item_file=s3rec / "Beauty.item")
    assert (counts["users"], counts["items"], counts["interactions"]) == (22363, 12101, 198502)
    assert counts["item_rows"] == 12101 and counts["items_without_metadata"] == 0
    with open(tmp_path / "beauty.inter", encoding="utf-8") as handle:
        assert sum(1 for _ in handle) == 198502 + 1
    item_rows = read_rows(tmp_path / "beauty.item")
    assert item_rows[0] == ITEM_HEADER.split("\t")
    assert len(item_rows) - 1 == 12101
