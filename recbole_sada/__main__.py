"""Train and evaluate a recbole-sada (or RecBole) model, offline.

    python -m recbole_sada --model=SADASASRec --dataset=ml-100k [--preset=NAME] [--config_files="a.yaml b.yaml"]
        [--key=value ...]
        [--result_json=run.json]
    recbole-sada ...                     (the installed command)
    python run_recbole_sada.py ...       (in a checkout)

Prints valid/test metrics, then test HR/NDCG per user-length and item-popularity group.

Exit status: 0 on success, 2 with a one-line message on bad input, 130 on Ctrl-C.
"""
import argparse
import sys

from recbole_sada.cli import parse_with_overrides, run_guarded


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", "-m", default="SASRec", help="model name (plugin first, then RecBole)")
    parser.add_argument("--dataset", "-d", default="ml-100k", help="dataset name")
    parser.add_argument("--config_files", default=None, help="space-separated yaml files")
    parser.add_argument("--preset", default=None,
                        help="a packaged settings preset by name, e.g. basrec_official (the official BASRec code's "
                             "settings), or a yaml path; below --config_files and --key=value")
    parser.add_argument("--result_json", default=None, help="also write the results to this json file")
    return parse_with_overrides(parser, argv)


def format_table(result):
    """Valid and test metrics side by side as a plain-text table."""
    valid = result.get("best_valid_result") or {}
    test = result.get("test_result") or {}
    keys = list(test) or list(valid)
    lines = [f"{'metric':<12}{'valid':>10}{'test':>10}", "-" * 32]
    for k in keys:
        v = valid.get(k)
        lines.append(f"{k:<12}{(f'{v:.4f}' if v is not None else '-'):>10}{test[k]:>10.4f}")
    return "\n".join(lines)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv

    def work():
        args, files, overrides = parse_args(argv)
        from recbole_sada.quick_start import run_recbole_sada

        result = run_recbole_sada(
            model=args.model, dataset=args.dataset, config_file_list=files, cmd_args=overrides
        )
        return args, result

    code, out = run_guarded("training", work)
    if code is not None:
        return code
    args, result = out
    print(f"\n{args.model} on {args.dataset}")
    print(format_table(result))
    if result.get("test_groups"):
        from recbole_sada.evaluation.groups import format_group_table

        print("\n" + format_group_table(result["test_groups"], title="test, by group"))
        for name, groups in (result.get("test_group_sets") or {}).items():
            print("\n" + format_group_table(groups, title=f"test, by group ({name})"))
    if args.result_json:
        write_result_json(args.result_json, args.model, args.dataset, result)
    return 0


def write_result_json(path, model, dataset, result):
    """The run's metrics, groups and costs as json (no config object, trainer or model)."""
    import json
    import os

    keep = ("best_valid_score", "best_valid_result", "test_result", "test_groups", "test_group_sets", "epoch_time",
            "epochs_run", "train_time", "peak_memory_mb", "model_file")
    out = {"model": model, "dataset": dataset, "seed": result["config"]["seed"]}
    out.update({k: result.get(k) for k in keep})
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(out, f, indent=2, default=float)


if __name__ == "__main__":
    sys.exit(main())
