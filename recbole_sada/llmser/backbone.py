"""The backbone as the CCG and RCS use it: trained in memory on sequence-mode samples of the train
split's sequences (reversed for the CCG), then asked for its top items per input sequence."""
from collections.abc import Mapping

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


def fit_backbone(model, seqs, epochs, config, desc, show_progress):
    """Train ``model`` for ``epochs`` on sequence-mode samples of ``seqs`` (Adam, no validation).

    Returns the mean loss of the last epoch (None without epochs or samples)."""
    from tqdm.auto import tqdm

    from recbole_sada.trainer import reduce_loss

    max_len = config["MAX_ITEM_LIST_LENGTH"]
    item_seq, lengths, targets = sequence_samples(seqs, max_len)
    n = item_seq.size(0)
    if epochs == 0 or n == 0:
        model.eval()
        return None
    device = config["device"]
    batch_size = int(config["train_batch_size"])
    opt = torch.optim.Adam(model.parameters(), lr=config["learning_rate"], weight_decay=config["weight_decay"] or 0.0)
    generator = torch.Generator().manual_seed(int(config["seed"]))
    model.train_mode = "sequence"
    model.train()
    last = None
    bar = tqdm(range(epochs), desc=desc, unit="epoch", disable=not show_progress, leave=False)
    for _ in bar:
        total, batches = 0.0, 0
        for idx in torch.randperm(n, generator=generator).split(batch_size):
            inter = Interaction({
                model.ITEM_SEQ: item_seq[idx], model.ITEM_SEQ_LEN: lengths[idx], TARGET_SEQ_FIELD: targets[idx],
                model.POS_ITEM_ID: targets[idx].gather(1, (lengths[idx] - 1).unsqueeze(1)).squeeze(1),
            }).to(device)
            loss = model.calculate_loss(inter)
            if isinstance(loss, Mapping):
                loss = sum(reduce_loss(v) for v in loss.values())
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item()
            batches += 1
        last = total / max(batches, 1)
        bar.set_postfix(loss=f"{last:.4f}")
    model.eval()
    return last


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
