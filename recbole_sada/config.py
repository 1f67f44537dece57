"""Configuration: RecBole's ``Config`` with the plugin's property files layered in.

Priority, lowest first::

    RecBole defaults < properties/overall.yaml < properties/model/<Model>.yaml   (recbole_sada/properties/)
      < properties/dataset/<dataset>.yaml < config files given by the user
      < config_dict (Python API) < command-line ``--key=value``

Also fixes where the data lives (RecBole 1.2.1 always points ``ml-100k`` at the copy inside its
package, ignoring ``data_path``) and makes sure the dataset's atomic files exist: a RecBole
benchmark dataset (RecBole's own URL list) is downloaded with RecBole's helpers when
``download_datasets`` is on and the server answers; otherwise one line says which files are
missing and where they go.
"""
import os
import re
from pathlib import Path

import recbole
import yaml
from recbole.config import Config

from recbole_sada.errors import InputError
from recbole_sada.utils import get_model

PROPERTIES_DIR = Path(__file__).resolve().parent / "properties"  # package data (a wheel carries it)
PRESET_DIR = PROPERTIES_DIR / "preset"
TRAIN_MODES = ("prefix", "sequence")
LOSS_TYPES = ("BCE", "CE", "BPR")

# How to build the atomic files of datasets that RecBole cannot find offline.
_DATASET_HINTS = {
    "beauty": "python dataset_scripts/s3rec_to_atomic.py --input <S3-Rec data>/Beauty.txt "
    "--item-file <S3-Rec data>/Beauty.item --output-dir {root}/beauty --dataset beauty",
    "sports": "python dataset_scripts/s3rec_to_atomic.py --input <S3-Rec data>/Sports_and_Outdoors.txt "
    "--output-dir {root}/sports --dataset sports",
    "amazon-beauty": "python dataset_scripts/amazon_to_atomic.py --reviews reviews_Beauty.json.gz "
    "--meta meta_Beauty.json.gz --output-dir {root}/amazon-beauty --dataset amazon-beauty "
    "(or copy RecBole's atomic amazon-beauty files there)",
}


RECBOLE_PROPERTIES_DIR = Path(recbole.__file__).resolve().parent / "properties" / "model"


def model_layers(model_class):
    """Names of the yaml layers of a model, lowest first.

    A class may set ``properties_name``; the layers are those names along the MRO (base classes
    first) and then the model's own name.  ``BASRecSASRec`` -> ``[SASRec, BASRec, BASRecSASRec]``,
    so method defaults live once in ``BASRec.yaml`` and backbone defaults once in ``SASRec.yaml``.
    """
    names = []
    for klass in reversed(model_class.__mro__):
        name = vars(klass).get("properties_name")
        if name and name not in names:
            names.append(name)
    if model_class.__name__ not in names:
        names.append(model_class.__name__)
    return names


def property_files(model_class, dataset_name):
    """Yaml files for this model and dataset, lowest priority first.

    RecBole's own yaml of each layer (e.g. its ``SASRec.yaml`` for ``BASRecSASRec``, which RecBole
    itself would not load) comes first, then ``overall.yaml``, the plugin's model layers and the
    dataset's yaml.
    """
    layers = model_layers(model_class)
    candidates = [RECBOLE_PROPERTIES_DIR / f"{n}.yaml" for n in layers if n != model_class.__name__]
    candidates.append(PROPERTIES_DIR / "overall.yaml")
    candidates += [PROPERTIES_DIR / "model" / f"{n}.yaml" for n in layers]
    candidates.append(PROPERTIES_DIR / "dataset" / f"{dataset_name}.yaml")
    return [str(p) for p in candidates if p.is_file()]


#: dict-valued keys a later layer updates key by key instead of replacing
MERGED_DICT_KEYS = ("eval_args",)


def merge_layer(base, layer):
    """``base`` updated by ``layer`` as RecBole does, except that the keys in
    :data:`MERGED_DICT_KEYS` are merged: ``--eval_args="{'mode': 'uni100'}"`` changes the ranking
    mode and keeps the split, order and grouping of the files below (RecBole would replace the
    whole dict and fall back to its own random 8:1:1 split)."""
    merged = dict(base)
    for key, value in (layer or {}).items():
        if key in MERGED_DICT_KEYS and isinstance(value, dict) and isinstance(merged.get(key), dict):
            value = {**merged[key], **value}
        merged[key] = value
    return merged


