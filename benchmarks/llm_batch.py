"""Batched vs one-by-one generation of the LLMSeR SNF questions with the local chat model.

The prompts are the pipeline's own SNF questions (``recbole_sada.llmser.prompts``) for the
``--users`` shortest users of the train split (the users ``llm_users: shortest`` sends first),
over the candidate pool of ``use_ccg: False`` (the semantic top-N of the earliest items; no model
to train, same prompt length as the CCG's pools).  Each batch size answers the same prompts
through a fresh cache, so every prompt reaches the model; the table gives seconds per prompt, the
speed-up over batch size 1 and how many answers equal batch size 1's.

    python benchmarks/llm_batch.py --dataset=beauty --users 32 --batch_sizes 1 4 8 --threads 1 \
        [--output results/llmser.md]
"""
import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def snf_questions(dataset, backbone, n_users, item_noun, config_dict=None):
    """(messages list, PipelineData) of the SNF questions of the ``n_users`` shortest users."""
    from recbole_sada.llmser import pipeline as P
    from recbole_sada.llmser import prompts
    from recbole_sada.llmser.common import semantic_top

    config = P.pipeline_config(dataset, backbone, config_dict={"llmser_llm": "none", "show_progress": False,
                                                              **(config_dict or {})})
    pipe = P.LLMSeRPipeline(config, backbone, show_progress=False, log=None)
    pipe.data = d = P.PipelineData(config)
    s = pipe.settings
    emb = pipe.item_embeddings()
    order = sorted(range(len(d.uids)), key=lambda r: (len(d.seqs[r]), d.token_of_user[r]))[:n_users]
    questions = []
    for r in order:
        shown = d.seqs[r][: s.prompt_history]
        pool = semantic_top(emb, shown, d.excluded(r), s.n_candidates, never=d.never)
        questions.append(prompts.snf_messages([d.texts[i] for i in shown[::-1]], [d.texts[i] for i in pool],
                                              s.n_pseudo, item_noun))
    return questions, prompts.snf_max_new_tokens(s.n_pseudo)


def measure(questions, max_new_tokens, batch_sizes, llm_config):
    from recbole_sada.semantic import SemanticCache, get_chat_llm

    rows, reference = [], None
    for size in batch_sizes:
        with tempfile.TemporaryDirectory() as tmp:
            llm = get_chat_llm({**llm_config, "cache_dir": tmp, "llm_batch_size": size}, cache=SemanticCache(tmp))
            llm.chat("Say hi.", max_new_tokens=2)  # load the model outside the timing
            start = time.perf_counter()
            answers = llm.chat_many(questions, max_new_tokens=max_new_tokens)
            seconds = time.perf_counter() - start
            calls = llm.stats.calls - 1
        if reference is None:
            reference = answers
        rows.append({"batch_size": size, "seconds": seconds, "per_prompt": seconds / len(questions),
                     "same": sum(a == b for a, b in zip(answers, reference)), "calls": calls})
    return rows


def table(rows, n, args, model_id):
    import torch

    base = rows[0]["per_prompt"]
    lines = [
        f"SNF questions of the {n} shortest `{args.dataset}` users (pools: semantic top-N), "
        f"answered by `{model_id}` through a fresh cache per batch size (greedy decoding, "
        f"at most {args.max_new_tokens} new tokens per answer).",
        f"Machine: {platform.machine()} CPU, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{args.threads} thread(s); load average at the end {os.getloadavg()[0]:.1f}.",
        "",
        "| llm_batch_size | seconds | s / prompt | speed-up | answers equal to batch size 1's |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['batch_size']} | {r['seconds']:.1f} | {r['per_prompt']:.2f} | "
                     f"{base / r['per_prompt']:.2f}x | {r['same']}/{n} |")
    cmd = "python benchmarks/llm_batch.py " + " ".join(sys.argv[1:])
    return "\n".join(lines + ["", "```", cmd, "```"])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="beauty")
    parser.add_argument("--backbone", default="SASRec")
    parser.add_argument("--users", type=int, default=32)
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--item_noun", default="product")
    parser.add_argument("--max_new_tokens", type=int, default=None, help="default: the pipeline's SNF limit")
    parser.add_argument("--output", default=None, help="markdown file to update (section 'LLM batch')")
    args = parser.parse_args(argv)
    if args.batch_sizes[0] != 1:
        args.batch_sizes = [1] + [b for b in args.batch_sizes if b != 1]
    import torch

    torch.set_num_threads(args.threads)
    questions, limit = snf_questions(args.dataset, args.backbone, args.users, args.item_noun)
    args.max_new_tokens = args.max_new_tokens or limit
    from recbole_sada.semantic import get_chat_llm

    model_id = get_chat_llm({"cache_dir": tempfile.gettempdir()}).model
    rows = measure(questions, args.max_new_tokens, args.batch_sizes, {})
    text = table(rows, len(questions), args, model_id)
    print(text)
    if args.output:
        from run_table import write_section

        title = f"LLMSeR on {args.dataset}: SNF questions to the offline chat model, one by one vs in batches"
        write_section(Path(args.output), title, f"## {title}\n\n{text}")


if __name__ == "__main__":
    main()
