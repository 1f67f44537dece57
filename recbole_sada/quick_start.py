"""``run_recbole_sada``: config -> dataset -> model -> trainer -> test, like RecBole's ``run_recbole``."""
import logging
import resource
import sys
import time
from logging import getLogger

import torch
from recbole.utils import init_logger, init_seed, set_color

from recbole_sada.compat import set_anomaly_detection
from recbole_sada.config import build_config
from recbole_sada.data import create_dataset, data_preparation
from recbole_sada.evaluation.groups import GroupEvaluator
from recbole_sada.utils import get_model, get_trainer


def peak_memory_mb(device=None):
    """Peak memory of this process: GPU allocator peak on CUDA, else max RSS (MiB)."""
    if device is not None and getattr(device, "type", "cpu") == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def prepare(model=None, dataset=None, config_file_list=None, config_dict=None, cmd_args=()):
    """Build config, dataset and dataloaders (shared by the CLI, benchmarks and tuning)."""
    config = build_config(model, dataset, config_file_list, config_dict, cmd_args)  # sets torch_threads
    if getattr(get_model(config["model"]), "needs_semantic", False):
        # side files are data: built (if missing) before the dataset, never inside a model constructor
        from recbole_sada.semantic.files import ensure_semantic_features

        ensure_semantic_features(config)
    set_anomaly_detection(bool(config["detect_anomaly"]))
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    logger = getLogger()
    logger.info(config)
    data = create_dataset(config)
    logger.info(data)
    train_data, valid_data, test_data = data_preparation(config, data)
    return config, data, train_data, valid_data, test_data


def test_loader_in_mode(config, data, train_data, valid_data, test_data, mode):
    """The test split again, evaluated in ``mode`` (``full``, ``uni100``, ``pop100``...): a second
    test pass of the same model, e.g. the sampled protocol of the LLMSeR / LLM-ESR tables beside
    full ranking (``extra_test_modes: [uni100]``).  The negatives are RecBole's sampler's, seeded
    by ``seed``; ``config`` is left as it was."""
    from recbole.data.utils import create_samplers, get_dataloader

    old_mode = dict(config["eval_args"]["mode"])
    old_args = config["test_neg_sample_args"]
    try:
        config["eval_args"]["mode"]["test"] = mode
        config._set_eval_neg_sample_args("test")
        init_seed(config["seed"], config["reproducibility"])
        built = [train_data._dataset, valid_data._dataset, test_data._dataset]
        _, _, sampler = create_samplers(config, data, built)
        return get_dataloader(config, "test")(config, test_data._dataset, sampler, shuffle=False)
    finally:
        config["eval_args"]["mode"] = old_mode
        config["test_neg_sample_args"] = old_args


def run_recbole_sada(
    model=None, dataset=None, config_file_list=None, config_dict=None, saved=True, cmd_args=(), prepared=None,
    callback_fn=None,
):
    """Train and test ``model`` on ``dataset``; returns RecBole's result dict plus timing.

    Returns:
        dict: ``best_valid_score``, ``valid_score_bigger``, ``best_valid_result``, ``test_result``
        (as ``recbole.quick_start.run_recbole``), ``test_groups`` (HR/NDCG per user-length and
        item-popularity group, see :mod:`recbole_sada.evaluation.groups`), ``test_group_sets`` (the
        same for each definition of ``group_sets``), ``extra_tests`` (mode ->
        ``test_result`` / ``test_groups`` of a second test pass for each of ``extra_test_modes``) and ``epoch_time`` (mean
        seconds per training epoch), ``epochs_run``, ``peak_memory_mb``, ``model_file``, ``config``.
        ``callback_fn(epoch_idx, valid_score)`` is passed to ``trainer.fit`` (hyper-parameter search).
    """
    if prepared is None:
        prepared = prepare(model, dataset, config_file_list, config_dict, cmd_args)
    config, data, train_data, valid_data, test_data = prepared
    logger = getLogger()

    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model_class = get_model(config["model"])
    model = model_class(config, train_data._dataset).to(config["device"])
    logger.info(model)

    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    start = time.time()
    best_valid_score, best_valid_result = trainer.fit(
        train_data, valid_data, saved=saved, show_progress=config["show_progress"], callback_fn=callback_fn
    )
    train_time = time.time() - start + getattr(trainer, "elapsed_before", 0.0)  # + earlier processes of a resumed run
    groups = GroupEvaluator(config, train_data._dataset)
    with groups.recording(trainer):
        test_result = trainer.evaluate(test_data, load_best_model=saved, show_progress=config["show_progress"])

    logger.info(set_color("best valid ", "yellow") + f": {best_valid_result}")
    logger.info(set_color("test result", "yellow") + f": {test_result}")
    extra_tests = {}
    for mode in config["extra_test_modes"] or ():
        loader = test_loader_in_mode(config, data, train_data, valid_data, test_data, mode)
        extra_groups = GroupEvaluator(config, train_data._dataset)
        init_seed(config["seed"], config["reproducibility"])
        with extra_groups.recording(trainer):  # the best model is loaded already
            extra_result = trainer.evaluate(loader, load_best_model=False, show_progress=config["show_progress"])
        extra_tests[mode] = {"test_result": extra_result, "test_groups": extra_groups.result()}
        logger.info(set_color(f"test result ({mode})", "yellow") + f": {extra_result}")
    epoch_times = getattr(trainer, "epoch_times", [])
    return {
        "best_valid_score": best_valid_score,
        "valid_score_bigger": config["valid_metric_bigger"],
        "best_valid_result": best_valid_result,
        "test_result": test_result,
        "test_groups": groups.result(),
        "test_group_sets": groups.set_results(),
        "extra_tests": extra_tests,
        "epoch_time": sum(epoch_times) / len(epoch_times) if epoch_times else None,
        "epochs_run": len(epoch_times),
        "train_time": train_time,
        "resumed_from": getattr(trainer, "resumed_from", None),
        "peak_memory_mb": peak_memory_mb(config["device"]),
        "model_file": trainer.saved_model_file if saved else None,
        "config": config,
        "trainer": trainer,
    }


