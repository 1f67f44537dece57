"""Model and trainer registry: plugin classes first, then RecBole's (as RecBole-GNN does)."""
import importlib
import pkgutil
from functools import lru_cache

from recbole.model.abstract_recommender import AbstractRecommender
from recbole.utils import ModelType
from recbole.utils import get_model as recbole_get_model
from recbole.utils import get_trainer as recbole_get_trainer

from recbole_sada.compat import set_anomaly_detection
from recbole_sada.errors import InputError

_MODEL_PACKAGES = ("recbole_sada.model", "recbole_sada.model.backbones")


@lru_cache(maxsize=None)
def plugin_models():
    """``{name: class}`` of every recommender defined in ``recbole_sada.model`` (one scan, cached)."""
    found = {}
    for package_name in _MODEL_PACKAGES:
        package = importlib.import_module(package_name)
        for info in pkgutil.iter_modules(package.__path__):
            if info.ispkg:
                continue
            module = importlib.import_module(f"{package_name}.{info.name}")
            for name, obj in vars(module).items():
                if (
                    isinstance(obj, type)
                    and issubclass(obj, AbstractRecommender)
                    and obj.__module__ == module.__name__
                    and not name.startswith("_")
                    and not vars(obj).get("_abstract_plugin", False)
                ):
                    found[name] = obj
    set_anomaly_detection(False)  # undo RecBole's import-time switch (see recbole_sada.compat)
    return found


def get_model(model_name):
    """Return the model class named ``model_name``: the plugin's first, then RecBole's.

    Raises :class:`InputError` (one line, with the known names) for an unknown model.
    """
    models = plugin_models()
    if model_name in models:
        return models[model_name]
    from recbole_sada.model.grid import UNSUPPORTED

    if model_name in UNSUPPORTED:
        raise InputError(f"{model_name} is not built: {UNSUPPORTED[model_name]}")
    try:
        return recbole_get_model(model_name)
    except (ValueError, AttributeError, ImportError):
        known = ", ".join(sorted(models))
        raise InputError(
            f"unknown model '{model_name}': not a recbole-sada model ({known}) nor a RecBole model"
        ) from None


def get_trainer(model_type, model_name):
    """Return the trainer class for a model: ``recbole_sada.trainer.<Model>Trainer`` if defined,
    :class:`~recbole_sada.trainer.PluginTrainer` for every sequential model, else RecBole's."""
    trainer_module = importlib.import_module("recbole_sada.trainer")
    if hasattr(trainer_module, model_name + "Trainer"):
        return getattr(trainer_module, model_name + "Trainer")
    if model_type == ModelType.SEQUENTIAL:
        return trainer_module.PluginTrainer
    return with_checkpoint_shim(recbole_get_trainer(model_type, model_name))


def with_checkpoint_shim(trainer_class):
    """RecBole's own trainer with its checkpoint reloads made to work on torch >= 2.6."""
    from recbole_sada.compat import trusted_checkpoint_load

    class Trainer(trainer_class):
        def evaluate(self, *args, **kwargs):
            with trusted_checkpoint_load():
                return super().evaluate(*args, **kwargs)

        def resume_checkpoint(self, *args, **kwargs):
            with trusted_checkpoint_load():
                return super().resume_checkpoint(*args, **kwargs)

    Trainer.__name__ = Trainer.__qualname__ = trainer_class.__name__
    return Trainer
