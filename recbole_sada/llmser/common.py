"""Pieces shared by the LLMSeR stages: stage keys, per-user stage files, semantic ranking and the
one-question-one-repair exchange with the chat LLM."""
import json
from collections import OrderedDict
from pathlib import Path

import numpy as np

from recbole_sada.llmser import prompts
from recbole_sada.semantic import content_digest, parse_choices
from recbole_sada.semantic.parse import OK

_PROBLEMS = {
    "out_of_pool": "a number outside the candidate list",
    "duplicate": "a candidate was repeated",
    "partial": "too few candidates",
    "unparsable": "no candidate number found",
}


def stage_key(*parts):
    """Short content hash naming a stage's files."""
    return content_digest(json.loads(json.dumps(parts, default=str)))[:12]


def semantic_top(item_emb, history, excluded, k, never=None):
    """The ``k`` items closest (cosine) to the mean text embedding of ``history``, skipping
    ``excluded`` and ``never``; fewer when not enough are left."""
    if len(history) == 0:
        return []
    profile = item_emb[np.asarray(history)].mean(0)
    norm = np.linalg.norm(profile)
    scores = item_emb @ (profile / norm if norm > 0 else profile)
    scores[0] = -np.inf
    if never is not None and len(never):
        scores[np.asarray(never, dtype=np.int64)] = -np.inf
    if excluded:
        scores[np.fromiter(excluded, dtype=np.int64)] = -np.inf
    k = min(k, int(np.isfinite(scores).sum()))
    if k <= 0:
        return []
    top = np.argpartition(-scores, k - 1)[:k]
    return [int(i) for i in top[np.argsort(-scores[top], kind="stable")]]


def rank_by_similarity(item_emb, history, candidates):
    """``candidates`` sorted by cosine to the mean text embedding of ``history`` (stable)."""
    if len(history) == 0 or not candidates:
        return list(candidates)
    profile = item_emb[np.asarray(history)].mean(0)
    scores = item_emb[np.asarray(candidates)] @ profile
    return [candidates[i] for i in np.argsort(-scores, kind="stable")]


def ask_llm(llm, messages, candidates, m, max_new_tokens):
    """One LLM question with one repair turn.

    Args:
        llm: a :class:`~recbole_sada.semantic.ChatLLM`.
        messages: the question.
        candidates: ``(item id, text)`` pairs, numbered from 1 in the prompt.
        m: picks wanted.

    Returns:
        ``(ids, outcome, first_status)``: the usable picks (in pool, distinct, at most ``m``),
        ``outcome`` = ``ok`` (the first answer was usable), ``repaired`` (the repair answer was),
        ``filled`` (some picks; the caller fills the rest) or ``failed`` (no usable pick), and the
        parse status of the first answer.
    """
    answer = llm.chat(messages, max_new_tokens=max_new_tokens)
    first = parse_choices(answer, candidates, m)
    if first.status == OK:
        return first.ids, "ok", first.status
    repair = prompts.repair_messages(messages, answer, _PROBLEMS[first.status], m, len(candidates))
    second = parse_choices(llm.chat(repair, max_new_tokens=max_new_tokens), candidates, m)
    if second.status == OK:
        return second.ids, "repaired", first.status
    ids = list(dict.fromkeys(first.ids + second.ids))[:m]
    return ids, ("filled" if ids else "failed"), first.status


class JsonlStage:
    """Per-user records of one stage, appended and flushed one by one (a torn last line from an
    interrupted run is ignored)."""

    def __init__(self, path):
        self.path = Path(path)
        self.records = OrderedDict()
        if self.path.is_file():
            with open(self.path, encoding="utf-8") as f:
                for line in f:
                    try:
                        rec = json.loads(line)
                    except json.JSONDecodeError:
                        continue
                    if isinstance(rec, dict) and "user" in rec:
                        self.records[rec["user"]] = rec
        self.resumed = len(self.records)
        self._fh = None

    def __contains__(self, user):
        return user in self.records

    def add(self, record):
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "a", encoding="utf-8")
            if self._fh.tell() and self.path.read_bytes()[-1:] != b"\n":
                self._fh.write("\n")  # close a torn line
        self._fh.write(json.dumps(record) + "\n")
        self._fh.flush()
        self.records[record["user"]] = record

    def close(self):
        if self._fh is not None:
            self._fh.close()
            self._fh = None