# ------------------------------------------------------------------------------ reload and rank
def load_data_and_model(model_file, device=None):
    """RecBole's ``load_data_and_model`` for plugin (and RecBole) models: rebuild the config,
    dataset and dataloaders a checkpoint was trained with and load its weights.

    Args:
        model_file: a ``.pth`` written by a training run (``saved/<Model>-<date>.pth``).
        device: where the model runs (default: the checkpoint's device when available, else CPU).

    Returns:
        ``(config, model, dataset, train_data, valid_data, test_data)`` as RecBole's.

    Raises:
        InputError: the file is missing or not a RecBole checkpoint; the dataset's id maps
        differ from those the model was trained on.
    """
    import os

    from recbole_sada.compat import load_checkpoint
    from recbole_sada.errors import InputError

    if not os.path.isfile(model_file):
        raise InputError(f"model_file not found: {model_file} (a .pth from a training run, e.g. saved/...)")
    try:
        checkpoint = load_checkpoint(model_file, map_location="cpu")
    except Exception as exc:
        raise InputError(f"{model_file} is not a checkpoint ({type(exc).__name__})") from None
    if not isinstance(checkpoint, dict) or "config" not in checkpoint or "state_dict" not in checkpoint:
        raise InputError(f"{model_file} is not a RecBole checkpoint (no config / state_dict)")
    config = checkpoint["config"]
    # a Config built in this process sets RecBole's numpy aliases (np.float, used by its NDCG);
    # one unpickled from a checkpoint does not, so evaluating after a reload would fail
    config.compatibility_settings()
    if device is None:
        device = config["device"] if torch.cuda.is_available() else torch.device("cpu")
    config["device"] = torch.device(device)
    config["use_gpu"] = config["device"].type == "cuda"
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    init_seed(config["seed"], config["reproducibility"])
    model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    model.load_other_parameter(checkpoint.get("other_parameter"))  # refuses other data (id maps)
    model.load_state_dict(checkpoint["state_dict"])
    model.eval()
    return config, model, dataset, train_data, valid_data, test_data


def full_sort_topk(uid_series, model, test_data, k, device=None):
    """RecBole's ``full_sort_topk`` (works for plugin models): ``(scores, item ids)`` of the
    ``k`` best items for each internal user id, from the user's test input sequence (everything
    before the test item); padding scores ``-inf``, and with ``eval_mask_history`` the input items."""
    from recbole.utils.case_study import full_sort_topk as recbole_full_sort_topk

    device = device or next(model.parameters()).device
    return recbole_full_sort_topk(uid_series, model, test_data, k, device=device)


def topk_items(user_tokens, model, test_data, k=10):
    """The ``k`` recommended item tokens (best first) for each user token (as in the atomic files)."""
    dataset = test_data.dataset
    uids = dataset.token2id(dataset.uid_field, [str(u) for u in user_tokens])
    _, index = full_sort_topk(list(map(int, uids)), model, test_data, k)
    return [list(dataset.id2token(dataset.iid_field, row.cpu().numpy())) for row in index]


def item_text_table(config):
    """``{item token: text}`` from the dataset's ``.item`` file, with the configured
    ``item_text_fields`` / ``item_text_template`` (the text the semantic encoder reads)."""
    from pathlib import Path

    from recbole_sada.preprocess.text import item_texts, read_item_table
    from recbole_sada.semantic.files import semantic_settings

    settings = semantic_settings(config)
    path = Path(config["data_path"]) / f"{config['dataset']}.item"
    table = read_item_table(path, config["ITEM_ID_FIELD"], settings["item_text_fields"])
    fields = settings["item_text_fields"] or list(table.columns)
    return item_texts(table, fields, settings["item_text_template"], config["seq_separator"] or " ")