class SADAConfig(Config):
    """RecBole's ``Config`` with the command line given as a list (``cmd_args``) instead of read
    from ``sys.argv``; otherwise RecBole's layering, parsing and value conversion, except that a
    partial ``eval_args`` updates the one below it (:func:`merge_layer`)."""

    def __init__(self, model=None, dataset=None, config_file_list=None, config_dict=None, cmd_args=()):
        self._cmd_args = list(cmd_args or ())
        super().__init__(model=model, dataset=dataset, config_file_list=config_file_list, config_dict=config_dict)

    def _load_config_files(self, file_list):
        merged = {}
        for file in file_list or ():
            with open(file, "r", encoding="utf-8") as f:
                merged = merge_layer(merged, yaml.load(f.read(), Loader=self.yaml_loader))
        return merged

    def _merge_external_config_dict(self):
        merged = {}
        for layer in (self.file_config_dict, self.variable_config_dict, self.cmd_config_dict):
            merged = merge_layer(merged, layer)
        self.external_config_dict = merged

    def _load_cmd_line(self):
        given = {}
        for arg in self._cmd_args:
            if not arg.startswith("--") or "=" not in arg:
                raise InputError(f"unrecognised argument {arg!r}: overrides are written --key=value")
            key, value = arg[2:].split("=", 1)
            if key in given and given[key] != value:
                raise InputError(f"--{key} is given twice with different values ({given[key]}, {value})")
            given[key] = value
        return self._convert_config_dict(given)


