"""Sequential dataset with two training modes.

``train_mode: prefix`` (RecBole's default): every prefix of a user's training part is a sample
and the loss is taken at its last position only (RecBole's data augmentation).

``train_mode: sequence`` (SASRec paper, BASRec / S3-Rec public code): one sample per user, input
``s[:-1]`` and targets ``s[1:]`` of the training part (the last ``MAX_ITEM_LIST_LENGTH`` items),
with a loss at every position.  The (input, target) pairs are the same as in prefix mode, except
that windows older than the last ``MAX_ITEM_LIST_LENGTH`` items are dropped, as in those codes.

Both modes share RecBole's leave-one-out split and the valid/test samples, so the evaluator sees
exactly the same data.
"""
import numpy as np
import torch
from recbole.data.dataset import SequentialDataset
from recbole.data.interaction import Interaction
from recbole.utils import FeatureSource, FeatureType

TARGET_SEQ_FIELD = "target_item_list"


class PluginSequentialDataset(SequentialDataset):
    """RecBole's :class:`SequentialDataset` whose train split follows ``train_mode``; atomic
    files are checked row by row before RecBole reads them (:mod:`recbole_sada.data.checks`), and
    exactly repeated interactions are counted in a warning."""

    def _load_feat(self, filepath, source):
        from recbole_sada.data.checks import check_atomic_file

        time_field = self.config["TIME_FIELD"] if source == FeatureSource.INTERACTION else None
        check_atomic_file(filepath, self.config["field_separator"] or "\t", time_field,
                          self.config["encoding"] or "utf-8", required=source == FeatureSource.INTERACTION)
        return super()._load_feat(filepath, source)

    def _remove_duplication(self):
        from recbole_sada.data.checks import duplicate_interactions

        if self.config["rm_dup_inter"] is None and self.inter_feat is not None:
            count, example = duplicate_interactions(self.inter_feat, self.uid_field, self.iid_field, self.time_field)
            if count:
                self.logger.warning(
                    f"{count} of {len(self.inter_feat)} interactions of {self.dataset_name} repeat an earlier "
                    f"(user, item, timestamp) row exactly (e.g. user {example[0]!r}, item {example[1]!r}); they are "
                    f"kept and can put the same item in train and test: deduplicate the .inter file or set "
                    f"rm_dup_inter: first (RecBole; it keeps one row per user-item pair)")
        super()._remove_duplication()

    def semantic_features(self):
        """The semantic item / user tables and user clusters aligned with this dataset's ids
        (:class:`recbole_sada.semantic.files.SemanticFeatures`; SADA and LLM-ESR read them
        here), loaded once per dataset object.  ``prepare`` builds missing files before the dataset
        exists, for every model that declares ``needs_semantic``."""
        cached = getattr(self, "_semantic_features", None)
        if cached is None:
            from recbole_sada.semantic.files import load_semantic_features

            cached = self._semantic_features = load_semantic_features(self.config, self)
        return cached

    def pseudo_items(self, backbone):
        """LLMSeR's pseudo-prior items of every user, ``(pseudo, pseudo_len, omega, train_len)``
        aligned with this dataset's ids, read from the ``.aug`` file and checked against this
        dataset's training sequences (:func:`recbole_sada.llmser.augfile.load_pseudo_items`),
        once per dataset object and backbone (``LLMSeR<Backbone>`` reads them here)."""
        owner, cached = getattr(self, "_pseudo_items", (None, None))
        if owner is not self:  # RecBole's build() copies datasets shallowly: never share a copy's cache
            cached = {}
            self._pseudo_items = (self, cached)
        if backbone not in cached:
            from recbole_sada.llmser.augfile import load_pseudo_items

            cached[backbone] = load_pseudo_items(self.config, self, backbone)
        return cached[backbone]

    def build(self):
        datasets = super().build()
        if (self.config["train_mode"] or "prefix") == "sequence":
            datasets[0] = to_sequence_mode(datasets[0])
        return datasets


#: the earlier name (kept: a dataset pickled with ``save_dataset`` refers to it)
SADASequentialDataset = PluginSequentialDataset


def semantic_features(dataset):
    """``dataset.semantic_features()``, or the files read for a plain RecBole dataset."""
    if hasattr(dataset, "semantic_features"):
        return dataset.semantic_features()
    from recbole_sada.semantic.files import load_semantic_features

    return load_semantic_features(dataset.config, dataset)


