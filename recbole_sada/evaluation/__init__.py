"""Evaluation beyond RecBole's overall metrics: long-tail groups, multi-seed significance,
augmentation similarity."""
from recbole_sada.evaluation.groups import GroupEvaluator, format_group_table, group_metrics, metrics_from_ranks
from recbole_sada.evaluation.significance import (
    compare,
    format_markdown_table,
    mean_std,
    paired_ttest,
    run_seeds,
    summarize,
)
from recbole_sada.evaluation.relevance import augmentation_similarity

__all__ = [
    "GroupEvaluator",
    "format_group_table",
    "group_metrics",
    "metrics_from_ranks",
    "compare",
    "format_markdown_table",
    "mean_std",
    "paired_ttest",
    "run_seeds",
    "summarize",
    "augmentation_similarity",
]
