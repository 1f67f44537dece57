"""Dataset creation: the plugin's sequential dataset for sequential models, RecBole's otherwise."""
from recbole.data import create_dataset as recbole_create_dataset
from recbole.data import data_preparation
from recbole.utils import ModelType

from recbole_sada.data.dataset import PluginSequentialDataset

__all__ = ["create_dataset", "data_preparation"]


def create_dataset(config):
    """Create the dataset for ``config``: :class:`PluginSequentialDataset` for sequential models."""
    if config["MODEL_TYPE"] == ModelType.SEQUENTIAL:
        return PluginSequentialDataset(config)
    return recbole_create_dataset(config)
