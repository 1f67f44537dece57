"""The LLMSeR augmentation pipeline (Sun et al., "LLMSeR: Enhancing Sequential Recommendation via
LLM-based Data Augmentation", Sec. 3.2-3.3): pseudo-prior items and a reliability per user,
written to ``<dataset>.aug`` for the ``LLMSeR<Backbone>`` models.

Stages (each caches its output in the work folder and resumes where it stopped; each is a module
with its cache key and its run: ``ccg.py``, ``snf.py``, ``arv.py`` for RCS + ARV; this module
holds the data, the settings, the shared resources and the order):

1. **CCG** (collaborative candidate generator, Eq. 2).  The backbone is trained on the *reversed*
   training sequences and, given a user's reversed sequence, ranks the items that could come
   right before the first one; the top ``n_candidates`` (N) form the pool R_u.
2. **SNF** (semantic noise filter, Eq. 3).  The chat LLM reads the user's history (reversed) and
   the numbered pool and names ``n_pseudo`` (M) candidates.
3. **RCS** (reason candidate selector).  The backbone trained forward, for ARV.
4. **ARV** (adaptive reliability validation, Eq. 4-6).  The last training item is masked; the RCS
   ranks the top ``n_reason`` (H) items for S_u^mask = pseudo items + remaining history; the LLM
   picks the masked item among them; omega_u = cos(text(picked), text(masked)).
5. **write**: ``<dataset>.aug`` + sidecar json.

Choices where the paper leaves room (all documented in ``results/llmser.md`` too):

* **No leakage.**  Everything is built from the train split of RecBole's leave-one-out split
  (:func:`recbole_sada.data.dataset.training_sequences`): the valid and test interactions never
  enter the CCG/RCS training data, the candidate pools, the prompts, the masking or the
  reliability.  Candidates (CCG, SNF, RCS and the semantic fallbacks) are drawn from the items of
  the train split only, minus the user's own training items: an item seen only in valid/test
  interactions is never proposed, and a user's own valid/test item is not consulted either (it may
  be proposed when other users trained on it, as a deployed system would).  Earlier versions
  excluded each user's own valid/test items, a mild label peek; results made with them say so.
* **In-memory training.**  CCG and RCS are the plugin backbone (``get_model``) trained by the
  plugin's trainer (``PluginTrainer``, RecBole's optimiser and loop) on batches built from those
  sequences in memory, in the item id space of the dataset itself (no temporary atomic files, no
  id re-mapping; :mod:`recbole_sada.llmser.backbone`).  One sample per user as in ``train_mode:
  sequence``: input ``s[:-1]``, targets ``s[1:]`` of the last ``MAX_ITEM_LIST_LENGTH + 1``
  items, where ``s`` is the reversed training sequence (CCG) or the training sequence without
  its last item (RCS); a fixed budget (``ccg_epochs`` / ``rcs_epochs``), no validation data.
  The RCS never sees the masked item as a target, so ARV is not a memorisation test.
* **Inference input of the CCG** is the reversed training sequence truncated like any model input
  (its last ``MAX_ITEM_LIST_LENGTH`` items, i.e. the user's earliest items).
* **Prompts** show at most ``prompt_history`` items: SNF the earliest ones (those next to the
  pseudo-prior slot), most recent first; ARV the pseudo items, then the most recent training
  items before the masked one.
* **Order of the pseudo items.**  The picked candidates keep the pool's order (CCG rank, or
  semantic rank under ``use_ccg: False``); the best-ranked one is placed right before the first
  real item (as reverse augmentation generates it first), so the file lists them oldest first =
  reverse rank order.
* **Bad answers.**  Out-of-pool numbers, duplicates, too few picks or no pick at all get one
  repair turn; what is still missing is filled by semantic similarity (SNF: candidates closest to
  the mean text embedding of the shown history; ARV: the RCS top-1).  Every case is counted.
* **Batches.**  SNF and ARV ask the LLM ``llm_batch_size`` users at a time (the next users of
  the loop that need it; repair turns as a second batch), a local model generating them
  together; records are still written user by user, and the prompts, answers and file are
  those of one user at a time.
* **``llm: none``** (and users outside the ``max_users`` sample): SNF = the semantic fallback,
  ARV pick = RCS top-1.  ``max_users`` users are sent to the LLM, chosen by ``llm_users``:
  ``shortest`` (the shortest training sequences, i.e. the tail users whose augmented channel
  weighs most; ties by user token) or ``random`` (seeded by ``seed``).
* **omega** is clipped to [0, 1] (the cosine of two sentence embeddings can be slightly
  negative; Eq. 9 needs a weight in [0, 1]); a pick equal to the masked item gives 1.
* **ARV candidate order** (``arv_order``): ``rank`` lists F_u in RCS order, as the paper's
  prompt; a position-biased LLM then mostly repeats the RCS top-1.  ``shuffled`` lists them in a
  permutation fixed by ``seed`` and the user, so "the LLM agrees with the RCS" and "the LLM
  answers 1" become different events (``llm_pick_is_top1`` in the summary measures the first).

Ablations (Table 2 of the paper): ``use_ccg: False`` (the pool is the top-N items by semantic
similarity to the history), ``use_snf: False`` (the top-M of the CCG, no LLM), ``use_arv: False``
(omega = 1), ``use_rcs: False`` (ARV candidates are the top-H items by semantic similarity to
S_u^mask), ``use_reason: False`` (ARV pick = RCS top-1, no LLM).
"""
from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import yaml
from recbole.utils import init_seed

