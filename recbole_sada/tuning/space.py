"""Hyper-parameter search spaces: RecBole's ``.hyper`` files and yaml, as Ray Tune spaces.

``.hyper`` files (RecBole's format, one parameter a line; ``#`` starts a comment)::

    learning_rate loguniform -8,0          # exp(U(-8, 0)): natural-log exponents, as RecBole
    hidden_dropout_prob uniform 0.1,0.5    # U(0.1, 0.5); "0.1 0.5" (space separated) works too
    n_layers quniform 1,3,1                # round(U(1, 3) / 1) * 1 (integers when all three are)
    hidden_size choice [32, 64, 128]       # a Python literal list (strings, numbers, lists, bools)

``loguniform`` follows RecBole's ``HyperTuning`` (hyperopt's ``hp.loguniform``): the two bounds are
**natural-log exponents**, so ``loguniform -8,0`` samples between e^-8 (3.4e-4) and e^0 = 1,
uniformly in log space.

Yaml files use RecBole's ``params_dict`` layout (the same kinds and conventions)::

    choice:
      hidden_size: [32, 64]
    loguniform:
      learning_rate: [-8, 0]

``--search=grid`` turns every ``choice`` into a grid (all combinations); the continuous kinds stay
random draws, made once per grid point and repeat.
"""
import ast
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from recbole_sada.errors import InputError

__all__ = ["Param", "KINDS", "load_search_space", "to_tune_space", "grid_size"]

KINDS = ("choice", "uniform", "quniform", "loguniform")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")


@dataclass
class Param:
    """One searched parameter: ``name``, ``kind`` (one of :data:`KINDS`), ``values`` (the choices,
    or the bounds as written) and where it was defined (``source`` = "file line N")."""

    name: str
    kind: str
    values: list
    source: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def log_scale(self):
        return self.kind == "loguniform"

    def bounds(self):
        """Sampled range ``(low, high)`` in parameter units (exponentiated for loguniform)."""
        if self.kind == "choice":
            raise ValueError("a choice has no bounds")
        low, high = self.values[0], self.values[1]
        return (math.exp(low), math.exp(high)) if self.log_scale else (low, high)


def _numbers(text, count, where):
    parts = [p for p in re.split(r"[,\s]+", text.strip()) if p]
    if len(parts) != count:
        raise InputError(f"{where}: expected {count} numbers, got '{text.strip()}'")
    try:
        return [float(p) for p in parts]
    except ValueError:
        raise InputError(f"{where}: '{text.strip()}' are not numbers") from None


def _make_param(name, kind, raw, where):
    if not _NAME.match(name):
        raise InputError(f"{where}: '{name}' is not a parameter name")
    if kind not in KINDS:
        raise InputError(f"{where}: unknown kind '{kind}' for '{name}' (use one of {', '.join(KINDS)})")
    if kind == "choice":
        values = raw
        if isinstance(raw, str):
            try:
                values = ast.literal_eval(raw.strip())
            except (ValueError, SyntaxError):
                raise InputError(
                    f"{where}: choice values of '{name}' must be a Python list such as [1, 2], got '{raw.strip()}'"
                ) from None
        if not isinstance(values, (list, tuple)) or len(values) == 0:
            raise InputError(f"{where}: choice values of '{name}' must be a non-empty list")
        return Param(name, kind, list(values), where)
    count = 3 if kind == "quniform" else 2
    if isinstance(raw, str):
        values = _numbers(raw, count, where)
    else:
        if not isinstance(raw, (list, tuple)) or len(raw) != count:
            raise InputError(f"{where}: {kind} '{name}' needs {count} numbers, got {raw!r}")
        try:
            values = [float(v) for v in raw]
        except (TypeError, ValueError):
            raise InputError(f"{where}: {kind} '{name}' needs numbers, got {raw!r}") from None
    if not values[0] < values[1]:
        raise InputError(f"{where}: {kind} '{name}' needs low < high, got {values[0]:g}, {values[1]:g}")
    if kind == "quniform" and values[2] <= 0:
        raise InputError(f"{where}: quniform '{name}' needs a positive step, got {values[2]:g}")
    return Param(name, kind, values, where)


def _parse_hyper(path, text):
    params = []
    for number, line in enumerate(text.splitlines(), start=1):
        content = line.split("#", 1)[0].strip() if not _in_literal(line) else line.strip()
        if not content:
            continue
        where = f"{path} line {number}"
        parts = content.split(None, 2)
        if len(parts) < 3:
            raise InputError(f"{where}: expected '<name> <kind> <values>', got '{content}'")
        params.append(_make_param(parts[0], parts[1], parts[2], where))
    return params


def _in_literal(line):
    """A '#' inside quotes (a string choice) is not a comment."""
    hash_pos = line.find("#")
    return hash_pos >= 0 and (line[:hash_pos].count("'") % 2 == 1 or line[:hash_pos].count('"') % 2 == 1)


def _parse_yaml(path, text):
    import yaml

    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path} line {mark.line + 1}" if mark else str(path)
        raise InputError(f"{where}: not valid yaml ({getattr(err, 'problem', err)})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a mapping of kinds ({', '.join(KINDS)}) to parameters")
    params = []
    for kind, entries in data.items():
        if kind not in KINDS:
            raise InputError(f"{path}: unknown kind '{kind}' (top-level keys are {', '.join(KINDS)})")
        if not isinstance(entries, dict):
            raise InputError(f"{path}: '{kind}' must map parameter names to values")
        for name, raw in entries.items():
            params.append(_make_param(str(name), kind, raw, f"{path} ({kind}.{name})"))
    return params


def load_search_space(path):
    """Read a ``.hyper`` (or ``.yaml`` / ``.yml``) search space.

    Raises:
        InputError: one line naming the file (and line) for a missing file, an unknown kind,
            malformed values or a parameter defined twice.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"params file not found: {path} (give --params_file=hyper/<model>.hyper)")
    text = path.read_text()
    params = _parse_yaml(path, text) if path.suffix in (".yaml", ".yml") else _parse_hyper(path, text)
    if not params:
        raise InputError(f"{path}: no parameters to search")
    seen = {}
    for p in params:
        if p.name in seen:
            raise InputError(f"{p.source}: '{p.name}' is already defined at {seen[p.name]}")
        seen[p.name] = p.source
    return params


def to_tune_space(params, search="random"):
    """Ray Tune ``param_space`` for the parameters (``search``: ``random`` or ``grid``)."""
    from ray import tune

    space = {}
    for p in params:
        if p.kind == "choice":
            space[p.name] = tune.grid_search(list(p.values)) if search == "grid" else tune.choice(list(p.values))
        elif p.kind == "uniform":
            space[p.name] = tune.uniform(*p.values)
        elif p.kind == "quniform":
            if all(float(v).is_integer() for v in p.values):
                space[p.name] = tune.qrandint(*(int(v) for v in p.values))  # integers, high included
            else:
                space[p.name] = tune.quniform(*p.values)
        elif p.kind == "loguniform":
            space[p.name] = tune.loguniform(*p.bounds())
    return space


def grid_size(params):
    """Number of grid points (product of the choice sizes; 1 without choices)."""
    size = 1
    for p in params:
        if p.kind == "choice":
            size *= len(p.values)
    return size
