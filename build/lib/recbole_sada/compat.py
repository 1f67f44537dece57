"""The few shims RecBole 1.2.1 needs on a current torch, in one place.

* ``torch.load`` defaults to ``weights_only=True`` since torch 2.6.  RecBole 1.2.1 pickles its
  whole ``Config`` object into every checkpoint and reloads the best checkpoint with a plain
  ``torch.load`` before the test evaluation, which then fails.  Checkpoints written by RecBole /
  this plugin are trusted files of the user's own run, so while RecBole reads them we let
  ``torch.load`` unpickle them (:func:`trusted_checkpoint_load`).  Nothing in site-packages is
  edited and nothing is silenced.
* RecBole 1.2.1's ``sequential_recommender/sine.py`` calls ``torch.autograd.set_detect_anomaly(True)``
  at import time, and importing any RecBole sequential model imports it, so every later backward
  pass checks each gradient for NaN (on CPU that was about half of a SASRec step's backward time).
  :func:`set_anomaly_detection` puts it back to the config's ``detect_anomaly`` (default False)
  after RecBole's models are imported (registry scan, ``prepare``).
"""
from contextlib import contextmanager

import torch

__all__ = ["trusted_checkpoint_load", "load_checkpoint", "set_anomaly_detection"]


def set_anomaly_detection(enabled=False):
    """Import RecBole's sequential models (whose import turns anomaly detection on), then set
    autograd anomaly detection to ``enabled``; returns the new state."""
    import recbole.model.sequential_recommender  # noqa: F401  (the import with the side effect)

    torch.autograd.set_detect_anomaly(bool(enabled))
    return torch.is_anomaly_enabled()


def load_checkpoint(path, map_location=None):
    """Load a RecBole / recbole-sada checkpoint file written by a training run (trusted)."""
    return torch.load(path, map_location=map_location, weights_only=False)


@contextmanager
def trusted_checkpoint_load():
    """Within the block, ``torch.load`` unpickles full checkpoints (``weights_only=False``)
    unless the caller asks otherwise.  Used around RecBole's own checkpoint reloads."""
    original = torch.load

    def _load(*args, **kwargs):
        kwargs.setdefault("weights_only", False)
        return original(*args, **kwargs)

    torch.load = _load
    try:
        yield
    finally:
        torch.load = original