from recbole_sada.config import PROPERTIES_DIR, RECBOLE_PROPERTIES_DIR, build_config, data_root, model_layers
from recbole_sada.data import create_dataset
from recbole_sada.data.dataset import training_sequences
from recbole_sada.errors import InputError
from recbole_sada.fileio import atomic_path, file_sha256
from recbole_sada.llmser import arv, ccg, prompts, snf
from recbole_sada.llmser.augfile import default_aug_path, sequences_sha256, write_aug
# the stages' building blocks, importable from here as before the split
from recbole_sada.llmser.backbone import fit_backbone, input_batch, sequence_samples, top_items  # noqa: F401
from recbole_sada.llmser.common import JsonlStage, ask_llm, rank_by_similarity, semantic_top, stage_key  # noqa: F401
from recbole_sada.semantic import get_cache, get_chat_llm, get_encoder
from recbole_sada.utils import get_model


LLM_CHOICES = ("transformers", "openai", "none")
STAGES = ("data", "ccg", "snf", "rcs", "arv", "write")


# ------------------------------------------------------------------------------------ settings
@dataclass
class Settings:
    """Pipeline settings (defaults in ``properties/model/LLMSeR.yaml``)."""

    n_candidates: int
    n_pseudo: int
    n_reason: int
    ccg_epochs: int
    rcs_epochs: int
    prompt_history: int
    max_users: int | None
    llm_users: str
    use_ccg: bool
    use_snf: bool
    use_arv: bool
    use_rcs: bool
    use_reason: bool
    llm: str
    llm_item_noun: str
    arv_order: str

    @classmethod
    def from_config(cls, config):
        def need(key):
            if key not in config:
                raise InputError(f"config key {key} is missing (its default is in properties/model/LLMSeR.yaml)")
            return config[key]

        def integer(key, minimum, allow_none=False):
            value = need(key)
            if value is None and allow_none:
                return None
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
                raise InputError(f"config key {key} must be an integer >= {minimum}, got {value!r}")
            return int(value)

        def flag(key):
            value = need(key)
            if not isinstance(value, bool):
                raise InputError(f"config key {key} must be True or False, got {value!r}")
            return value

        llm = str(config["llmser_llm"] or config["llm_backend"] or "transformers").lower()
        if llm not in LLM_CHOICES:
            raise InputError(f"--llm must be one of {', '.join(LLM_CHOICES)}, got {llm!r}")
        order = str(need("llm_users"))
        if order not in ("shortest", "random"):
            raise InputError(f"config key llm_users must be 'shortest' or 'random', got {order!r}")
        s = cls(
            n_candidates=integer("n_candidates", 1),
            n_pseudo=integer("n_pseudo", 1),
            n_reason=integer("n_reason", 1),
            ccg_epochs=integer("ccg_epochs", 0),
            rcs_epochs=integer("rcs_epochs", 0),
            prompt_history=integer("prompt_history", 1),
            max_users=integer("max_users", 0, allow_none=True),
            llm_users=order,
            use_ccg=flag("use_ccg"),
            use_snf=flag("use_snf"),
            use_arv=flag("use_arv"),
            use_rcs=flag("use_rcs"),
            use_reason=flag("use_reason"),
            llm=llm,
            llm_item_noun=str(need("llm_item_noun")),
            arv_order=str(need("arv_order")),
        )
        if s.arv_order not in ("rank", "shuffled"):
            raise InputError(f"config key arv_order must be 'rank' or 'shuffled', got {s.arv_order!r}")
        if s.n_pseudo > s.n_candidates:
            raise InputError(f"n_pseudo ({s.n_pseudo}) cannot exceed n_candidates ({s.n_candidates})")
        return s


