"""What the test protocol alone does to a table: the same checkpoints tested under several protocols,
as a markdown table of means over seeds with the change against the first protocol, per model.

    python benchmarks/retest.py --protocols masked unmasked --checkpoints SASRec:2023=log/benchmarks/checkpoints/SASRec-beauty-2023-....pth \\
        BASRecSASRec:2023=saved/BASRecSASRec-....pth ...

Protocols, each one test pass of ``benchmarks/eval_checkpoint.py`` (the checkpoint is loaded once):

* ``masked``: full ranking with the user's input items masked (the S3-Rec / BASRec code's protocol);
* ``unmasked``: full ranking with them (RecBole's);
* ``uni100`` / ``pop100``: RecBole's sampled protocol (the test item against 100 negatives drawn by
  its sampler with the run's seed, as ``extra_test_modes`` draws them; no masking applies).

Training and model selection stay the run's own (e.g. masked full-ranking validation), so another
protocol's column is "the run read under that protocol", not a run trained and selected under it.
"""
import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from run_table import machine  # noqa: E402
METRICS = ("hit@10", "ndcg@10", "hit@20", "ndcg@20")
GROUPS = ("users[0,4)", "users[6,inf)", "items:head", "items:tail")


def parse_checkpoint(text):
    """``MODEL:SEED=PATH`` -> (model, seed, path)."""
    try:
        label, path = text.split("=", 1)
        model, seed = label.rsplit(":", 1)
        return model, int(seed), path
    except ValueError:
        raise SystemExit(f"error: --checkpoints takes MODEL:SEED=PATH, got {text!r}")


PROTOCOLS = {"masked": {"eval_mask_history": True}, "unmasked": {"eval_mask_history": False},
             "uni100": {"test_mode": "uni100"}, "pop100": {"test_mode": "pop100"}}


def load_eval_checkpoint():
    import importlib.util

    spec = importlib.util.spec_from_file_location("eval_checkpoint", ROOT / "benchmarks" / "eval_checkpoint.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def evaluate_all(path, protocols):
    """{protocol: eval_checkpoint output} for one checkpoint, loaded once."""
    evalc = load_eval_checkpoint()
    loaded = evalc.Loaded(path)
    return {p: evalc.evaluate(loaded, **PROTOCOLS[p]) for p in protocols}


def table(results, protocols):
    """results: {model: {seed: {protocol: out}}} -> markdown lines."""
    lines = ["| model | seeds | protocol | " + " | ".join(m.upper().replace("HIT", "HR") for m in METRICS)
             + " | " + " | ".join(f"NDCG@10 {g}" for g in GROUPS) + " |",
             "|---|---|---|" + "---|" * (len(METRICS) + len(GROUPS))]
    for model, by_seed in results.items():
        seeds = sorted(by_seed)
        means = {}
        for protocol in protocols:
            outs = [by_seed[s][protocol] for s in seeds]
            vals = [sum(o["test_result"][m] for o in outs) / len(outs) for m in METRICS]
            grp = [sum(o["test_groups"][g]["ndcg@10"] for o in outs) / len(outs) for g in GROUPS]
            means[protocol] = vals + grp
            lines.append(f"| {model} | {', '.join(map(str, seeds))} | {protocol} | "
                         + " | ".join(f"{v:.4f}" for v in vals + grp) + " |")
        if len(protocols) == 2:
            a, b = (means[p] for p in protocols)
            rel = [(u / m - 1) if m else float("nan") for m, u in zip(a, b)]
            lines.append(f"| {model} | | {protocols[1]} vs {protocols[0]} | " + " | ".join(f"{r:+.1%}" for r in rel) + " |")
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoints", nargs="+", required=True, metavar="MODEL:SEED=PATH")
    parser.add_argument("--protocols", nargs="+", default=["masked", "unmasked"], choices=sorted(PROTOCOLS))
    parser.add_argument("--output", default=None, help="a markdown file to append the section to (else stdout)")
    parser.add_argument("--title", default="The same checkpoints under other test protocols")
    parser.add_argument("--json", default=None, help="also write every evaluation here")
    args = parser.parse_args(argv)
    results = defaultdict(dict)
    items = [parse_checkpoint(c) for c in args.checkpoints]
    for i, (model, seed, path) in enumerate(items, 1):
        print(f"[{i}/{len(items)}] {model} seed {seed}: {path}", file=sys.stderr, flush=True)
        results[model][seed] = evaluate_all(path, args.protocols)
    outs = [o for r in results.values() for d in r.values() for o in d.values()]
    losses = sorted({o["loss_type"] for o in outs})
    lines = [f"## {args.title}", "", f"Test metrics of each checkpoint under {', '.join(args.protocols)} (training and "
             "best-epoch selection as the run made them); means over the seeds listed. "
             "Groups: users by training length, test items by training popularity (head = top 20%).",
             f"Loss of the runs: {', '.join(f'`{x}`' for x in losses)}. Machine of this evaluation: {machine()}.", ""]
    lines += table(results, args.protocols)
    lines += ["", "Reproduce (the checkpoints of the runs named):", "", "```",
              f"python benchmarks/retest.py --protocols {' '.join(args.protocols)} --checkpoints "
              + " ".join(args.checkpoints), "```", ""]
    text = "\n".join(lines)
    if args.output:
        with open(args.output, "a") as f:
            f.write("\n" + text)
    else:
        print(text)
    if args.json:
        Path(args.json).write_text(json.dumps({m: {str(s): d for s, d in r.items()}
                                               for m, r in results.items()}, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
