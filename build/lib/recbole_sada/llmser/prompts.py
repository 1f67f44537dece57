"""Prompts of the two LLM steps of LLMSeR (Sun et al., "LLMSeR: Enhancing Sequential
Recommendation via LLM-based Data Augmentation").

* SNF (semantic noise filter, Eq. 3): the task, the user's history in reverse order, the numbered
  candidate pool from the CCG and the answer format; the LLM names ``M`` candidates.
* ARV (adaptive reliability validation, Eq. 5): the masked sequence (pseudo items + history with
  the last training item hidden), the numbered RCS candidates; the LLM names one candidate.
* Repair: one follow-up turn when an answer cannot be used, restating the format.

The wording is ours; the paper fixes only the four parts of the SNF prompt and the question of
the ARV prompt.  Change the text -> bump the version: versions are part of the cache keys of the
pipeline stages and are recorded in the ``.aug`` sidecar.
"""
SNF_VERSION = "snf-v1"
ARV_VERSION = "arv-v1"
REPAIR_VERSION = "repair-v1"

# Answer budgets (tokens).  A model that answers with numbers stops long before; small local
# models tend to copy candidate titles instead (which the parser also reads), and a title cut off
# in the middle is lost, so the budget leaves room for about one title per pick.
ARV_MAX_NEW_TOKENS = 24


def snf_max_new_tokens(m):
    return 12 * m + 8


SYSTEM = "You are a careful recommendation assistant. You answer with candidate numbers only."
MAX_TEXT_CHARS = 90


def short(text, limit=MAX_TEXT_CHARS):
    text = " ".join(str(text or "").split()) or "(no title)"
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


def numbered(texts):
    return "\n".join(f"{i}. {short(t)}" for i, t in enumerate(texts, start=1))


def snf_messages(history_recent_first, candidate_texts, m, noun="item"):
    """Chat messages of the SNF step.

    Args:
        history_recent_first: texts of the user's (shown) training items, most recent first, so the
            list ends with the earliest item (the reversed sequence S_u^rev of the paper).
        candidate_texts: texts of the candidate pool R_u, numbered from 1 in this order.
        m: how many candidates to pick.
        noun: what the items are ("movie", "product", ...).
    """
    k = len(candidate_texts)
    history = "\n".join(f"- {short(t)}" for t in history_recent_first)
    user = (
        f"Task: below is the {noun} history of a user, listed from the most recent {noun} back to the "
        f"earliest one. Choose the {m} candidate {noun}s that this user most probably interacted with "
        f"just BEFORE the earliest {noun} of the history, judging by what the {noun}s are about.\n\n"
        f"History (most recent first):\n{history}\n\n"
        f"Candidates:\n{numbered(candidate_texts)}\n\n"
        f"Answer format: exactly {m} different candidate numbers between 1 and {k}, separated by "
        f"commas, and nothing else."
    )
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def arv_messages(head_texts, recent_texts, candidate_texts, noun="item", skipped=0):
    """Chat messages of the ARV reasoning step ("which item is masked?").

    The history shown is S_u^mask, oldest first: ``head_texts`` (its beginning: the pseudo items,
    then the earliest training items), one "..." line for ``skipped`` items left out, then
    ``recent_texts`` (the most recent items before the hidden one).  ``candidate_texts`` is the
    pool F_u, numbered from 1.
    """
    k = len(candidate_texts)
    lines = [f"- {short(t)}" for t in head_texts]
    if skipped:
        lines.append(f"- ... ({skipped} more)")
    lines += [f"- {short(t)}" for t in recent_texts] + ["- [MASKED]"]
    history = "\n".join(lines)
    user = (
        f"Task: below is the {noun} history of a user in time order, earliest first. The most recent "
        f"{noun} is hidden and shown as [MASKED]. Reason about the user's interests and decide which "
        f"candidate is the hidden {noun}.\n\n"
        f"History (earliest first):\n{history}\n\n"
        f"Candidates:\n{numbered(candidate_texts)}\n\n"
        f"Answer format: the number (1 to {k}) of one candidate, and nothing else."
    )
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def repair_messages(messages, answer, problem, m, k):
    """The conversation followed by one corrective turn."""
    wanted = "one candidate number" if m == 1 else f"exactly {m} different candidate numbers"
    return list(messages) + [
        {"role": "assistant", "content": str(answer)},
        {
            "role": "user",
            "content": f"That answer cannot be used ({problem}). Reply with {wanted} between 1 and {k}"
            + ("" if m == 1 else ", separated by commas")
            + ", and nothing else.",
        },
    ]
