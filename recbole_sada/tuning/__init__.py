"""Hyper-parameter search with Ray Tune: the search driver and trials (:mod:`.search`) and the
search-space formats (:mod:`.space`).  ``run_hyper_sada.py`` is the command line."""
from recbole_sada.tuning.space import grid_size, load_search_space, to_tune_space

__all__ = ["grid_size", "load_search_space", "to_tune_space", "run_search", "init_ray"]


def __getattr__(name):  # Ray is imported only when a search runs
    if name in ("run_search", "init_ray"):
        from recbole_sada.tuning import search

        return getattr(search, name)
    raise AttributeError(name)
