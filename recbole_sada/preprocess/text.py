"""Item and user texts for the semantic encoder.

Item text: chosen fields of the atomic ``.item`` file rendered through a template.
User text: the texts of the user's most recent *training* items, oldest first.

Template language (``item_text_template``): ``{field}`` is replaced by the cleaned value of a
field listed in ``item_text_fields``; a part written in square brackets is left out when a field
inside it is empty, so ``"{movie_title}[ ({release_year})][. Genres: {class}]"`` renders
``Toy Story (1995). Genres: Animation Children's Comedy`` and, without a year,
``Toy Story. Genres: ...``; separators left at the start by blank leading fields are dropped
(``Genres: ...`` without a title).  Brackets do not nest and cannot appear as literal text.  A null
template joins the non-empty field values with ``". "``.  An item whose fields are all empty gets
the empty text (and later a zero vector), whatever literal text the template holds.
"""
from __future__ import annotations

import csv
import html
import re
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import pandas as pd

from recbole_sada.errors import InputError

USER_TEXT_SEPARATOR = "; "
_TEXT_TYPES = ("token", "token_seq", "float", "float_seq")
# 'Beauty', 'Makeup', 'Women's' : the quoted lists of the S3-Rec Beauty.item categories (not
# Python literals: an apostrophe inside a name is not escaped), split at quote-comma-quote
_QUOTED_LIST = re.compile(r"""^\s*['"].*['"]\s*$""", re.S)
_QUOTED_SEPARATOR = re.compile(r"""['"]\s*,\s*['"]""")
_SPACES = re.compile(r"\s+")


# ------------------------------------------------------------------------------ .item file
@dataclass
class ItemTable:
    """The text fields of an atomic ``.item`` file.

    Attributes:
        path: the file.
        tokens: item id tokens, in file order (``str``).
        columns: ``{field: list of raw str values}`` for the requested fields.
        types: ``{field: atomic type}`` of every field in the header.
    """

    path: Path
    tokens: list
    columns: dict
    types: dict


def read_item_table(path, id_field: str, fields: Sequence[str] | None) -> ItemTable:
    """Read the id and the text ``fields`` of an atomic ``.item`` file (tab separated).

    ``fields=None`` selects every ``token``/``token_seq``/``float``/``float_seq`` field but the id.
    Values are read verbatim (no quote processing, empty cells stay empty).

    Raises:
        InputError: the file is missing, its header is malformed, it lacks the id field or a
        requested field.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(
            f"item text needs the atomic item file {path}, which is missing; add it (item_id:token "
            "plus text fields such as title:token) or build the dataset with its metadata"
        )
    with open(path, encoding="utf-8") as f:
        header = f.readline().rstrip("\r\n").split("\t")
    types = {}
    for column in header:
        name, sep, kind = column.partition(":")
        if not sep or not name or kind not in _TEXT_TYPES:
            raise InputError(
                f"{path}: header field '{column}' is not name:type with type one of "
                f"{', '.join(_TEXT_TYPES)}"
            )
        types[name] = kind
    if id_field not in types:
        raise InputError(
            f"{path} has no '{id_field}' field (header: {', '.join(types)}); the item id field "
            "is ITEM_ID_FIELD"
        )
    chosen_by_default = fields is None
    if fields is None:
        fields = [n for n in types if n != id_field]
    missing = [f for f in fields if f not in types]
    if missing:
        raise InputError(
            f"item_text_fields: {', '.join(map(repr, missing))} not in {path} "
            f"(fields there: {', '.join(n for n in types if n != id_field)}); fix item_text_fields"
        )
    frame = pd.read_csv(
        path, sep="\t", dtype=str, keep_default_na=False, quoting=csv.QUOTE_NONE,
        usecols=list(dict.fromkeys([f"{id_field}:{types[id_field]}"]
                                   + [f"{f}:{types[f]}" for f in fields])),
        encoding="utf-8",
    )
    frame = frame.fillna("")  # rows with missing trailing fields
    frame.columns = [c.partition(":")[0] for c in frame.columns]
    if chosen_by_default:
        fields = [f for f in fields if not non_text_field(f, frame[f].tolist())] or fields
    return ItemTable(
        path=path,
        tokens=frame[id_field].str.strip().tolist(),
        columns={f: frame[f].tolist() for f in fields},
        types=types,
    )


_URL_NAME = re.compile(r"(?i)(url|uri|link|image|img|photo|thumbnail|href)")
_ID_NAME = re.compile(r"(?i)(^id$|_id$|^asin$|asin|^sku$|^ean$|^isbn|^upc$|^uuid$)")
_URL_VALUE = re.compile(r"(?i)^\s*(https?://|www\.)")
_CODE_VALUE = re.compile(r"^[A-Za-z0-9_-]*\d[A-Za-z0-9_-]*$")


def non_text_field(name: str, values: Sequence[str], sample: int = 1000) -> bool:
    """True for a field that reads as a link or an identifier, not as text: its name says so
    (``imUrl``, ``image``, ``asin``, ``brand_id`` ...), most values are URLs, or every value is a
    distinct code with a digit and no space (``B000052YAN``, ``123456``).  Used only when
    ``item_text_fields`` is not set."""
    if _URL_NAME.search(name) or _ID_NAME.search(name):
        return True
    filled = [str(v).strip() for v in values[:sample] if str(v).strip()]
    if not filled:
        return False
    if sum(bool(_URL_VALUE.match(v)) for v in filled) >= 0.5 * len(filled):
        return True
    return len(filled) > 1 and len(set(filled)) == len(filled) and all(_CODE_VALUE.match(v) for v in filled)


def unquote_csv(text: str) -> str:
    """``"Tom''s ""Best"" Shop"`` style quoting (as pandas, hence RecBole, reads a quoted field):
    a value wrapped in double quotes loses them and ``""`` becomes ``"``."""
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        return text[1:-1].replace('""', '"')
    return text


