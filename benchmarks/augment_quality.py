"""Relevance and diversity of the augmented training data, BASRec vs SADA, per module.

    python benchmarks/augment_quality.py --dataset=beauty --preset properties/preset/basrec_official.yaml \
        --batches 40 --output results/beauty.md

SADA's success criterion is augmented data that stay *relevant* (semantically close to what they
replace or meet) while staying *diverse* (they still change the sequence).  This measures both on
the real training batches, before any training (the augmentation inputs do not depend on the
weights), with the models' own operators, substitute tables and partner choice:

* **M-Substitute / M-Reorder** (each view of a step): share of real positions changed
  (diversity), mean semantic cosine between the original item and the one now at its position
  (relevance), and the mean mix-in share ``(1 - lam) * r`` the representation mix gives it.
* **Substitute table**: cosine of each item and its first substitute, share of tail items (bottom
  80% by training count) among the substitutes, and how many items have one.
* **Cross-sequence partners**: cosine of the two users' semantic embeddings, share in the same
  K-means cluster, and cosine of the two target items that meet in the item-wise mix.

Cosines use the dataset's semantic item / user embeddings (``python -m recbole_sada.preprocess``)
for both models, so BASRec is measured in the same space it ignores.  One seed; the same batches
for both models.
"""
import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def cos(a, b):
    a = torch.nn.functional.normalize(a.float(), dim=-1)
    b = torch.nn.functional.normalize(b.float(), dim=-1)
    return (a * b).sum(-1)


def measure(model_name, dataset, overrides, batches, seed):
    from recbole.utils import init_seed

    from recbole_sada.model import augment as A
    from recbole_sada.quick_start import prepare
    from recbole_sada.semantic.files import load_semantic_features
    from recbole_sada.utils import get_model

    config, data, train_data, _, _ = prepare(model_name, dataset, config_dict={**overrides, "seed": seed})
    init_seed(seed, True)
    model = get_model(model_name)(config, train_data._dataset)
    model.train_stage = 2
    feats = load_semantic_features(config, train_data._dataset, log=False)
    item_sem, user_sem, clusters = feats.item_semantic, feats.user_semantic, feats.user_cluster
    known = item_sem.norm(dim=1) > 0
    counts = model.item_train_count if hasattr(model, "item_train_count") else torch.bincount(
        torch.as_tensor(np.concatenate(model._train_seqs)), minlength=model.n_items)[: model.n_items]
    order = torch.argsort(counts.float(), descending=True)
    tail = torch.ones(model.n_items, dtype=torch.bool)
    tail[order[: int(0.2 * (model.n_items - 1))]] = False
    tail[0] = False

    out = {}
    table = model.substitute_table[:, 0]
    has = table > 0
    rows = torch.nonzero(has & known & known[table]).flatten()
    out["table"] = {
        "items with a substitute": float(has[1:].float().mean()),
        "cos(item, substitute)": float(cos(item_sem[rows], item_sem[table[rows]]).mean()),
        "tail share of substitutes": float(tail[table[has]].float().mean()),
    }
    init_seed(seed, True)
    acc = {}

    def add(key, value, n=1):
        total, count = acc.get(key, (0.0, 0))
        acc[key] = (total + float(value) * n, count + n)

    uid_field = config["USER_ID_FIELD"]
    with torch.no_grad():
        for b, inter in enumerate(train_data):
            if b >= batches:
                break
            item_seq, item_seq_len, targets, mask = model.training_batch(inter)
            real = item_seq > 0
            B = item_seq.size(0)
            for op in model.single_ops:
                rate = A.sample_rate(B, model.rate_min, model.rate_max, item_seq.device)
                aug = model.augment_sequence(op, item_seq, item_seq_len, rate)
                changed = real & (aug != item_seq)
                add(f"{op}: positions changed", changed.float().sum() / real.float().sum(), int(real.sum()))
                sel = changed & known[item_seq] & known[aug]
                if sel.any():
                    add(f"{op}: cos(original, new item)", cos(item_sem[item_seq[sel]], item_sem[aug[sel]]).mean(), int(sel.sum()))
                lam = A.sample_lambda(B, model.alpha, item_seq.device)
                relevance = model.single_relevance(item_seq, aug)
                r = relevance if relevance is not None else torch.ones_like(item_seq, dtype=torch.float)
                share = (1 - lam.view(B, 1)) * r
                if changed.any():
                    add(f"{op}: mix-in share at changed positions", share[changed].mean(), int(changed.sum()))
            uids = inter[uid_field]
            perm = model.cross_partners(inter, B, item_seq.device)
            have = (clusters[uids] >= 0) & (clusters[uids[perm]] >= 0)
            if have.any():
                add("cross: cos(user, partner)", cos(user_sem[uids[have]], user_sem[uids[perm][have]]).mean(), int(have.sum()))
                add("cross: partner in the same cluster", (clusters[uids[have]] == clusters[uids[perm][have]]).float().mean(),
                    int(have.sum()))
            idx, valid = model.partner_positions(mask, perm)
            tgt_p = targets[perm].gather(1, idx)
            meet = valid & known[targets] & known[tgt_p]
            if meet.any():
                add("cross: cos(target, partner target)", cos(item_sem[targets[meet]], item_sem[tgt_p[meet]]).mean(), int(meet.sum()))
    out["batches"] = {k: t / max(c, 1) for k, (t, c) in acc.items()}
    return out


