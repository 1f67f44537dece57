"""Fingerprint of the LLMSeR pipeline's outputs on the tests' synthetic data: per setting (no LLM,
a scripted chat LLM, the w/o CCG / RCS / ARV ablations) the md5 of the .aug rows, the stage keys
and the stage summaries without wall times.  Run it before and after a change to the pipeline:
equal output = the change moved no number (same seed, same files, same cache keys).

    python benchmarks/llmser_fingerprint.py > before.json   # then after the change:
    python benchmarks/llmser_fingerprint.py | diff before.json -   # only temp paths differ
"""
import hashlib
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from recbole_sada.semantic import SemanticCache  # noqa: E402
from tests.test_llmser import ScriptedChat, aug_rows, make_pipeline, mixed_answers, write_distinct_dataset  # noqa: E402

out = {}
with tempfile.TemporaryDirectory() as d:
    root = Path(d) / "data"; write_distinct_dataset(root)
    for name, extra, chat in [("none", {"llmser_llm": "none"}, False), ("chat", {}, True),
                              ("no_ccg", {"use_ccg": False, "llmser_llm": "none"}, False),
                              ("no_rcs", {"use_rcs": False}, True), ("no_arv", {"use_arv": False}, True)]:
        t = Path(d) / name
        cfg = {"data_path": str(root), "checkpoint_dir": str(t / "saved"), "cache_dir": str(t / "cache"),
               "aug_file": str(t / "llmtiny.aug"), "hidden_size": 16, "inner_size": 32, "embedding_size": 16,
               "n_layers": 1, "n_heads": 1, "MAX_ITEM_LIST_LENGTH": 8, "train_batch_size": 16, "eval_batch_size": 64,
               "ccg_epochs": 1, "rcs_epochs": 1, "n_candidates": 6, "n_pseudo": 3, "n_reason": 4,
               "show_progress": False, "state": "WARNING", "train_mode": "sequence", "epochs": 1, **extra}
        c = ScriptedChat(SemanticCache(cfg["cache_dir"]), mixed_answers) if chat else None
        pipe = make_pipeline(cfg, chat=c)
        pipe.run()
        rows, meta = aug_rows(cfg["aug_file"])
        summary = {k: {kk: vv for kk, vv in v.items() if kk not in ("seconds", "file")} for k, v in meta["summary"].items()}
        out[name] = {"rows": hashlib.md5(json.dumps(sorted(rows.items())).encode()).hexdigest(),
                     "keys": meta["stage_keys"], "summary": summary}
print(json.dumps(out, indent=1, sort_keys=True))
