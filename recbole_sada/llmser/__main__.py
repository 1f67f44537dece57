"""Build the LLMSeR pseudo-item file of a dataset.

    python -m recbole_sada.llmser --dataset=ml-100k --backbone=SASRec [--llm transformers|openai|none]
        [--config_files="a.yaml b.yaml"] [--no_ccg] [--no_snf] [--no_arv] [--no_rcs] [--no_reason]
        [--key=value ...]          e.g. --max_users=100 --n_pseudo=5 --ccg_epochs=30

Each stage caches its output under ``<checkpoint_dir>/llmser/<dataset>/`` and a rerun resumes
where the last one stopped (LLM answers are also cached by prompt).  Writes ``<dataset>.aug`` and
``<dataset>.aug.json`` in the dataset's folder (or ``--aug_file``).

Exit status: 0 on success, 2 with a one-line message on bad input.
"""
import argparse
import sys

from recbole_sada.cli import parse_with_overrides, run_guarded

ABLATIONS = {
    "no_ccg": "use_ccg",
    "no_snf": "use_snf",
    "no_arv": "use_arv",
    "no_rcs": "use_rcs",
    "no_reason": "use_reason",
}


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m recbole_sada.llmser", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", "-d", default="ml-100k", help="dataset name")
    parser.add_argument("--backbone", "-b", default="SASRec", help="CCG/RCS backbone (SASRec, GRU4Rec, BERT4Rec, ...)")
    parser.add_argument("--llm", choices=["transformers", "openai", "none"], default=None,
                        help="chat LLM backend; none = semantic/collaborative fallbacks only (default: llm_backend)")
    parser.add_argument("--config_files", default=None, help="space-separated yaml files")
    for flag, key in ABLATIONS.items():
        parser.add_argument(f"--{flag}", action="store_true", help=f"ablation: {key}=False")
    args, files, overrides = parse_with_overrides(parser, argv)
    if args.llm:
        overrides.append(f"--llmser_llm={args.llm}")
    overrides += [f"--{key}=False" for flag, key in ABLATIONS.items() if getattr(args, flag)]
    return args, files, overrides


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv

    def work():
        args, files, overrides = parse_args(argv)
        from recbole_sada.llmser.pipeline import format_summary, run_pipeline

        summary, path = run_pipeline(args.dataset, args.backbone, config_file_list=files, cmd_args=overrides)
        return args, summary, path

    code, out = run_guarded("the pipeline", work)
    if code is not None:
        return code
    args, summary, path = out
    from recbole_sada.llmser.pipeline import format_summary

    print(f"\nLLMSeR augmentation of {args.dataset} (backbone {args.backbone}) -> {path}")
    print(format_summary(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