def render(title, rows, models, command, info):
    keys = list(dict.fromkeys(k for m in models for k in rows[m]["table"]))
    bkeys = list(dict.fromkeys(k for m in models for k in rows[m]["batches"]))
    lines = [f"## {title}", "", info, "",
             "| measure | " + " | ".join(models) + " |", "|---|" + "---|" * len(models)]
    for k in keys:
        lines.append(f"| substitute table: {k} | " + " | ".join(f"{rows[m]['table'][k]:.3f}" for m in models) + " |")
    for k in bkeys:
        lines.append(f"| {k} | " + " | ".join(f"{rows[m]['batches'].get(k, float('nan')):.3f}" for m in models) + " |")
    lines += ["", "Reproduce:", "", "```", command, "```"]
    return "\n".join(lines)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="beauty")
    parser.add_argument("--models", nargs="+", default=["BASRecSASRec", "SADASASRec"])
    parser.add_argument("--preset", default=None)
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--seed", type=int, default=2020)
    parser.add_argument("--output", default=None)
    parser.add_argument("--title", default="Relevance and diversity of the augmented data (BASRec vs SADA)")
    args, rest = parser.parse_known_args(argv)
    from run_table import machine, parse_overrides, run_settings, write_section

    preset, cfg = run_settings("full", args.preset, parse_overrides(rest))
    cfg = {**cfg, "show_progress": False, "state": "WARNING"}
    start = time.time()
    rows = {m: measure(m, args.dataset, cfg, args.batches, args.seed) for m in args.models}
    info = (f"Dataset `{args.dataset}`, settings of `{args.preset or 'the model yaml'}`, seed {args.seed}, the first "
            f"{args.batches} training batches (batch {cfg.get('train_batch_size', 256)}), untrained models; cosines in the "
            f"semantic space of the dataset's `.itememb` / `.useremb` for every model.  Diversity = share of real "
            f"positions an operator changes; relevance = semantic cosine of what replaces or meets what.  "
            f"{time.time() - start:.0f} s on {machine()}.  No training, so no loss; ranking protocol irrelevant.")
    command = "python benchmarks/augment_quality.py " + shlex.join(argv)
    text = render(args.title, rows, args.models, command, info)
    print(text)
    print(json.dumps(rows, indent=1))
    if args.output:
        write_section(args.output, args.title, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
