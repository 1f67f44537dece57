"""LLMEmb's recommendation adaptation stage (Liu et al., "LLMEmb: Large Language Model Can Be a
Good Embedding Generator for Sequential Recommendation", AAAI 2025) as a baseline of the plugin,
over any causal plugin backbone: ``LLMEmbRAT<Backbone>``.

LLMEmb has two stages.  **Stage 1, supervised contrastive fine-tuning (SCFT)** fine-tunes the LLM
itself on item prompts with attribute-level augmentation, so that its embeddings tell items apart.
That stage needs the LLM's weights and a GPU and is **not built here**; the name says so: this is
the paper's second stage on the plugin's *frozen, not fine-tuned* semantic table (the
``<dataset>.itememb`` of ``python -m recbole_sada.preprocess``, all-MiniLM-L6-v2 unless another
encoder was configured; the paper's runs use fine-tuned LLaMA embeddings).

**Stage 2, recommendation adaptation training (RAT)**, as built here:

* the item table of the backbone is ``A(S)``: the frozen semantic table ``S`` through a trainable
  two-layer linear adapter ``A(s) = W2 (W1 s)`` (``d -> d / 2 -> D``, as the paper's code); the
  backbone has no free ID table (its ``item_embedding`` is frozen and unused);
* a collaborative alignment term pulls ``A(S)`` towards the item table ``E`` of a *trained* backbone
  of the same data (the paper aligns to a trained SASRec's table).  ``E`` comes from the checkpoint
  given as ``pretrained_path`` (with ``benchmarks/run_table.py --pretrain_from_first``: the first
  row's checkpoint of the same seed); only its ``item_embedding.weight`` is read, the model itself
  trains from scratch.  Per batch, over the distinct target items ``I`` of the batch::

      loss = rec_loss + align_weight * align(A(S_I), E_I)

  ``align_loss: soft`` (default, the form of the paper's public code): logits ``A E^T / tau``
  against the soft targets ``softmax(tau * (A A^T + E E^T) / 2)``, cross-entropy in both
  directions, averaged; ``infonce``: symmetric InfoNCE of the cosine similarities over ``tau``
  (identity targets).  ``align_weight: 0`` trains the adapter by the recommendation loss alone
  (no checkpoint needed: the "w/o alignment" ablation).

The paper's code aligns over every non-padding target position (an item repeated in the batch is
then its own negative); here each distinct item counts once.  Paper values (its public Beauty
script): ``align_weight`` 0.01 (its ``alpha``, named apart from BASRec's Beta parameter), ``tau`` 2.
No valid or test interaction enters: the semantic table is built from item text, the alignment
target from a checkpoint trained on the training split, and only training targets are aligned.
"""
import torch
import torch.nn.functional as F

from recbole_sada.compat import load_checkpoint
from recbole_sada.data.dataset import semantic_features
from recbole_sada.errors import InputError
from recbole_sada.model.semantic_adapter import SemanticAdapterMixin

ALIGN_LOSSES = ("soft", "infonce")


def soft_alignment_loss(X, Y, tau):
    """Contrastive alignment of rows of ``X`` and ``Y`` (n, D), row ``i`` of one matched with row
    ``i`` of the other, against soft targets from the two views' own similarities.

    ``logits = X Y^T / tau``; ``targets = softmax(tau * (X X^T + Y Y^T) / 2)`` row-wise; the loss
    is the mean of the row cross-entropy of ``logits`` and of ``logits^T`` against ``targets``
    (resp. its transpose).  Not exactly symmetric in ``X`` and ``Y``: the row-wise softmax
    targets are transposed for the second direction."""
    logits = X @ Y.t() / tau
    targets = F.softmax(tau * (X @ X.t() + Y @ Y.t()) / 2, dim=-1)
    row = -(targets * F.log_softmax(logits, dim=-1)).sum(1)
    col = -(targets.t() * F.log_softmax(logits.t(), dim=-1)).sum(1)
    return ((row + col) / 2).mean()


