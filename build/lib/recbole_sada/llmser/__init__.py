"""LLMSeR data augmentation (Sun et al., "LLMSeR: Enhancing Sequential Recommendation via
LLM-based Data Augmentation"): the pipeline that writes ``<dataset>.aug``.

    python -m recbole_sada.llmser --dataset=ml-100k --backbone=SASRec [--llm transformers|openai|none]

The models that train on the file are ``LLMSeR<Backbone>`` in :mod:`recbole_sada.model.llmser`.
"""
from recbole_sada.llmser.augfile import default_aug_path, read_aug, write_aug
from recbole_sada.llmser.pipeline import LLMSeRPipeline, Settings, format_summary, pipeline_config, run_pipeline

__all__ = [
    "LLMSeRPipeline", "Settings", "run_pipeline", "pipeline_config", "format_summary",
    "read_aug", "write_aug", "default_aug_path",
]
