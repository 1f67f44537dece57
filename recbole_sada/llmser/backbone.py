"""The backbone as the CCG and RCS use it: trained by the plugin's trainer on sequence-mode samples
of the train split's sequences held in memory (reversed for the CCG; no atomic files, no id
re-mapping), then asked for its top items per input sequence."""
import numpy as np
import torch
from recbole.data.interaction import Interaction

from recbole_sada.data.dataset import TARGET_SEQ_FIELD


def sequence_samples(seqs, max_len):
    """Train-mode ``sequence`` samples: the last ``max_len + 1`` items of each sequence, input
    ``s[:-1]`` and targets ``s[1:]`` (sequences shorter than 2 give no sample)."""
    rows = [np.asarray(s[-(max_len + 1):], dtype=np.int64) for s in seqs if len(s) >= 2]
    n = len(rows)
    item_seq = np.zeros((n, max_len), dtype=np.int64)
    targets = np.zeros((n, max_len), dtype=np.int64)
    lengths = np.zeros(n, dtype=np.int64)
    for r, s in enumerate(rows):
        item_seq[r, : len(s) - 1] = s[:-1]
        targets[r, : len(s) - 1] = s[1:]
        lengths[r] = len(s) - 1
    return torch.as_tensor(item_seq), torch.as_tensor(lengths), torch.as_tensor(targets)


def input_batch(seqs, max_len):
    """Model inputs (last ``max_len`` items of each sequence, left aligned) and lengths."""
    n = len(seqs)
    item_seq = np.zeros((n, max_len), dtype=np.int64)
    lengths = np.zeros(n, dtype=np.int64)
    for r, s in enumerate(seqs):
        s = np.asarray(s[-max_len:], dtype=np.int64) if len(s) else np.zeros(0, dtype=np.int64)
        item_seq[r, : len(s)] = s
        lengths[r] = len(s)
    return torch.as_tensor(item_seq), torch.as_tensor(lengths)


class SequenceBatches:
    """Sequence-mode training batches of in-memory sequences, as the plugin's trainer reads a
    RecBole train loader: an iterable of ``Interaction`` batches with ``len`` and ``dataset``.

    One sample per sequence (:func:`sequence_samples`); the order is a fresh permutation per
    epoch from a generator seeded once with ``seed`` (the global RNG, which the model's negative
    sampling draws from, is not touched)."""

    shuffle = False  # RecBole reads it only for distributed training

    def __init__(self, model, seqs, max_len, batch_size, seed, dataset=None):
        self.fields = (model.ITEM_SEQ, model.ITEM_SEQ_LEN, model.POS_ITEM_ID)
        self.item_seq, self.lengths, self.targets = sequence_samples(seqs, max_len)
        self.batch_size = int(batch_size)
        self.generator = torch.Generator().manual_seed(int(seed))
        self.dataset = dataset

    @property
    def n(self):
        return self.item_seq.size(0)

    def __len__(self):
        return -(-self.n // self.batch_size)

    def __iter__(self):
        seq_field, len_field, pos_field = self.fields
        for idx in torch.randperm(self.n, generator=self.generator).split(self.batch_size):
            lengths, targets = self.lengths[idx], self.targets[idx]
            yield Interaction({
                seq_field: self.item_seq[idx], len_field: lengths, TARGET_SEQ_FIELD: targets,
                pos_field: targets.gather(1, (lengths - 1).unsqueeze(1)).squeeze(1),
            })


def fit_backbone(model, seqs, epochs, config, desc, show_progress, dataset=None):
    """Train ``model`` for ``epochs`` on sequence-mode samples of ``seqs`` through the plugin's
    trainer (:class:`~recbole_sada.trainer.PluginTrainer`: RecBole's optimiser and loop, named
    losses), one stage, no validation data, no checkpoint written (the caller saves the weights).

    ``dataset``: the RecBole dataset the model was built on (RecBole's evaluator collects item
    and user counts from it).  Returns the mean batch loss of the last epoch (None without epochs
    or samples)."""
    from recbole_sada.trainer import PluginTrainer

    batches = SequenceBatches(model, seqs, config["MAX_ITEM_LIST_LENGTH"], config["train_batch_size"],
                              config["seed"], dataset)
    if epochs == 0 or batches.n == 0:
        model.eval()
        return None
    model.train_mode = "sequence"
    trainer = PluginTrainer(config, model)
    # the pipeline's own budget: ``ccg_epochs`` / ``rcs_epochs`` epochs of the plain loss, from scratch
    trainer.stage1_epochs, trainer.pretrained_path, trainer.epochs = 0, None, int(epochs)
    if show_progress:
        trainer.logger.info(desc)
    trainer.fit(batches, None, verbose=False, saved=False, show_progress=show_progress)
    model.eval()
    last = trainer.train_loss_dict.get(int(epochs) - 1)
    return None if last is None else float(last) / max(len(batches), 1)


@torch.no_grad()
def top_items(model, seqs, excluded, k, config, batch_size=512, never=None):
    """For each input sequence (oldest first) the ``k`` best-scored item ids, skipping the ids in
    ``excluded[i]`` and, for every row, in ``never``; (n, k) int64, 0 where fewer items are left
    (or the input is empty)."""
    never = torch.as_tensor(np.asarray([] if never is None else never, dtype=np.int64))
    max_len, device = config["MAX_ITEM_LIST_LENGTH"], config["device"]
    n = len(seqs)
    out = np.zeros((n, k), dtype=np.int64)
    model.eval()
    for start in range(0, n, batch_size):
        rows = list(range(start, min(start + batch_size, n)))
        item_seq, lengths = input_batch([seqs[r] for r in rows], max_len)
        has_input = lengths > 0
        lengths = lengths.clamp(min=1)  # empty inputs are scored on padding and discarded below
        scores = model.full_sort_predict(
            Interaction({model.ITEM_SEQ: item_seq, model.ITEM_SEQ_LEN: lengths}).to(device)
        ).float().cpu()
        scores = scores[:, : model.n_items]
        if len(never):
            scores[:, never] = -float("inf")
        r_idx = [i for i, r in enumerate(rows) for _ in excluded[r]]
        c_idx = [c for r in rows for c in excluded[r]]
        if r_idx:
            scores[torch.as_tensor(r_idx), torch.as_tensor(c_idx)] = -float("inf")
        kk = min(k, scores.size(1))
        values, idx = scores.topk(kk, dim=1)
        idx[~torch.isfinite(values)] = 0
        idx[~has_input] = 0
        out[start: start + len(rows), :kk] = idx.numpy()
    return out