# ------------------------------------------------------------------------------ values
def clean_value(value: str, kind: str, seq_separator: str = " ") -> str:
    """One field value as plain text.

    * HTML entities are decoded, a CSV-quoted value is unquoted (as RecBole's reader does) and
      whitespace runs become one space.
    * ``token``: ``''`` (the converters' encoding of ``"``) becomes ``"``.
    * ``token_seq``: a quoted list (``'Beauty', 'Nail Polish'``, as in the S3-Rec ``Beauty.item``)
      becomes ``Beauty, Nail Polish``; otherwise the tokens are joined by spaces with ``_`` read as a space
      (the converters write ``Nail_Polish``).  Duplicates are dropped, first kept.
    * ``float``: integral values lose their ``.0`` (``1995.0`` -> ``1995``).
    """
    text = html.unescape(str(value or "")).strip()
    if kind != "token_seq":  # a quoted token_seq is a quoted list (below)
        text = unquote_csv(text)
    if not text:
        return ""
    if kind == "token_seq":
        if _QUOTED_LIST.match(text):
            parts = split_quoted_list(text)
            joiner = ", "
        else:
            parts = [p.replace("_", " ") for p in text.split(seq_separator or " ")]
            joiner = " "
        parts = [_SPACES.sub(" ", p).strip() for p in parts]
        text = joiner.join(dict.fromkeys(p for p in parts if p))
    elif kind == "token":
        text = text.replace("''", '"')
    elif kind == "float":
        try:
            number = float(text)
            text = str(int(number)) if number.is_integer() else text
        except ValueError:
            pass
    return _SPACES.sub(" ", text).strip()


def split_quoted_list(text: str) -> list:
    """``'Beauty', 'Fragrance', 'Women's'`` -> ``["Beauty", "Fragrance", "Women's"]``."""
    inner = text.strip()[1:-1]
    return [p.strip() for p in _QUOTED_SEPARATOR.split(inner)]


