"""Test a saved checkpoint again (e.g. the best one so far of a run that was stopped early): overall
metrics, the default groups and, optionally, other group definitions, as json.

    python benchmarks/eval_checkpoint.py saved/LLMESRSASRec-....pth --group_sets "{'llmesr': {'user_group_edges': [7], 'item_tail_below': 4}}"

``--into RUN.json [RUN.json ...]`` adds the group definitions to finished runs of ``run_table.py`` (the
local result next to the checkpoint and its committed copy in ``results/runs``): only after checking
that this evaluation gives the run's recorded test metrics and groups, so a run made before
``group_sets`` was set gains that table without being trained again.

``--view id`` / ``--view semantic`` tests a dual-view model (LLM-ESR) with its items scored by one
view's half of the ``[e_id ; A(s)]`` table only, and reports how spread out each view's item table
is (``view_isotropy``: mean cosine between item rows): which view ranks the items.

``--eval_mask_history False`` tests the same checkpoint with the user's input items left in the
ranking (RecBole's own protocol) where it was trained and selected with them masked (or the other
way round): what the protocol choice alone does to a model's numbers.  The model selection (best
epoch) stays the one of the run.  ``--test_mode uni100`` (or ``pop100``...) tests it against
RecBole's sampled negatives, drawn as a run's ``extra_test_modes`` draws them (same seed, same
negatives), so a run trained before ``extra_test_modes`` was set gets the sampled numbers it would
have reported.
"""
import argparse
import ast
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recbole_sada.compat import load_checkpoint  # noqa: E402
from recbole_sada.evaluation.groups import GroupEvaluator  # noqa: E402
from recbole.utils import init_seed  # noqa: E402

from recbole_sada.quick_start import load_data_and_model, test_loader_in_mode  # noqa: E402
from recbole_sada.utils import get_trainer  # noqa: E402


TEST_MODE = re.compile(r"^(full|(uni|pop)[1-9][0-9]*)$")


class Loaded:
    """A checkpoint with the config, dataset, dataloaders and model it was trained with (loaded once,
    tested as often as wanted by :func:`evaluate`)."""

    def __init__(self, model_file):
        self.model_file = model_file
        self.checkpoint = load_checkpoint(model_file, map_location="cpu")
        (self.config, self.model, self.dataset,
         self.train_data, self.valid_data, self.test_data) = load_data_and_model(model_file)
        self.run_mask = bool(self.config["eval_mask_history"])


def evaluate(loaded, group_sets=None, eval_mask_history=None, test_mode=None, view=None):
    """One test pass of ``loaded`` as a json-ready dict: with the input items masked or not
    (``None``: as the run was), in RecBole's eval mode ``test_mode`` (``None``: the run's), for a
    dual-view model (LLM-ESR) with items scored by one ``view`` only (``"id"``, ``"semantic"``;
    ``None``: both, as trained)."""
    config, model = loaded.config, loaded.model
    if hasattr(model, "set_score_view"):
        model.set_score_view(view)  # None: both views, as trained (a Loaded is tested more than once)
    elif view is not None:
        raise SystemExit(f"--view: {config['model']} has one item table (dual-view models only, e.g. LLMESRSASRec)")
    if group_sets is not None:
        config["group_sets"] = group_sets
    mask = loaded.run_mask if eval_mask_history is None else bool(eval_mask_history)
    config["eval_mask_history"] = model.eval_mask_history = mask
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    test_data = loaded.test_data
    if test_mode is not None:
        test_data = test_loader_in_mode(config, loaded.dataset, loaded.train_data, loaded.valid_data, test_data, test_mode)
        init_seed(config["seed"], config["reproducibility"])
    groups = GroupEvaluator(config, loaded.train_data._dataset)
    with groups.recording(trainer):
        test = trainer.evaluate(test_data, load_best_model=False, show_progress=False)
    out = {"model_file": loaded.model_file, "epoch": loaded.checkpoint.get("epoch"),
           "best_valid_score": loaded.checkpoint.get("best_valid_score"),
           "loss_type": config["loss_type"], "eval_mask_history": mask,
           "test_mode": test_mode or config["eval_args"]["mode"].get("test", "full"), "test_result": dict(test),
           "test_groups": groups.result(), "test_group_sets": groups.set_results()}
    if view is not None:
        out["view"] = view
        out["view_isotropy"] = model.view_isotropy()
    return json.loads(json.dumps(out, default=float))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_file")
    parser.add_argument("--group_sets", default=None, help="a dict as for the config key group_sets")
    parser.add_argument("--into", nargs="*", default=[], metavar="RUN_JSON",
                        help="run results to add test_group_sets to (their test metrics must match this evaluation)")
    parser.add_argument("--eval_mask_history", choices=("True", "False"), default=None,
                        help="test with the user's input items masked or not (default: as the run was)")
    parser.add_argument("--test_mode", default=None,
                        help="RecBole's eval mode for the test pass (uni100, pop100, ...; default: the run's)")
    parser.add_argument("--view", choices=("id", "semantic"), default=None,
                        help="dual-view models (LLM-ESR): score items with that view's half of the item table only")
    args = parser.parse_args(argv)
    if args.into and (args.eval_mask_history is not None or args.test_mode is not None or args.view is not None):
        parser.error("--into checks the run's own test metrics; it cannot be combined with "
                     "--eval_mask_history, --test_mode or --view")
    if args.test_mode is not None and not TEST_MODE.match(args.test_mode):
        parser.error(f"--test_mode takes full, uni<N> or pop<N> (e.g. uni100), got {args.test_mode!r}")
    loaded = Loaded(args.model_file)
    if args.eval_mask_history is not None and not hasattr(loaded.model, "eval_mask_history"):
        parser.error(f"--eval_mask_history: {loaded.config['model']} has no history masking "
                     "(the plugin's models have it; RecBole's own do not)")
    out = evaluate(loaded, ast.literal_eval(args.group_sets) if args.group_sets else None,
                   None if args.eval_mask_history is None else args.eval_mask_history == "True", args.test_mode,
                   args.view)
    print(json.dumps(out))
    for path in args.into:
        merge_group_sets(path, out)
    return 0


def merge_group_sets(path, evaluated, tol=1e-9):
    """Write ``evaluated["test_group_sets"]`` into the run result at ``path`` if its recorded test
    metrics and default groups are the evaluated ones (else SystemExit: another checkpoint)."""
    run = json.loads(Path(path).read_text())
    recorded, got = run["test_result"], evaluated["test_result"]
    bad = [k for k in recorded if abs(float(recorded[k]) - float(got.get(k, float("nan")))) > tol or k not in got]
    for g, vals in (run.get("test_groups") or {}).items():
        other = (evaluated.get("test_groups") or {}).get(g, {})
        bad += [f"{g}:{k}" for k, v in vals.items() if k not in other or abs(float(v) - float(other[k])) > tol]
    if bad:
        raise SystemExit(f"error: {path} records other test metrics than this checkpoint gives ({', '.join(bad[:5])}); "
                         "not written")
    run["test_group_sets"] = {**(run.get("test_group_sets") or {}), **evaluated["test_group_sets"]}
    text = json.dumps(run, indent=1, default=float) + "\n" if Path(path).read_text().startswith("{\n") else json.dumps(run)
    Path(path).write_text(text)
    print(f"{path}: test_group_sets {sorted(evaluated['test_group_sets'])} added")


if __name__ == "__main__":
    sys.exit(main())
