"""Pieces shared by the LLMSeR stages: stage keys, per-user stage files, semantic ranking and the
one-question-one-repair exchange with the chat LLM (asked a batch of users at a time)."""
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
    return ask_llm_many(llm, [(messages, candidates)], m, max_new_tokens)[0]


def ask_llm_many(llm, questions, m, max_new_tokens):
    """:func:`ask_llm` for several ``(messages, candidates)`` questions at once: the first
    answers in one :meth:`~recbole_sada.semantic.ChatLLM.chat_many`, then the repair turns of
    those that need one in a second; the results are those of asking one by one (same prompts,
    same cache entries)."""
    answers = llm.chat_many([msgs for msgs, _ in questions], max_new_tokens=max_new_tokens)
    firsts = [parse_choices(a, cands, m) for a, (_, cands) in zip(answers, questions)]
    need = [j for j, first in enumerate(firsts) if first.status != OK]
    repairs = [prompts.repair_messages(questions[j][0], answers[j], _PROBLEMS[firsts[j].status], m,
                                       len(questions[j][1])) for j in need]
    seconds = dict(zip(need, llm.chat_many(repairs, max_new_tokens=max_new_tokens))) if need else {}
    out = []
    for j, ((_, cands), first) in enumerate(zip(questions, firsts)):
        if first.status == OK:
            out.append((first.ids, "ok", first.status))
            continue
        second = parse_choices(seconds[j], cands, m)
        if second.status == OK:
            out.append((second.ids, "repaired", first.status))
            continue
        ids = list(dict.fromkeys(first.ids + second.ids))[:m]
        out.append((ids, ("filled" if ids else "failed"), first.status))
    return out


class LLMBatcher:
    """The LLM answers of a stage's users, asked ``size`` users at a time (one
    :func:`ask_llm_many`) in the order the stage's loop meets them, so the loop stays per user
    (records written, resumable) while the model sees batches.

    Args:
        order: the rows that will ask the LLM, in loop order.
        question: row -> ``(messages, candidates)``.
        m, max_new_tokens: as :func:`ask_llm`.
        size: rows per batch (the chat LLM's ``batch_size``).
    """

    def __init__(self, llm, order, question, m, max_new_tokens, size=None):
        self.llm, self.order, self.question = llm, list(order), question
        self.m, self.max_new_tokens = m, max_new_tokens
        self.size = max(1, int(size if size is not None else getattr(llm, "batch_size", 1)))
        self.position = {r: k for k, r in enumerate(self.order)}
        self.answers = {}

    def get(self, row):
        """``(ids, outcome, first_status)`` of ``row``, asking it with the next rows if needed."""
        if row not in self.answers:
            k = self.position[row]
            chunk = [r for r in self.order[k:k + self.size] if r not in self.answers]
            results = ask_llm_many(self.llm, [self.question(r) for r in chunk], self.m, self.max_new_tokens)
            self.answers.update(zip(chunk, results))
        return self.answers.pop(row)


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