# ------------------------------------------------------------------------------------ data
class PipelineData:
    """The train split as sequences, each user's held-out items and the item texts."""

    def __init__(self, config):
        self.config = config
        self.uid_field, self.iid_field = config["USER_ID_FIELD"], config["ITEM_ID_FIELD"]
        dataset = create_dataset(config)
        train, valid, test = dataset.build()
        self.train_dataset = train
        self.uids, self.seqs = training_sequences(train)
        self.n_items = dataset.item_num
        # held-out items per user: kept for checks only, no stage reads them
        self.heldout = {}
        for split in (valid, test):
            for u, i in zip(split.inter_feat[self.uid_field].numpy(), split.inter_feat[self.iid_field].numpy()):
                self.heldout.setdefault(int(u), []).append(int(i))
        in_train = np.zeros(self.n_items, dtype=bool)
        for seq in self.seqs:
            in_train[np.asarray(seq, dtype=np.int64)] = True
        in_train[0] = False
        #: item ids never proposed to anyone: padding and items absent from the train split
        self.never = np.flatnonzero(~in_train)
        self.user_token = dataset.field2id_token[self.uid_field]
        self.item_token = dataset.field2id_token[self.iid_field]
        self.token_of_user = [str(self.user_token[u]) for u in self.uids]
        self.texts, self.has_text = load_item_texts(config, self.item_token)
        self.text_key = stage_key(self.texts)
        self.inter_path = Path(config["data_path"]) / f"{config['dataset']}.inter"
        self.inter_sha256 = file_sha256(self.inter_path)
        self.sequences_sha256 = sequences_sha256(self.token_of_user, [[self.item_token[i] for i in s] for s in self.seqs])
        self.data_key = stage_key("train-items-only", self.sequences_sha256)

    def excluded(self, row):
        """Items not proposed to user ``row`` beyond :attr:`never`: their own training items and
        padding (their valid/test items are not consulted)."""
        return set(self.seqs[row].tolist()) | {0}


def load_item_texts(config, item_tokens):
    """Text of every item id (index 0 = padding), from the ``.item`` file with the dataset's
    ``item_text_fields`` / ``item_text_template``; ``(texts, True)``, or placeholder texts and
    False when the dataset has no ``.item`` file."""
    from recbole_sada.preprocess.text import item_texts, read_item_table
    from recbole_sada.semantic.files import semantic_settings

    path = Path(config["data_path"]) / f"{config['dataset']}.item"
    if not path.is_file():
        return [""] + [f"item {t}" for t in item_tokens[1:]], False
    settings = semantic_settings(config)
    table = read_item_table(path, config["ITEM_ID_FIELD"], settings["item_text_fields"])
    fields = settings["item_text_fields"] or list(table.columns)
    by_token = item_texts(table, fields, settings["item_text_template"], config["seq_separator"] or " ")
    texts = [""] + [by_token.get(str(t)) or f"item {t}" for t in item_tokens[1:]]
    return texts, True


