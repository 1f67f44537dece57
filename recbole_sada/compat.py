"""The few shims RecBole 1.2.1 needs on a current torch, in one place.

* ``torch.load`` defaults to ``weights_only=True`` since torch 2.6.  RecBole 1.2.1 pickles its
  whole ``Config`` object into every checkpoint and reloads the best checkpoint with a plain
  ``torch.load`` before the test evaluation, which then fails.  Checkpoints written by RecBole /
  this plugin are trusted files of the user's own run, so while RecBole reads them we let
  ``torch.load`` unpickle them (:func:`trusted_checkpoint_load`).  Nothing in site-packages is
  edited and nothing is silenced.
"""
from contextlib import contextmanager

import torch

__all__ = ["trusted_checkpoint_load", "load_checkpoint"]


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
