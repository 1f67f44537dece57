"""What the history-masking protocol alone does to a table: the same checkpoints tested with the
user's input items masked (the S3-Rec / BASRec code's protocol) and unmasked (RecBole's), as a
markdown table of means over seeds with the relative change per model.

    python benchmarks/mask_protocol.py --checkpoints SASRec:2023=log/benchmarks/checkpoints/SASRec-beauty-2023-....pth \\
        BASRecSASRec:2023=saved/BASRecSASRec-....pth ... --output results/beauty.md --title '...'

Each checkpoint is tested twice by ``benchmarks/eval_checkpoint.py`` (``--eval_mask_history True``
and ``False``); training and model selection stay the run's own (masked validation, if the run was
masked), so the unmasked column is "the masked run read under RecBole's protocol", not a run
trained and selected unmasked.
"""
import argparse
import contextlib
import io
import json
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROOT = Path(__file__).resolve().parents[1]
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


def evaluate(path, masked):
    import importlib.util

    spec = importlib.util.spec_from_file_location("eval_checkpoint", ROOT / "benchmarks" / "eval_checkpoint.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        mod.main([path, "--eval_mask_history", str(bool(masked))])
    return json.loads(buf.getvalue().strip().splitlines()[-1])


def table(results):
    """results: {model: {seed: {True: out, False: out}}} -> markdown lines."""
    lines = ["| model | seeds | mask | " + " | ".join(m.upper().replace("HIT", "HR") for m in METRICS)
             + " | " + " | ".join(f"NDCG@10 {g}" for g in GROUPS) + " |",
             "|---|---|---|" + "---|" * (len(METRICS) + len(GROUPS))]
    for model, by_seed in results.items():
        seeds = sorted(by_seed)
        means = {}
        for masked in (True, False):
            outs = [by_seed[s][masked] for s in seeds]
            vals = [sum(o["test_result"][m] for o in outs) / len(outs) for m in METRICS]
            grp = [sum(o["test_groups"][g]["ndcg@10"] for o in outs) / len(outs) for g in GROUPS]
            means[masked] = vals + grp
            lines.append(f"| {model} | {', '.join(map(str, seeds))} | {'masked' if masked else 'unmasked'} | "
                         + " | ".join(f"{v:.4f}" for v in vals + grp) + " |")
        rel = [(u / m - 1) if m else float("nan") for m, u in zip(means[True], means[False])]
        lines.append(f"| {model} | | change | " + " | ".join(f"{r:+.1%}" for r in rel) + " |")
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoints", nargs="+", required=True, metavar="MODEL:SEED=PATH")
    parser.add_argument("--output", default=None, help="a markdown file to append the section to (else stdout)")
    parser.add_argument("--title", default="History-masked vs unmasked test of the same checkpoints")
    parser.add_argument("--json", default=None, help="also write every evaluation here")
    args = parser.parse_args(argv)
    results = defaultdict(dict)
    items = [parse_checkpoint(c) for c in args.checkpoints]
    for i, (model, seed, path) in enumerate(items, 1):
        print(f"[{i}/{len(items)}] {model} seed {seed}: {path}", file=sys.stderr, flush=True)
        results[model][seed] = {masked: evaluate(path, masked) for masked in (True, False)}
    lines = [f"## {args.title}", "", "Test metrics of each checkpoint with the user's input items masked and "
             "unmasked (training and best-epoch selection as the run made them); means over the seeds listed. "
             "Groups: users by training length, test items by training popularity (head = top 20%).", ""]
    lines += table(results)
    lines += ["", "Reproduce (the checkpoints of the runs named):", "", "```",
              "python benchmarks/mask_protocol.py --checkpoints " + " ".join(args.checkpoints), "```", ""]
    text = "\n".join(lines)
    if args.output:
        with open(args.output, "a") as f:
            f.write("\n" + text)
    else:
        print(text)
    if args.json:
        Path(args.json).write_text(json.dumps({m: {str(s): {str(k): v for k, v in d.items()} for s, d in r.items()}
                                               for m, r in results.items()}, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
