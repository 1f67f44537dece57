from recbole_sada.data.dataset import TARGET_SEQ_FIELD, PluginSequentialDataset
from recbole_sada.data.utils import create_dataset, data_preparation
