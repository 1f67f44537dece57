"""Hyper-parameter search for a recbole-sada (or RecBole) model with Ray Tune, offline.

    python run_hyper_sada.py --model=SASRec --dataset=ml-100k --params_file=hyper/sasrec.hyper
        [--num_samples=4] [--epochs=2] [--cpus_per_trial=1] [--gpus_per_trial=0] [--max_concurrent=2]
        [--ray_address=auto|host:port] [--resume] [--search=random|grid] [--scheduler=asha|none]
        [--output_dir=results/hyper] [--ray_dir=ray_results] [--preset=NAME] [--config_files="a.yaml b.yaml"]
        [--verbose=1] [--key=value ...]

Writes <output_dir>/<model>-<dataset>.md / .csv (every trial, best first), -best.yaml (for
run_recbole_sada.py --config_files) and .png (valid metric against each parameter).
Search spaces: RecBole's .hyper format or yaml (see recbole_sada/tuning/space.py and
hyper/*.hyper).  --key=value overrides hold for every trial (a searched key takes the searched
value).  --num_samples is the number of trials of a random search (default 4) and the number of
repeats of a grid (default 1).

Exit status: 0 on success, 1 when no trial completed, 2 with a one-line message on bad input.
"""
import argparse
import shlex
import sys

from recbole_sada.cli import parse_with_overrides, run_guarded
from recbole_sada.errors import InputError


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", "-m", required=True, help="model name (plugin first, then RecBole)")
    parser.add_argument("--dataset", "-d", required=True, help="dataset name")
    parser.add_argument("--params_file", required=True, help="search space (.hyper or .yaml)")
    parser.add_argument("--config_files", default=None, help="space-separated yaml files for every trial")
    parser.add_argument("--preset", default=None,
                        help="a packaged settings preset by name (e.g. basrec_official) or a yaml path, for every trial")
    parser.add_argument("--num_samples", type=int, default=None,
                        help="random: number of trials (default 4); grid: repeats of the grid (default 1)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per trial (default: the config's)")
    parser.add_argument("--cpus_per_trial", type=float, default=1)
    parser.add_argument("--gpus_per_trial", type=float, default=0)
    parser.add_argument("--max_concurrent", type=int, default=2, help="trials running at once")
    parser.add_argument("--ray_address", default=None,
                        help="attach to a running Ray cluster (auto or host:port); default: a private local Ray")
    parser.add_argument("--resume", action="store_true", help="continue the interrupted search")
    parser.add_argument("--search", default="random", help="random or grid")
    parser.add_argument("--scheduler", default="asha", help="asha or none")
    parser.add_argument("--output_dir", default="results/hyper", help="where the reports are written")
    parser.add_argument("--ray_dir", default="ray_results", help="Ray's experiment folders (for --resume)")
    parser.add_argument("--verbose", type=int, default=1, help="Ray Tune verbosity (0-3)")

    def error(message):  # argparse errors become one-line input errors (exit 2)
        raise InputError(message)

    parser.error = error
    return parse_with_overrides(parser, argv)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv

    def work():
        args, files, overrides = parse_args(argv)
        from recbole_sada.tuning.search import run_search

        out = run_search(
            args.model,
            args.dataset,
            args.params_file,
            config_file_list=files,
            cmd_args=overrides,
            num_samples=args.num_samples,
            epochs=args.epochs,
            cpus_per_trial=args.cpus_per_trial,
            gpus_per_trial=args.gpus_per_trial,
            max_concurrent=args.max_concurrent,
            ray_address=args.ray_address,
            resume=args.resume,
            search=args.search,
            scheduler=args.scheduler,
            output_dir=args.output_dir,
            ray_dir=args.ray_dir,
            verbose=args.verbose,
            command="python run_hyper_sada.py " + " ".join(shlex.quote(a) for a in argv),
        )
        return args, out

    code, out = run_guarded("the search", work)
    if code is not None:
        return code
    args, out = out
    rows, best, paths = out["rows"], out["best"], out["paths"]
    counts = {s: sum(r["status"] == s for r in rows) for s in ("completed", "stopped", "unfinished", "error")}
    print(
        f"\n{len(rows)} trials in {out['seconds']:.0f}s: {counts['completed']} completed, "
        f"{counts['stopped']} stopped early, {counts['error']} failed"
        + (f", {counts['unfinished']} unfinished (interrupted: continue with --resume)" if counts["unfinished"] else "")
    )
    for row in rows:
        if row["status"] == "error":
            print(f"  trial {row['trial']} failed: {row['error']}")
    print(f"table: {paths['md']}\ncsv:   {paths['csv']}")
    if paths["png"]:
        print(f"plot:  {paths['png']}")
    if best is None:
        print("no trial completed: no best config written", file=sys.stderr)
        return 1
    print(f"best:  {paths['yaml']} (valid {best['valid_score']:.4f}, trial {best['trial']})")
    print(f"rerun: {out['rerun']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