def infonce_alignment_loss(X, Y, tau):
    """Symmetric InfoNCE of the cosine similarities of ``X`` and ``Y`` (n, D) over ``tau``: row
    ``i`` of one is the positive of row ``i`` of the other, every other row a negative."""
    logits = F.normalize(X, dim=1) @ F.normalize(Y, dim=1).t() / tau
    labels = torch.arange(X.size(0), device=X.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2


class LLMEmbRATMixin(SemanticAdapterMixin):
    """Adapted frozen semantic item table aligned to a trained backbone's (see module docstring)."""

    properties_name = "LLMEmbRAT"
    needs_causal = True
    causal_reason = "its adapted item table replaces the ID table, and the mask token of cloze training has no text; it is"
    # the trainer hands ``pretrained_path`` to :meth:`load_alignment_target` instead of loading it
    pretrained_is_alignment_target = True
    _abstract_plugin = True

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.align_weight = float(config["align_weight"])
        if not self.align_weight >= 0:
            raise InputError(f"align_weight must be >= 0, got {config['align_weight']} (--align_weight=0.01)")
        self.align_tau = float(config["align_tau"])
        if not self.align_tau > 0:
            raise InputError(f"align_tau must be > 0, got {config['align_tau']} (--align_tau=2)")
        self.align_loss = config["align_loss"]
        if self.align_loss not in ALIGN_LOSSES:
            raise InputError(f"align_loss must be one of {ALIGN_LOSSES}, got {self.align_loss!r} (--align_loss=soft)")
        if self.align_weight > 0 and not config["pretrained_path"]:
            raise InputError(
                f"{type(self).__name__} aligns its item table to a trained backbone's: give that backbone's "
                f"checkpoint, e.g. --pretrained_path=saved/SASRec-<date>.pth (train it first with "
                f"--model={self.backbone_name}; benchmarks/run_table.py --pretrain_from_first does both), "
                f"or --align_weight=0 for no alignment")
        feats = semantic_features(dataset)  # built before the dataset by prepare(); read from the dataset
        hidden = self.item_embedding.embedding_dim
        self.setup_semantic_adapter(feats, hidden, freeze=True)
        self.item_embedding.weight.requires_grad_(False)  # no ID table: the adapted semantic table replaces it
        # the trained backbone's item table (filled by load_alignment_target; not part of checkpoints)
        self.register_buffer("alignment_target", torch.zeros(self.n_items, hidden), persistent=False)
        self.has_alignment_target = False

    # ------------------------------------------------------------------ alignment target
    def load_alignment_target(self, path):
        """Read the item table of the trained backbone checkpoint ``path`` (same data, same width)."""
        try:
            checkpoint = load_checkpoint(path, map_location="cpu")
        except Exception as exc:  # not a torch file
            raise InputError(f"pretrained_path {path} is not a checkpoint ({type(exc).__name__}); give a trained "
                             f"backbone's .pth from saved/") from None
        state = checkpoint.get("state_dict", {}) if isinstance(checkpoint, dict) else {}
        table = state.get("item_embedding.weight")
        if table is None:
            raise InputError(f"pretrained_path {path} has no item_embedding.weight: give a trained backbone's checkpoint")
        saved = (checkpoint.get("other_parameter") or {}).get("dataset_fingerprint")
        if saved is not None and saved != self.dataset_fingerprint:
            raise InputError(f"pretrained_path {path} was trained on other data (its item id map differs)")
        table = table[: self.n_items]
        if tuple(table.shape) != tuple(self.alignment_target.shape):
            raise InputError(
                f"pretrained_path {path}: its item table is {list(table.shape)}, this model's {list(self.alignment_target.shape)}; "
                f"train the backbone with the same embedding width on the same data")
        with torch.no_grad():
            self.alignment_target.copy_(table.to(self.alignment_target.device))
        self.has_alignment_target = True

    # ------------------------------------------------------------------ item table
    def embed_items(self, item_seq):
        return self.semantic_vectors(item_seq)

    def output_item_embedding(self):
        """(n_items, D) ``A(S)``; at evaluation built once and reused until training resumes."""
        return self.eval_cached(self.adapted_table)

    def item_vectors(self, ids):
        return self.semantic_vectors(ids)

    # ------------------------------------------------------------------ training
    def alignment_loss(self, items):
        """The alignment term over the distinct items ``items`` (1-D, no padding)."""
        if not self.has_alignment_target:
            raise InputError(f"{type(self).__name__}: no alignment target loaded (pretrained_path)")
        X, Y = self.semantic_vectors(items), self.alignment_target[items]
        fn = soft_alignment_loss if self.align_loss == "soft" else infonce_alignment_loss
        return fn(X, Y, self.align_tau)

    def calculate_loss(self, interaction):
        losses = {"loss_rec": super().calculate_loss(interaction)}  # the backbone's loss on the adapted table
        if self.align_weight > 0:
            _, _, targets, mask = self.training_batch(interaction)
            losses["loss_align"] = self.align_weight * self.alignment_loss(torch.unique(targets[mask]))
        return losses