# ------------------------------------------------------------------------------ template
def compile_template(template: str | None, fields: Sequence[str]) -> Callable[[dict], str]:
    """A function ``values -> text`` for ``item_text_template`` (see the module docstring).

    Raises:
        InputError: unbalanced brackets, or a placeholder that is not in ``item_text_fields``.
    """
    fields = list(fields)
    if template is None:
        return lambda values: ". ".join(v for v in (values.get(f, "") for f in fields) if v)
    template = str(template)
    parts = _split_optional(template)
    compiled = []
    for literal_or_group, optional in parts:
        pieces = []
        try:
            parsed = list(string.Formatter().parse(literal_or_group))
        except ValueError as exc:
            raise InputError(f"item_text_template {template!r} is malformed: {exc}") from None
        for literal, name, spec, conversion in parsed:
            if name is not None and (spec or conversion or name not in fields):
                if name not in fields:
                    raise InputError(
                        f"item_text_template uses {{{name}}}, which is not in item_text_fields "
                        f"({', '.join(fields)}); add it there or fix the template"
                    )
                raise InputError(
                    f"item_text_template: write {{{name}}} without format spec or conversion"
                )
            pieces.append((literal, name))
        compiled.append((pieces, optional))

    def render(values: dict) -> str:
        if not any(values.get(f) for f in fields):
            return ""
        out = []  # (text, is a field value)
        for pieces, optional in compiled:
            if optional and any(name is not None and not values.get(name) for _, name in pieces):
                continue
            for literal, name in pieces:
                out.append((literal, False))
                if name is not None:
                    out.append((values.get(name, ""), True))
        # blank leading fields must not leave their separators behind (". Categories: ...")
        first = next((i for i, (text, is_value) in enumerate(out) if is_value and text), len(out))
        head = "".join(text for text, _ in out[:first])
        if any(is_value for _, is_value in out[:first]):
            head = head.lstrip(".,;:- ")
        return _SPACES.sub(" ", head + "".join(text for text, _ in out[first:])).strip()

    return render


def _split_optional(template: str) -> list:
    """``"a[b]c"`` -> ``[("a", False), ("b", True), ("c", False)]``."""
    parts, depth, current = [], 0, []
    for char in template:
        if char == "[":
            if depth:
                raise InputError(f"item_text_template {template!r}: brackets [ ] cannot nest")
            parts.append(("".join(current), False))
            current, depth = [], 1
        elif char == "]":
            if not depth:
                raise InputError(f"item_text_template {template!r}: ']' without '['")
            parts.append(("".join(current), True))
            current, depth = [], 0
        else:
            current.append(char)
    if depth:
        raise InputError(f"item_text_template {template!r}: '[' without ']'")
    parts.append(("".join(current), False))
    return [p for p in parts if p[0]]


def item_texts(table: ItemTable, fields: Sequence[str], template: str | None,
               seq_separator: str = " ") -> dict:
    """``{item token: text}`` for every row of ``table`` (the last row wins for repeated ids)."""
    render = compile_template(template, fields)
    cleaned = {f: [clean_value(v, table.types[f], seq_separator) for v in table.columns[f]]
               for f in fields}
    return {
        token: render({f: cleaned[f][row] for f in fields})
        for row, token in enumerate(table.tokens)
    }


# ------------------------------------------------------------------------------ user text
def render_user_text(history: Sequence[str], max_items: int, token_counts: Sequence[int] | None = None,
                     max_tokens: int | None = None) -> str:
    """Text of one user from the texts of their *training* items, oldest first.

    Takes the most recent ``max_items`` non-empty texts and joins them in time order with
    ``"; "``.  With ``max_tokens``, the oldest of those are dropped as well until the text fits
    the encoder's window (``token_counts[i]`` = tokens of ``history[i]``, plus one per
    separator), so that the encoder's truncation never cuts the *most recent* items; the most
    recent item is always kept.

    The caller passes only training items: the valid and test items of leave-one-out never reach
    this function (see :func:`recbole_sada.preprocess.build.training_histories`).
    """
    kept, used = [], 0
    for index in range(len(history) - 1, -1, -1):
        if len(kept) >= max_items:
            break
        text = history[index]
        if not text:
            continue
        if max_tokens is not None and token_counts is not None:
            cost = token_counts[index] + (1 if kept else 0)
            if kept and used + cost > max_tokens:
                break
            used += cost
        kept.append(text)
    return USER_TEXT_SEPARATOR.join(reversed(kept))


def iter_user_texts(histories: Iterable[Sequence[str]], text_of: dict, max_items: int,
                    tokens_of: dict | None = None, max_tokens: int | None = None):
    """:func:`render_user_text` for each token history (item tokens, oldest first)."""
    for history in histories:
        texts = [text_of.get(t, "") for t in history]
        counts = [tokens_of.get(t, 0) for t in history] if tokens_of is not None else None
        yield render_user_text(texts, max_items, counts, max_tokens)
