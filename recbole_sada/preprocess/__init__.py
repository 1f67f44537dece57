"""Preprocessing: semantic item/user features (``python -m recbole_sada.preprocess``)."""
from recbole_sada.preprocess.build import (
    build_semantic_features,
    cluster_users,
    ensure_user_copy,
    training_histories,
)
from recbole_sada.preprocess.text import compile_template, render_user_text

__all__ = [
    "build_semantic_features", "cluster_users", "ensure_user_copy", "training_histories",
    "compile_template", "render_user_text", "run_preprocess",
]


def run_preprocess(dataset="ml-100k", config_file_list=None, config_dict=None, cmd_args=(),
                   model="SASRec", log=True):
    """Build the semantic features of ``dataset`` with the plugin's config layering.

    ml-100k is first copied from the recbole package into ``<data_path>/ml-100k/`` when the user
    has no copy, so that the features live beside the data.

    Returns:
        dict: see :func:`build_semantic_features`.
    """
    from recbole_sada.config import build_config

    config = build_config(model, dataset, config_file_list, config_dict, cmd_args)
    if ensure_user_copy(config, log=log):
        config = build_config(model, dataset, config_file_list, config_dict, cmd_args)
    return build_semantic_features(config, log=log)
