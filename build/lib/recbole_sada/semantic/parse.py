"""Parse an LLM's pick among numbered candidates.

The prompt lists candidates as ``1. title``, ``2. title``, ... ``k. title``. An
answer may name them by number (``3``, ``[3, 5]``, ``Answer: 2``), by
enumerated title (``1. Heat``) or by title alone (exact text, any case).
:func:`parse_choices` reports which candidates were chosen and what went
wrong; callers decide the fallback.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Hashable, Sequence

OK = "ok"
PARTIAL = "partial"
OUT_OF_POOL = "out_of_pool"
DUPLICATE = "duplicate"
UNPARSABLE = "unparsable"

_NUMBER = re.compile(r"(?<![\w.])\d+(?![\w])")
# Between a list enumerator and the title it introduces: "3. ", "3) ", "3: ", "3 - ".
_ENUMERATOR_GAP = re.compile(r"\s*[.):\-]?\s*")
# Between a title and a number annotating it: "Title (3)", "Title [3]".
_ANNOTATION_GAP = re.compile(r"\s*[(\[]\s*")
_ANNOTATION_END = re.compile(r"\s*[)\]]")


@dataclass
class ParseResult:
    """Outcome of :func:`parse_choices`.

    Attributes:
        ids: chosen item ids in answer order, within the pool, deduplicated, at
            most ``n``.
        positions: 1-based candidate numbers of ``ids``.
        status: ``ok`` (``min(n, k)`` valid picks), otherwise the main problem:
            ``out_of_pool`` (a number outside 1..k was given), ``duplicate`` (a
            candidate was repeated), ``partial`` (too few picks, nothing else
            wrong) or ``unparsable`` (no candidate recognised at all).
        out_of_pool: number of mentions outside 1..k.
        duplicates: number of repeated mentions of an already chosen candidate.
    """

    ids: list = field(default_factory=list)
    positions: list[int] = field(default_factory=list)
    status: str = UNPARSABLE
    out_of_pool: int = 0
    duplicates: int = 0


@dataclass
class _Mention:
    start: int
    end: int
    kind: str  # "title" or "number"
    value: int  # candidate position (1-based) or the raw number


def _title_pattern(title: str) -> re.Pattern | None:
    """Case-insensitive pattern for a title with flexible whitespace and word edges."""
    words = title.split()
    if not words:
        return None
    body = r"\s+".join(re.escape(w) for w in words)
    left = r"(?<!\w)" if re.match(r"\w", words[0]) else ""
    right = r"(?!\w)" if re.search(r"\w$", words[-1]) else ""
    return re.compile(left + body + right, re.IGNORECASE)


def _title_mentions(answer: str, titles: Sequence[str]) -> list[_Mention]:
    """Non-overlapping title matches, preferring the longest at each place.

    Purely numeric titles are skipped: numbers in answers are read as positions.
    """
    found = []
    for position, title in enumerate(titles, start=1):
        title = str(title or "").strip()
        if not title or title.isdigit():
            continue
        pattern = _title_pattern(title)
        for match in pattern.finditer(answer):
            found.append(_Mention(match.start(), match.end(), "title", position))
    found.sort(key=lambda m: (m.start, -(m.end - m.start)))
    chosen: list[_Mention] = []
    for mention in found:
        if not chosen or mention.start >= chosen[-1].end:
            chosen.append(mention)
    return chosen


def _number_mentions(answer: str, titles: list[_Mention]) -> list[_Mention]:
    """Integers outside title spans, except enumerators and annotations of a title."""
    result = []
    for match in _NUMBER.finditer(answer):
        start, end = match.span()
        if any(t.start <= start < t.end for t in titles):
            continue
        if _is_enumerator(answer, end, titles) or _is_annotation(answer, start, end, titles):
            continue
        result.append(_Mention(start, end, "number", int(match.group())))
    return result


def _is_enumerator(answer: str, end: int, titles: list[_Mention]) -> bool:
    """True when the number is a list marker directly followed by a title (``2. Heat``)."""
    return any(
        t.start >= end and _ENUMERATOR_GAP.fullmatch(answer, end, t.start) for t in titles
    )


def _is_annotation(answer: str, start: int, end: int, titles: list[_Mention]) -> bool:
    """True when the number is bracketed right after a title (``Heat (2)``)."""
    if not _ANNOTATION_END.match(answer, end):
        return False
    return any(
        t.end <= start and _ANNOTATION_GAP.fullmatch(answer, t.end, start) for t in titles
    )


def parse_choices(answer: str, candidates: Sequence[tuple[Hashable, str]], n: int) -> ParseResult:
    """Read up to ``n`` picks among ``candidates`` from an LLM answer.

    Args:
        answer: the model's text.
        candidates: ``(item_id, title)`` pairs in the order shown, numbered 1..k.
        n: number of picks wanted.

    Returns:
        A :class:`ParseResult`; mentions are taken in the order they appear.
    """
    candidates = list(candidates)
    k = len(candidates)
    answer = str(answer or "")
    titles = _title_mentions(answer, [title for _, title in candidates])
    mentions = sorted(titles + _number_mentions(answer, titles), key=lambda m: m.start)

    result = ParseResult()
    seen: set[int] = set()
    for mention in mentions:
        position = mention.value
        if not 1 <= position <= k:
            result.out_of_pool += 1
        elif position in seen:
            result.duplicates += 1
        else:
            seen.add(position)
            if len(result.positions) < n:
                result.positions.append(position)
    result.ids = [candidates[p - 1][0] for p in result.positions]
    result.status = _status(result, min(max(int(n), 0), k))
    return result


def _status(result: ParseResult, wanted: int) -> str:
    """Summarise a parse: ``ok`` when enough picks, else the main problem."""
    if len(result.ids) >= wanted:
        return OK
    if result.out_of_pool:
        return OUT_OF_POOL
    if result.duplicates:
        return DUPLICATE
    return PARTIAL if result.ids else UNPARSABLE
