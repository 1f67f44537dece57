"""Compare two LLMSeR ``.aug`` files of one dataset on the users whose pseudo items differ.

For each file, over the users where the two files disagree (and over all users), the table gives:
how many pseudo items the two files share per user, the training popularity of the pseudo items
(median count, share of tail items = bottom 80% of items by training popularity), their MiniLM
cosine to the mean of the user's training items, how often a pseudo item is one of the user's
held-out (valid/test) items (a relevance check read at report time only; no stage of the pipeline
and no training reads the held-out items), and the mean reliability omega_u.

    python benchmarks/aug_compare.py --dataset=beauty \
        --files saved/llmser_beauty/beauty-none.aug saved/llmser_beauty/beauty-smollm2-7162.aug \
        --names "no LLM" "SmolLM2" [--output results/llmser.md --title "..."]
"""
import argparse
import shlex
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def load(dataset, backbone="SASRec", config_dict=None):
    """(PipelineData, item embeddings) of ``dataset``, from the pipeline's own loaders."""
    from recbole_sada.llmser import pipeline as P

    config = P.pipeline_config(dataset, backbone, config_dict={"llmser_llm": "none", "show_progress": False,
                                                              **(config_dict or {})})
    pipe = P.LLMSeRPipeline(config, backbone, show_progress=False, log=None)
    pipe.data = P.PipelineData(config)
    return pipe.data, pipe.item_embeddings(), config


def read(path, d, config):
    """{user row: (pseudo item ids, omega)} of an ``.aug`` file (users of the train split only)."""
    from recbole_sada.llmser.augfile import read_aug

    rows, _ = read_aug(path, config["USER_ID_FIELD"], "python -m recbole_sada.llmser ...")
    item_id = {str(t): i for i, t in enumerate(d.item_token)}
    row_of = {u: r for r, u in enumerate(d.token_of_user)}
    out = {}
    for user, items, omega in rows:
        if str(user) in row_of:
            out[row_of[str(user)]] = ([item_id[str(t)] for t in items if str(t) in item_id], float(omega))
    return out


def stats(rows, users, d, emb, pop, tail):
    """One table row: the measures over ``users``."""
    pops, tails, cos, held, omegas, n_items = [], 0, [], 0, [], 0
    for r in users:
        items, omega = rows[r]
        omegas.append(omega)
        if not items:
            continue
        seq = np.asarray(d.seqs[r], dtype=np.int64)
        profile = emb[seq].mean(0)
        profile /= max(np.linalg.norm(profile), 1e-12)
        heldout = set(d.heldout.get(int(d.uids[r]), []))
        for i in items:
            n_items += 1
            pops.append(pop[i])
            tails += bool(tail[i])
            cos.append(float(emb[i] @ profile))
            held += i in heldout
    return {"pseudo items": n_items, "median popularity": float(np.median(pops)) if pops else float("nan"),
            "tail share": tails / max(n_items, 1), "cosine to history": float(np.mean(cos)) if cos else float("nan"),
            "held-out hits per 1000": 1000 * held / max(n_items, 1), "mean omega": float(np.mean(omegas)) if omegas else float("nan")}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="beauty")
    parser.add_argument("--files", nargs=2, required=True)
    parser.add_argument("--names", nargs=2, default=None)
    parser.add_argument("--output", default=None, help="markdown file to add the section to")
    parser.add_argument("--title", default=None)
    args = parser.parse_args(argv)
    names = args.names or [Path(f).name for f in args.files]

    from recbole_sada.evaluation.groups import head_item_mask, item_train_popularity

    d, emb, config = load(args.dataset)
    # the evaluator's own item groups: training popularity, head = top 20% of the real items
    pop = item_train_popularity(d.train_dataset, len(d.item_token))
    tail = ~head_item_mask(pop)
    tail[0] = False
    a, b = (read(f, d, config) for f in args.files)
    common = sorted(set(a) & set(b))
    if not common:
        raise SystemExit(f"error: {args.files[0]} and {args.files[1]} share no user of {args.dataset}'s train "
                         f"split; pass two .aug files made for --dataset={args.dataset}")
    differ = [r for r in common if sorted(a[r][0]) != sorted(b[r][0])]
    shared = np.mean([len(set(a[r][0]) & set(b[r][0])) for r in differ]) if differ else float("nan")
    omega_differ = sum(abs(a[r][1] - b[r][1]) > 1e-9 for r in common)
    lines = [f"Dataset `{args.dataset}`: {len(common)} users in both files; {len(differ)} have different "
             f"pseudo items (on those, {shared:.2f} of the 3 items are shared on average); {omega_differ} "
             "have a different omega_u.  Popularity = training interactions of the pseudo item; tail = "
             "bottom 80% of items by training popularity; cosine = MiniLM cosine of the pseudo item to "
             "the mean of the user's training items; held-out hits = pseudo items that are the user's "
             "valid or test item (read for this report only).", ""]
    keys = list(stats(a, common[:1], d, emb, pop, tail))
    lines += ["| file | users | " + " | ".join(keys) + " |", "|---|---|" + "---|" * len(keys)]
    for label, group in (("users whose pseudo items differ", differ), ("all users", common)):
        for name, rows in ((names[0], a), (names[1], b)):
            s = stats(rows, group, d, emb, pop, tail)
            cells = [f"{s[k]:.0f}" if k in ("pseudo items", "median popularity") else f"{s[k]:.3f}" for k in keys]
            lines.append(f"| {name} ({label}) | {len(group)} | " + " | ".join(cells) + " |")
    command = "python benchmarks/aug_compare.py " + " ".join(shlex.quote(x) for x in (argv if argv is not None else sys.argv[1:]))
    lines += ["", "```", command, "```"]
    text = "\n".join(lines)
    print(text)
    if args.output:
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from run_table import write_section  # keeps the section's hand-written notes

        title = args.title or f"{names[0]} vs {names[1]} ({args.dataset})"
        write_section(Path(args.output), title, f"## {title}\n\n{text}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