# ------------------------------------------------------------------------------------ pipeline
class LLMSeRPipeline:
    """Run the stages for one dataset and backbone (see the module docstring).

    Args:
        config: a config built for ``LLMSeR<Backbone>`` (or the backbone with ``LLMSeR.yaml``).
        backbone: backbone model name (``SASRec``, ``GRU4Rec``, ``BERT4Rec``...).
        chat_llm / encoder: objects to use instead of the configured ones (tests, notebooks).
        show_progress: tqdm bars (default: ``show_progress`` of the config).
        log: where progress lines go (default ``print``).
    """

    def __init__(self, config, backbone, chat_llm=None, encoder=None, show_progress=None, log=print):
        self.config = config
        self.backbone = backbone
        self.backbone_class = get_model(backbone)
        self.settings = Settings.from_config(config)
        self.show_progress = config["show_progress"] if show_progress is None else show_progress
        self.log = log or (lambda *_: None)
        self._chat_llm, self._encoder = chat_llm, encoder
        self._cache = None
        self.work_dir = Path(config["llmser_work_dir"] or Path(config["checkpoint_dir"] or "saved") / "llmser" / config["dataset"])
        self.aug_path = default_aug_path(config)
        self.summary = OrderedDict()
        self.data = None

    # ----------------------------------------------------------------- resources
    @property
    def cache(self):
        if self._cache is None:
            self._cache = get_cache(self.config)
        return self._cache

    @property
    def encoder(self):
        if self._encoder is None:
            self._encoder = get_encoder(self.config, cache=self.cache)
        return self._encoder

    @property
    def chat_llm(self):
        if self._chat_llm is None:
            if self.settings.llm == "none":
                return None
            cfg = {k: self.config[k] for k in ("llm_model", "llm_gguf_file", "llm_temperature", "llm_seed", "llm_batch_size",
                                               "semantic_device", "api_base_url", "api_key_env", "api_timeout",
                                               "api_max_retries", "api_backoff", "api_backoff_max", "cache_dir")
                   if k in self.config}
            cfg["llm_backend"] = self.settings.llm
            self._chat_llm = get_chat_llm(cfg, cache=self.cache)
        return self._chat_llm

    def llm_id(self):
        llm = self._chat_llm if self._chat_llm is not None else (None if self.settings.llm == "none" else self.chat_llm)
        return "none" if llm is None else f"{llm.backend}:{llm.model}"

    #: config keys that change what the chat LLM answers (part of the SNF/ARV stage keys)
    LLM_ANSWER_KEYS = ("api_base_url", "llm_gguf_file", "llm_temperature", "llm_seed")

    def llm_key(self):
        """The chat LLM as the stage keys see it: backend, model and every setting that changes an
        answer (a rerun against another server or temperature does not resume stale answers)."""
        ident = self.llm_id()
        if ident == "none":
            return ident
        return [ident] + [(k, self.config[k] if k in self.config else None) for k in self.LLM_ANSWER_KEYS]

    def encoder_id(self):
        return f"{self.encoder.backend}:{self.encoder.model}"

    def llm_stats(self):
        llm = self._chat_llm
        if llm is None:
            return (0, 0, 0)
        return (llm.stats.requests, llm.stats.calls, llm.stats.cache_hits)

    def record_stage(self, name, start, stats_before=None, **extra):
        entry = OrderedDict(seconds=round(time.time() - start, 2))
        if stats_before is not None:
            after = self.llm_stats()
            entry.update(llm_requests=after[0] - stats_before[0], llm_calls=after[1] - stats_before[1],
                         llm_cache_hits=after[2] - stats_before[2])
        entry.update(extra)
        self.summary[name] = entry

    # ----------------------------------------------------------------- keys
    def backbone_hparams(self):
        """Config values of the backbone's yaml keys plus the training keys (part of stage keys)."""
        keys = set()
        for layer in model_layers(self.backbone_class):
            for folder in (RECBOLE_PROPERTIES_DIR, PROPERTIES_DIR / "model"):
                path = folder / f"{layer}.yaml"
                if path.is_file():
                    keys |= set((yaml.safe_load(path.read_text()) or {}).keys())
        keys |= {"MAX_ITEM_LIST_LENGTH", "loss_type", "learning_rate", "train_batch_size", "weight_decay", "seed"}
        return {k: self.config[k] for k in sorted(keys)}

    def keys(self):
        """Every stage's cache key (each stage module owns its own: ``ccg``, ``snf``, ``arv``)."""
        base = [self.data.data_key, self.backbone, self.backbone_hparams()]
        keys = ccg.keys(self, base)
        keys["snf"] = snf.key(self, keys["pool"])
        keys.update(arv.keys(self, base, keys["snf"]))
        return {k: keys[k] for k in ("ccg", "pool", "snf", "rcs", "arv")}

    # ----------------------------------------------------------------- helpers
    def new_backbone(self):
        init_seed(self.config["seed"], self.config["reproducibility"])
        model = self.backbone_class(self.config, self.data.train_dataset).to(self.config["device"])
        model.train_mode = "sequence"
        return model

    def trained_backbone(self, name, key, seqs, epochs):
        """A backbone trained on ``seqs`` (loaded from ``<name>-<key>.pth`` when done before)."""
        path = self.work_dir / f"{name}-{key}.pth"
        model = self.new_backbone()
        if path.is_file():
            model.load_state_dict(torch.load(path, map_location=self.config["device"], weights_only=True))
            model.eval()
            return model, True
        fit_backbone(model, seqs, epochs, self.config, f"{name.upper()} training ({self.backbone}, reversed)"
                     if name == "ccg" else f"{name.upper()} training ({self.backbone})", self.show_progress,
                     dataset=self.data.train_dataset)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            torch.save(model.state_dict(), tmp)
        return model, False

    def llm_users(self):
        """Rows of the users whose SNF/ARV go to the LLM."""
        s, n = self.settings, len(self.data.uids)
        if s.llm == "none" and self._chat_llm is None:
            return set()
        limit = n if s.max_users is None else min(s.max_users, n)
        if s.llm_users == "random":
            rng = np.random.default_rng(int(self.config["seed"]))
            return set(rng.permutation(n)[:limit].tolist())
        order = sorted(range(n), key=lambda r: (len(self.data.seqs[r]), self.data.token_of_user[r]))
        return set(order[:limit])

    def item_embeddings(self):
        texts = self.data.texts
        vectors = self.encoder.encode(texts[1:], show_progress=self.show_progress)
        emb = np.zeros((len(texts), vectors.shape[1]), dtype=np.float32)
        emb[1:] = vectors
        return emb

    # ----------------------------------------------------------------- stages
    def run(self):
        """Run (or resume) every stage and write the file; returns the summary."""
        total_start = start = time.time()
        init_seed(self.config["seed"], self.config["reproducibility"])
        self.data = d = PipelineData(self.config)
        if not d.has_text:
            self.log(f"warning: no {self.config['dataset']}.item file: item texts are placeholders, so the "
                     "LLM and the semantic similarity see no content")
        emb = self.item_embeddings()
        self.record_stage("data", start, users=len(d.uids), items=int(d.n_items - 1))
        keys = self.keys()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        sampled = self.llm_users()
        pools = ccg.run(self, keys, emb)
        pseudo = snf.run(self, keys, pools, emb, sampled)
        omega, arv_info = arv.run(self, keys, pseudo, emb, sampled)
        start = time.time()
        rows = [(d.token_of_user[r], [str(d.item_token[i]) for i in pseudo[r]], omega[r]) for r in range(len(d.uids))]
        self.record_stage("write", start, file=str(self.aug_path))
        self.summary["total"] = OrderedDict(seconds=round(time.time() - total_start, 2))
        if self._chat_llm is not None:
            st = self._chat_llm.stats
            self.summary["total"].update(llm_requests=st.requests, llm_calls=st.calls, llm_cache_hits=st.cache_hits)
        meta = self.metadata(keys, sampled, arv_info)
        meta["summary"] = self.summary
        write_aug(self.aug_path, d.uid_field, rows, meta)
        if self._cache is not None:
            self._cache.close()
        return self.summary

    # ----------------------------------------------------------------- metadata
    def metadata(self, keys, sampled, arv_info):
        s, d = self.settings, self.data
        return OrderedDict(
            method="LLMSeR",
            dataset=self.config["dataset"],
            backbone=self.backbone,
            settings=asdict(s),
            N=s.n_candidates, M=s.n_pseudo, H=s.n_reason,
            llm=self.llm_id(),
            encoder=self.encoder_id(),
            prompt_versions={"snf": prompts.SNF_VERSION, "arv": prompts.ARV_VERSION, "repair": prompts.REPAIR_VERSION},
            llm_user_count=len(sampled),
            users=len(d.uids),
            inter_file=str(d.inter_path),
            inter_sha256=d.inter_sha256,
            sequences_sha256=d.sequences_sha256,
            stage_keys=keys,
            arv=arv_info,
            counts={k: v.get("outcomes") for k, v in self.summary.items() if isinstance(v, Mapping) and "outcomes" in v},
            created=time.strftime("%Y-%m-%d %H:%M:%S"),
        )