def pseudo_items(dataset, backbone):
    """``dataset.pseudo_items(backbone)``, or the ``.aug`` file read for a plain RecBole dataset."""
    if hasattr(dataset, "pseudo_items"):
        return dataset.pseudo_items(backbone)
    from recbole_sada.llmser.augfile import load_pseudo_items

    return load_pseudo_items(dataset.config, dataset, backbone)


def last_sample_per_user(uid, seq_len):
    """Index of each user's longest prefix sample (ties: the last row)."""
    order = np.lexsort((np.arange(len(uid)), seq_len, uid))
    sorted_uid = uid[order]
    is_last = np.r_[sorted_uid[1:] != sorted_uid[:-1], True]
    return order[is_last]


def shifted_targets(item_seq, item_seq_len, last_target):
    """Targets of a sequence-mode sample: ``item_seq[1:len] + [last_target]``, zero padded.

    >>> shifted_targets(torch.tensor([[1, 2, 3, 0]]), torch.tensor([3]), torch.tensor([4]))
    tensor([[2, 3, 4, 0]])
    """
    B, L = item_seq.shape
    target = torch.zeros_like(item_seq)
    target[:, :-1] = item_seq[:, 1:]
    positions = torch.arange(L).unsqueeze(0)
    target[positions >= (item_seq_len - 1).unsqueeze(1)] = 0
    target[torch.arange(B), item_seq_len - 1] = last_target
    return target


def training_sequences(train_dataset):
    """Each user's whole training part (valid/test items excluded), oldest first.

    Works on the train split in either mode: a prefix-mode split is rebuilt from its first item
    and its targets (nothing is truncated to ``MAX_ITEM_LIST_LENGTH``); a sequence-mode split
    carries the sequences computed before it was reduced to one sample per user.

    Returns:
        (uids, seqs): ``uids`` int64 array (remapped ids), ``seqs`` list of int64 arrays.
    """
    cached = getattr(train_dataset, "train_sequences", None)
    if cached is not None:
        return cached
    cfg = train_dataset.config
    uid_field, iid_field = cfg["USER_ID_FIELD"], cfg["ITEM_ID_FIELD"]
    inter = train_dataset.inter_feat
    uid = inter[uid_field].numpy()
    seq_len = inter[cfg["ITEM_LIST_LENGTH_FIELD"]].numpy()
    first_items = inter[iid_field + cfg["LIST_SUFFIX"]][:, 0].numpy()
    targets = inter[iid_field].numpy()
    order = np.lexsort((np.arange(len(uid)), seq_len, uid))
    uid, first_items, targets = uid[order], first_items[order], targets[order]
    starts = np.flatnonzero(np.r_[True, uid[1:] != uid[:-1]])
    seqs = [
        np.concatenate([[first_items[a]], targets[a:b]]).astype(np.int64)
        for a, b in zip(starts, np.r_[starts[1:], len(uid)])
    ]
    return uid[starts].astype(np.int64), seqs


def to_sequence_mode(train_dataset):
    """Turn a prefix-mode train split into one sample per user with a target at every position."""
    cfg = train_dataset.config
    uid_field, iid_field = cfg["USER_ID_FIELD"], cfg["ITEM_ID_FIELD"]
    seq_field = iid_field + cfg["LIST_SUFFIX"]
    len_field = cfg["ITEM_LIST_LENGTH_FIELD"]
    inter = train_dataset.inter_feat
    idx = last_sample_per_user(inter[uid_field].numpy(), inter[len_field].numpy())
    idx = torch.as_tensor(np.sort(idx))
    new_inter = inter[idx]
    new_inter.update(
        Interaction(
            {
                TARGET_SEQ_FIELD: shifted_targets(
                    new_inter[seq_field], new_inter[len_field], new_inter[iid_field]
                )
            }
        )
    )
    seq_dataset = train_dataset.copy(new_inter)
    seq_dataset.train_sequences = training_sequences(train_dataset)
    seq_dataset.set_field_property(
        TARGET_SEQ_FIELD,
        FeatureType.TOKEN_SEQ,
        FeatureSource.INTERACTION,
        train_dataset.field2seqlen[seq_field],
    )
    return seq_dataset
