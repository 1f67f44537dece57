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
    set_anomaly_detection(bool(config["detect_anomaly"]))
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    logger = getLogger()
    logger.info(config)
    data = create_dataset(config)
    logger.info(data)
    train_data, valid_data, test_data = data_preparation(config, data)
    return config, data, train_data, valid_data, test_data


def run_recbole_sada(
    model=None, dataset=None, config_file_list=None, config_dict=None, saved=True, cmd_args=(), prepared=None,
    callback_fn=None,
):
    """Train and test ``model`` on ``dataset``; returns RecBole's result dict plus timing.

    Returns:
        dict: ``best_valid_score``, ``valid_score_bigger``, ``best_valid_result``, ``test_result``
        (as ``recbole.quick_start.run_recbole``), ``test_groups`` (HR/NDCG per user-length and
        item-popularity group, see :mod:`recbole_sada.evaluation.groups`) and ``epoch_time`` (mean
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
    train_time = time.time() - start
    groups = GroupEvaluator(config, train_data._dataset)
    with groups.recording(trainer):
        test_result = trainer.evaluate(test_data, load_best_model=saved, show_progress=config["show_progress"])

    logger.info(set_color("best valid ", "yellow") + f": {best_valid_result}")
    logger.info(set_color("test result", "yellow") + f": {test_result}")
    epoch_times = getattr(trainer, "epoch_times", [])
    return {
        "best_valid_score": best_valid_score,
        "valid_score_bigger": config["valid_metric_bigger"],
        "best_valid_result": best_valid_result,
        "test_result": test_result,
        "test_groups": groups.result(),
        "epoch_time": sum(epoch_times) / len(epoch_times) if epoch_times else None,
        "epochs_run": len(epoch_times),
        "train_time": train_time,
        "peak_memory_mb": peak_memory_mb(config["device"]),
        "model_file": trainer.saved_model_file if saved else None,
        "config": config,
        "trainer": trainer,
    }
