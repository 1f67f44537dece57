"""Attach semantic item/user embeddings to a dataset.

    python -m recbole_sada.preprocess --dataset=ml-100k [--config_files "a.yaml b.yaml"] [--key=value ...]

Writes <data_path>/<dataset>/<dataset>.itememb, .useremb, .clusters.json and .semantic.json.
Settings (defaults in properties/semantic.yaml, per dataset in properties/dataset/<dataset>.yaml):
item_text_fields, item_text_template, user_text_max_items, n_clusters, cluster_seed,
semantic_dim; encoder keys (encoder_backend, encoder_model, cache_dir, ...) as in
recbole_sada.semantic.  Exit status: 0 on success, 2 with a one-line message on bad input.
"""
import argparse
import logging
import sys

from recbole_sada.cli import parse_with_overrides, run_guarded


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m recbole_sada.preprocess", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", "-d", default="ml-100k", help="dataset name")
    parser.add_argument("--config_files", default=None, help="space-separated yaml files")
    parser.add_argument("--model", "-m", default="SASRec",
                        help="model whose yaml layers (and data settings) apply; default SASRec")
    return parse_with_overrides(parser, argv)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    package_logger = logging.getLogger("recbole_sada")
    package_logger.addHandler(handler)
    package_logger.setLevel(logging.INFO)

    def work():
        args, files, overrides = parse_args(argv)
        from recbole_sada.preprocess import run_preprocess

        return args, run_preprocess(args.dataset, files, cmd_args=overrides, model=args.model)

    try:
        code, out = run_guarded("preprocessing", work)
    finally:
        package_logger.removeHandler(handler)
    if code is not None:
        return code
    args, summary = out
    stats, timing = summary["encoder_stats"], summary["timing"]
    print(f"{args.dataset}: {summary['counts']['items']} items ({timing['items_per_s']:.0f}/s), "
          f"{summary['counts']['users']} users ({timing['users_per_s']:.0f}/s), "
          f"{summary['dim']}-d, {summary['clusters']['n_clusters']} clusters, "
          f"{stats['model_calls']} model calls, {stats['cache_hits']} cache hits -> "
          f"{summary['paths']['sidecar']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