def available_presets():
    """Names of the packaged presets (``properties/preset/<name>.yaml``)."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def preset_file(name):
    """The yaml of a preset: a packaged name (``basrec_official`` ->
    ``recbole_sada/properties/preset/basrec_official.yaml``, found in a wheel install too) or the
    path of an existing yaml file, returned as it is."""
    name = str(name).strip()
    if os.path.isfile(name):
        return name
    path = PRESET_DIR / f"{name[:-5] if name.endswith('.yaml') else name}.yaml"
    if not path.is_file():
        raise InputError(f"unknown preset {name!r}: the packaged presets are {', '.join(available_presets())} "
                         f"(or give the path of a yaml file)")
    return str(path)


def build_config(model, dataset, config_file_list=None, config_dict=None, cmd_args=()):
    """Build the RecBole ``Config`` for a plugin (or RecBole) model.

    Args:
        model (str | type): model name (plugin first, then RecBole) or class.
        dataset (str): dataset name; its files live in ``<data_path>/<dataset>/``.
        config_file_list (list[str]): user yaml files, above the plugin's properties.
        config_dict (dict): overrides from Python code.
        cmd_args (list[str]): ``--key=value`` strings, the highest priority.
    """
    model_class = get_model(model) if isinstance(model, str) else model
    user_files = [str(f) for f in (config_file_list or [])]
    for f in user_files:
        if not os.path.isfile(f):
            raise InputError(f"config file not found: {f} (check the --config_files path)")
    files = property_files(model_class, dataset) + user_files
    import yaml

    try:
        config = SADAConfig(
            model=model_class, dataset=dataset, config_file_list=files, config_dict=config_dict, cmd_args=cmd_args
        )
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise InputError(f"a config file is not valid yaml{where}: {problem} "
                             f"(files: {' '.join(user_files) or 'none'}); fix the yaml") from None
    except (SyntaxError, NameError) as exc:  # RecBole evals the values it reads
        raise InputError(f"a value could not be read ({type(exc).__name__}: {exc}); "
                             f"write each override once as --key=value") from None
    _resolve_data_path(config)
    check_dataset_files(config)
    _validate(config)
    apply_torch_threads(config)
    apply_memory_reuse(config)
    return config


def apply_torch_threads(config):
    """``torch_threads`` (default 1 in ``overall.yaml``; 0 or ~ = torch's own choice) for whatever
    this config drives next: training, tuning trials, preprocessing and the LLMSeR pipeline all
    build their config here, so a rerun of any entry point gives the same numbers."""
    threads = config["torch_threads"]
    if threads:
        import torch

        torch.set_num_threads(int(threads))


def apply_memory_reuse(config):
    """``reuse_freed_memory`` (``overall.yaml``; ~ = on exactly when ``loss_type`` is CE): glibc's
    allocator keeps freed memory for the next allocation instead of giving large blocks back to the
    operating system.  A CE step allocates catalogue-wide tensors (Beauty: 2,000 x 12,101 floats,
    ~100 MB) several times over, and each fresh mapping is paid again in page faults: with the
    setting a CE step of BASRec on Beauty takes 44% less time; a BCE step's tensors are small and
    gain nothing measurable (``results/cost.md``).  The arithmetic is untouched, so the numbers are
    too; the process keeps its peak memory.  Returns whether it took effect (False when off, or
    off glibc, e.g. macOS)."""
    setting = config["reuse_freed_memory"]
    if setting is None:
        setting = config["loss_type"] == "CE"
    return reuse_freed_memory() if setting else False


def reuse_freed_memory():
    """Tell glibc's malloc to serve every size from its heap (``M_MMAP_MAX`` 0) and never trim it
    (``M_TRIM_THRESHOLD`` at its int maximum, 2 GB); a no-op returning False where there is no glibc."""
    import ctypes
    import ctypes.util
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
        return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1))
    except (OSError, AttributeError):
        return False


def data_root(config):
    """The user's data folder (``data_path`` as given, before RecBole appends the dataset)."""
    return config.external_config_dict.get("data_path", "dataset/")


def _resolve_data_path(config):
    dataset = config["dataset"]
    user_copy = os.path.join(data_root(config), dataset)
    if dataset == "ml-100k" and os.path.isfile(os.path.join(user_copy, f"{dataset}.inter")):
        # RecBole forces the packaged copy; a user copy (which may carry feature files) wins.
        config["data_path"] = user_copy


def packaged_dataset_dir(dataset):
    """Folder of a dataset shipped inside the recbole package (only ml-100k), else None."""
    import recbole

    folder = Path(recbole.__file__).resolve().parent / "dataset_example" / dataset
    return folder if (folder / f"{dataset}.inter").is_file() else None


DOWNLOAD_PROBE_TIMEOUT = 15  # seconds to wait for the dataset server's first answer


def recbole_dataset_url(dataset):
    """Download URL of a RecBole benchmark dataset (from RecBole's ``url.yaml``), or None."""
    import yaml

    path = Path(recbole.__file__).resolve().parent / "properties" / "dataset" / "url.yaml"
    if not path.is_file():
        return None
    return (yaml.safe_load(path.read_text()) or {}).get(dataset)


def download_dataset(dataset, url, folder):
    """Fetch RecBole's zip of ``dataset`` into ``folder`` with RecBole's own helpers (progress bar,
    unzip, renaming to ``<dataset>.inter`` ...).  The files are unpacked in a temporary folder
    and moved in at the end, so an interrupted download leaves nothing half-written.

    Raises:
        OSError: the server cannot be reached or the archive holds no ``.inter`` file.
    """
    import shutil
    import tempfile
    import urllib.request

    from recbole.utils.url import download_url, extract_zip, rename_atomic_files

    with urllib.request.urlopen(url, timeout=DOWNLOAD_PROBE_TIMEOUT) as answer:  # fail fast offline
        answer.read(1)
    Path(folder).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dataset}-download-", dir=Path(folder).parent))
    try:
        try:
            archive = download_url(url, str(tmp))
        except RuntimeError as exc:
            raise OSError(str(exc)) from None
        extract_zip(archive, str(tmp))
        os.unlink(archive)
        for sub in [p for p in tmp.rglob("*") if p.is_file() and p.parent != tmp]:
            os.replace(sub, tmp / sub.name)  # archives that hold a folder
        rename_atomic_files(str(tmp), Path(archive).stem, dataset)
        files = [p for p in tmp.iterdir() if p.is_file() and p.suffix in (".inter", ".item", ".user")]
        if not any(p.name == f"{dataset}.inter" for p in files):
            raise OSError(f"the archive at {url} holds no {dataset}.inter")
        Path(folder).mkdir(parents=True, exist_ok=True)
        for p in files:
            os.replace(p, Path(folder) / p.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def check_dataset_files(config):
    """Make sure the dataset's ``.inter`` file exists: download a RecBole benchmark dataset when
    allowed and reachable, else raise a one-line :class:`InputError` naming the missing
    files, where they go and how to build them."""
    dataset = config["dataset"]
    inter = os.path.join(config["data_path"], f"{dataset}.inter")
    if os.path.isfile(inter):
        return
    root = data_root(config).rstrip("/")
    url = recbole_dataset_url(dataset)
    failure = None
    if url and config["download_datasets"] is not False:
        try:
            download_dataset(dataset, url, config["data_path"])
        except (OSError, ValueError) as exc:  # URLError, timeouts, bad archives
            failure = f"{type(exc).__name__}: {str(getattr(exc, 'reason', exc)).splitlines()[0][:120]}"
        if os.path.isfile(inter):
            return
    elif url:
        failure = "download_datasets is False"
    where = (f"put {dataset}.inter (and optional {dataset}.item / {dataset}.user) in {config['data_path']}")
    if url:
        hint = f", or build it with: {_DATASET_HINTS[dataset].format(root=root)}" if dataset in _DATASET_HINTS else ""
        raise InputError(
            f"dataset '{dataset}' not found: {inter} is missing and RecBole's download from {url} failed "
            f"({failure}); {where}{hint}")
    if dataset in _DATASET_HINTS:
        hint = _DATASET_HINTS[dataset].format(root=root)
        raise InputError(
            f"dataset '{dataset}' not found: {inter} is missing (not a RecBole download); "
            f"build it with: {hint}"
        )
    if (PROPERTIES_DIR / "dataset" / f"{dataset}.yaml").is_file():
        raise InputError(
            f"dataset '{dataset}' not found: put its atomic files ({dataset}.inter, optional "
            f"{dataset}.item) in {config['data_path']}"
        )
    raise InputError(
        f"unknown dataset '{dataset}': no {inter} and no properties/dataset/{dataset}.yaml "
        f"(put RecBole atomic files in {root}/{dataset}/ or set --data_path)"
    )


# Numeric keys checked when set: (kind, lowest, highest, lowest allowed itself), and the fix.
NUMBER_RULES = {
    "learning_rate": (float, 0.0, None, False),
    "weight_decay": (float, 0.0, None, True),
    "epochs": (int, 1, None, True),
    "stage1_epochs": (int, 0, None, True),
    "stopping_step": (int, 1, None, True),
    "eval_step": (int, 1, None, True),
    "train_batch_size": (int, 1, None, True),
    "eval_batch_size": (int, 1, None, True),
    "MAX_ITEM_LIST_LENGTH": (int, 1, None, True),
    "hidden_size": (int, 1, None, True),
    "embedding_size": (int, 1, None, True),
    "inner_size": (int, 1, None, True),
    "n_layers": (int, 1, None, True),
    "n_heads": (int, 1, None, True),
    "hidden_dropout_prob": (float, 0.0, 1.0, True),
    "attn_dropout_prob": (float, 0.0, 1.0, True),
    "dropout_prob": (float, 0.0, 1.0, True),
    "seed": (int, None, None, True),
    "alpha": (float, 0.0, None, False),
    "rate_min": (float, 0.0, 1.0, True),
    "rate_max": (float, 0.0, 1.0, True),
    "beta": (float, 0.0, 1.0, True),
    "tail_threshold": (int, 0, None, True),
    "n_clusters": (int, 1, None, True),
    "substitute_topk": (int, 1, None, True),
}


def _check_number(config, key, rule):
    kind, low, high, closed = rule
    value = config[key]
    if value is None:
        return
    import numbers

    ok_type = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if kind is int:
        ok_type = ok_type and float(value).is_integer()
    ok = ok_type and (low is None or value > low or (closed and value == low)) and (high is None or value <= high)
    if not ok:
        want = "an integer" if kind is int else "a number"
        bounds = []
        if low is not None:
            bounds.append(f"{'>=' if closed else '>'} {low}")
        if high is not None:
            bounds.append(f"<= {high}")
        raise InputError(
            f"{key} must be {want}{' ' + ' and '.join(bounds) if bounds else ''}, got {value!r} "
            f"(e.g. --{key}={_example(kind, low, closed)})")


def _example(kind, low, closed):
    if low is None:
        return 2020
    value = low if closed else low + (1 if kind is int else 0.001)
    return int(value) if kind is int else value


def _validate(config):
    for key, rule in NUMBER_RULES.items():
        if key in config:
            _check_number(config, key, rule)
    if config["rate_min"] is not None and config["rate_max"] is not None and config["rate_min"] > config["rate_max"]:
        raise InputError(f"rate_min ({config['rate_min']}) must not exceed rate_max ({config['rate_max']})")
    mode = config["train_mode"] or "prefix"
    if mode not in TRAIN_MODES:
        raise InputError(f"train_mode must be one of {TRAIN_MODES}, got '{mode}'")
    extra = config["extra_test_modes"]
    if isinstance(extra, str):
        extra = config["extra_test_modes"] = [extra]
    for m in extra or ():
        if not (isinstance(m, str) and re.fullmatch(r"full|(uni|pop)[1-9]\d*", m)):
            raise InputError(f"extra_test_modes: {m!r} is not a test mode; use full, uni<N> or pop<N> "
                                 "(e.g. --extra_test_modes=\"['uni100']\")")
    if config["group_sets"]:
        from recbole_sada.evaluation.groups import _check_group_sets

        try:  # checked before training, not when the test groups are computed at the end
            _check_group_sets(config["group_sets"])
        except ValueError as exc:
            raise InputError(f"{exc} (--group_sets=\"{{'llmesr': {{'user_group_edges': [7], 'item_tail_below': 4}}}}\")") from None
    loss = config["loss_type"]
    if loss is not None and loss not in LOSS_TYPES:
        raise InputError(f"loss_type must be one of {LOSS_TYPES}, got '{loss}'")
    epochs, stage1 = config["epochs"], config["stage1_epochs"] or 0
    if stage1 and config["two_stage"] is not False and not config["pretrained_path"] and stage1 >= epochs:
        raise InputError(
            f"stage1_epochs ({stage1}) must be smaller than epochs ({epochs}): epochs counts both stages"
        )
    pretrained = config["pretrained_path"]
    if pretrained and not os.path.isfile(pretrained):
        raise InputError(f"pretrained_path not found: {pretrained} (a stage-1 checkpoint .pth)")
