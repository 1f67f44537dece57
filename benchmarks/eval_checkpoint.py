"""Test a saved checkpoint again (e.g. the best one so far of a run that was stopped early): overall
metrics, the default groups and, optionally, other group definitions, as json.

    python benchmarks/eval_checkpoint.py saved/LLMESRSASRec-....pth --group_sets "{'llmesr': {'user_group_edges': [7], 'item_tail_below': 4}}"
"""
import argparse
import ast
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recbole_sada.compat import load_checkpoint  # noqa: E402
from recbole_sada.evaluation.groups import GroupEvaluator  # noqa: E402
from recbole_sada.quick_start import load_data_and_model  # noqa: E402
from recbole_sada.utils import get_trainer  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_file")
    parser.add_argument("--group_sets", default=None, help="a dict as for the config key group_sets")
    args = parser.parse_args(argv)
    checkpoint = load_checkpoint(args.model_file, map_location="cpu")
    config, model, _, train_data, _, test_data = load_data_and_model(args.model_file)
    if args.group_sets:
        config["group_sets"] = ast.literal_eval(args.group_sets)
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    groups = GroupEvaluator(config, train_data._dataset)
    with groups.recording(trainer):
        test = trainer.evaluate(test_data, load_best_model=False, show_progress=False)
    print(json.dumps({"model_file": args.model_file, "epoch": checkpoint.get("epoch"),
                      "best_valid_score": checkpoint.get("best_valid_score"), "test_result": dict(test),
                      "test_groups": groups.result(), "test_group_sets": groups.set_results()}, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