# ------------------------------------------------------------------------------------ entry
def pipeline_config(dataset, backbone, config_file_list=None, config_dict=None, cmd_args=()):
    """Config of the pipeline: that of ``LLMSeR<backbone>`` when the class exists (so the yaml
    layering is the model's), else the backbone's with ``LLMSeR.yaml`` below the user's files."""
    from recbole_sada.utils import plugin_models

    get_model(backbone)  # one-line error for an unknown backbone
    name = f"LLMSeR{backbone}"
    files = list(config_file_list or [])
    if name in plugin_models():
        model = name
    else:
        model = backbone
        files = [str(PROPERTIES_DIR / "model" / "LLMSeR.yaml")] + files
    return build_config(model, dataset, files, config_dict, cmd_args)


def run_pipeline(dataset="ml-100k", backbone="SASRec", config_file_list=None, config_dict=None, cmd_args=(),
                 chat_llm=None, encoder=None, show_progress=None, log=print):
    """Build (or resume) the ``.aug`` file of ``dataset``; returns ``(summary, aug_path)``.

    ml-100k is first copied out of the recbole package into ``<data_path>/ml-100k/`` when the
    user has no copy, so that the ``.aug`` file lives beside the data.
    """
    from recbole_sada.preprocess import ensure_user_copy

    config = pipeline_config(dataset, backbone, config_file_list, config_dict, cmd_args)
    if ensure_user_copy(config, log=False):
        log(f"copied RecBole's packaged {dataset} into {Path(data_root(config)) / dataset}")
        config = pipeline_config(dataset, backbone, config_file_list, config_dict, cmd_args)
    pipe = LLMSeRPipeline(config, backbone, chat_llm=chat_llm, encoder=encoder, show_progress=show_progress, log=log)
    summary = pipe.run()
    return summary, pipe.aug_path


def format_summary(summary):
    """Plain-text table of the stages (wall time, LLM use, outcomes)."""
    lines = [f"{'stage':<7}{'seconds':>9}{'LLM calls':>11}{'cache hits':>12}  details", "-" * 72]
    for name, entry in summary.items():
        details = ", ".join(f"{k}={v}" for k, v in entry.items()
                            if k not in ("seconds", "llm_requests", "llm_calls", "llm_cache_hits"))
        calls = entry.get("llm_calls", "-")
        hits = entry.get("llm_cache_hits", "-")
        lines.append(f"{name:<7}{entry.get('seconds', 0):>9.1f}{calls!s:>11}{hits!s:>12}  {details}")
    return "\n".join(lines)
