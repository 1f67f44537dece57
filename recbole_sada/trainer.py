"""PluginTrainer: RecBole's ``Trainer`` with two-stage training and named, reweighted losses.

Only three small overrides of RecBole's loop (no copy of ``Trainer.fit``):

* ``fit``: stage 1 (``stage1_epochs`` epochs of the plain backbone loss, no validation, so early
  stopping only counts in stage 2) is RecBole's own ``fit`` without validation data; stage 2 is
  RecBole's ``fit`` again, starting at the next epoch.  ``pretrained_path`` loads a stage-1
  checkpoint and starts directly in stage 2 (a model with ``pretrained_is_alignment_target``,
  LLMEmb's RAT, reads only the checkpoint's item table as its alignment target and trains from
  scratch).  ``epochs`` counts both stages.  ``valid_start_epoch``
  (the official BASRec code's ``start_valid``): no validation before that epoch (the same
  pattern: RecBole's ``fit`` without validation data, then with it).  ``eval_step`` is RecBole's:
  validate every N epochs; ``stopping_step`` counts *validations* without improvement, i.e.
  ``stopping_step * eval_step`` epochs.
* ``_train_epoch``: the model sees the stage (``model.train_stage``); a model's ``calculate_loss``
  may return a dict of named losses (a value may be a ``(per_sample_loss, weight)`` pair, reduced
  as ``mean(loss * weight)``); their sum is optimised and each is logged per epoch (console and
  tensorboard, as the batch mean).
* adversarial steps: a model with ``adversary_parameters()`` and ``adversary_loss(interaction)``
  (IDEA's environment generators) has those parameters in a second optimiser (``adversary_lr``,
  default ``learning_rate``; no weight decay) and out of the main one; per batch, the adversary
  takes one step on ``adversary_loss`` (differentiated with respect to its own parameters only),
  then the recommender takes RecBole's usual step.  The adversary's optimiser state is not in
  RecBole's checkpoints (the parameters are); ``resume_state`` below keeps it.
* ``resume_state`` (a file path, off by default): before each epoch the whole training state is
  written there (parameters, optimiser(s), epoch, early-stopping counters, the best checkpoint's
  path, epoch times, and the random states of python, numpy, torch and the training loader); a
  run started again with the same file continues from the last epoch that finished, drawing the
  same random numbers, so a killed run resumed gives the metrics of the uninterrupted one.  The
  file is removed when ``fit`` returns.  (RecBole's own ``resume_checkpoint`` restores parameters,
  optimiser and epoch only, from the best epoch.)
* checkpoint reloads go through :func:`recbole_sada.compat.trusted_checkpoint_load` (RecBole 1.2.1
  on torch >= 2.6).
"""
import os
import random
import time
from collections.abc import Mapping

import numpy as np
import torch
from recbole.trainer import Trainer
from recbole.utils import set_color

from recbole_sada.compat import load_checkpoint, trusted_checkpoint_load
from recbole_sada.errors import InputError
from recbole_sada.fileio import atomic_path


def reduce_loss(value):
    """A loss entry: a tensor (reduced by mean) or a ``(per_sample_loss, weight)`` pair."""
    if isinstance(value, (tuple, list)):
        loss, weight = value
        return (loss * weight).mean()
    return value.mean() if value.dim() > 0 else value


class PluginTrainer(Trainer):
    """Trainer for every sequential model of the plugin (see module docstring)."""

    def __init__(self, config, model):
        super().__init__(config, model)
        # RecBole names checkpoints <model>-<time to the second>.pth: runs of one model started in
        # the same second (parallel seeds, tuning trials) would overwrite each other's best model.
        root, ext = os.path.splitext(self.saved_model_file)
        self.saved_model_file = f"{root}-{os.getpid()}-{id(self):x}{ext}"
        two_stage = config["two_stage"] is not False
        self.stage1_epochs = int(config["stage1_epochs"] or 0) if two_stage else 0
        self.pretrained_path = config["pretrained_path"]
        self.stage = 2 if (self.pretrained_path or self.stage1_epochs == 0) else 1
        start = config["valid_start_epoch"] or 0
        if isinstance(start, bool) or not isinstance(start, int) or start < 0:
            raise InputError(f"valid_start_epoch must be an integer >= 0, got {start!r} (--valid_start_epoch=0)")
        self.loss_names = None
        self.adversary_optimizer = None  # built on the first adversary step (IDEA)
        self.epoch_times = []
        self.stage1_model_file = None
        self.resume_state = config["resume_state"] or None
        self.resumed_from = None  # epoch a resumed run continued at
        self.elapsed_before = 0.0  # training seconds of the earlier process(es) of a resumed run
        self._fit_started = None

    # ------------------------------------------------------------------ adversary
    def _adversary_params(self):
        get = getattr(self.model, "adversary_parameters", None)
        return list(get()) if callable(get) else []

    def _build_optimizer(self, **kwargs):
        """RecBole's optimiser, over every parameter except an adversary's (see module docstring)."""
        adversary = self._adversary_params()
        if adversary and "params" not in kwargs:
            ids = {id(p) for p in adversary}
            kwargs["params"] = [p for p in self.model.parameters() if id(p) not in ids]
        return super()._build_optimizer(**kwargs)

    def _build_adversary_optimizer(self):
        lr = self.config["adversary_lr"]
        self.adversary_optimizer = super()._build_optimizer(
            params=self._adversary_params(), learning_rate=self.learning_rate if lr is None else float(lr),
            weight_decay=0.0)

    def _adversary_step(self, interaction):
        """One optimiser step of the adversary's parameters on ``model.adversary_loss``."""
        params = self._adversary_params()
        loss = self.model.adversary_loss(interaction)
        if loss is None:
            return
        if getattr(self, "adversary_optimizer", None) is None:
            self._build_adversary_optimizer()
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        for p, g in zip(params, grads):
            p.grad = g
        self.adversary_optimizer.step()
        for p in params:
            p.grad = None

    # ------------------------------------------------------------------ stages
    def _set_stage(self, stage):
        self.stage = stage
        self.model.train_stage = stage

    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False, callback_fn=None):
        self._fit_started = time.time()
        alignment = self.pretrained_path and getattr(self.model, "pretrained_is_alignment_target", False)
        if alignment:
            # LLMEmb's RAT: the checkpoint's item table is what the model aligns to; it trains from scratch
            self.model.load_alignment_target(self.pretrained_path)
            self.logger.info(f"Alignment target (item table) read from: {self.pretrained_path}")
        resumed = self._read_resume_state(train_data)
        if self.pretrained_path and not alignment and not resumed:
            self._load_weights(self.pretrained_path, "Loaded stage-1 checkpoint")
        if not self.pretrained_path and self.stage1_epochs > 0 and self.start_epoch < self.stage1_epochs:
            self._set_stage(1)
            total_epochs = self.epochs
            self.epochs = self.stage1_epochs
            if verbose:
                self.logger.info(set_color(f"Stage 1: {self.stage1_epochs} epochs of the plain loss", "green"))
            super().fit(train_data, None, verbose=verbose, saved=False, show_progress=show_progress)
            self.epochs = total_epochs
            self.start_epoch = self.stage1_epochs
            if saved:
                self.stage1_model_file = self.saved_model_file.replace(".pth", "-stage1.pth")
                self._save_checkpoint(self.stage1_epochs - 1, verbose=verbose, saved_model_file=self.stage1_model_file)
        self._set_stage(2)
        if verbose and (self.stage1_epochs or self.pretrained_path):
            self.logger.info(set_color("Stage 2: augmented loss, validation and early stopping", "green"))
        valid_start = int(self.config["valid_start_epoch"] or 0)
        if valid_data is not None and valid_start > self.start_epoch:
            total_epochs = self.epochs
            self.epochs = min(valid_start, total_epochs)
            if verbose:
                self.logger.info(set_color(f"No validation before epoch {self.epochs}", "green"))
            super().fit(train_data, None, verbose=verbose, saved=False, show_progress=show_progress)
            self.epochs = total_epochs
            self.start_epoch = max(self.start_epoch, valid_start)
        result = super().fit(
            train_data, valid_data, verbose=verbose, saved=saved, show_progress=show_progress, callback_fn=callback_fn
        )
        if self.resume_state and os.path.isfile(self.resume_state):
            os.remove(self.resume_state)
        return result

    # ------------------------------------------------------------------ resume
    def training_seconds(self):
        """Seconds of training so far, the earlier processes of a resumed run included."""
        return self.elapsed_before + (time.time() - self._fit_started if self._fit_started else 0.0)

    def _write_resume_state(self, train_data, epoch_idx):
        state = {
            "version": 1, "next_epoch": epoch_idx, "stage": self.stage,
            "state_dict": self.model.state_dict(), "other_parameter": self.model.other_parameter(),
            "optimizer": self.optimizer.state_dict(),
            "adversary_optimizer": self.adversary_optimizer.state_dict() if self.adversary_optimizer else None,
            "cur_step": self.cur_step, "best_valid_score": self.best_valid_score,
            "best_valid_result": self.best_valid_result, "saved_model_file": self.saved_model_file,
            "stage1_model_file": self.stage1_model_file, "epoch_times": list(self.epoch_times),
            "train_loss_dict": dict(self.train_loss_dict), "elapsed": self.training_seconds(),
            "rng": {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                    "loader": train_data.generator.get_state() if getattr(train_data, "generator", None) else None},
        }
        with atomic_path(self.resume_state, suffix=".pth") as tmp:
            torch.save(state, tmp)

    def _read_resume_state(self, train_data):
        """Load ``resume_state`` if the file exists; True when the run continues from it."""
        if not self.resume_state or not os.path.isfile(self.resume_state):
            return False
        fix = "remove it to start the run from the beginning"
        try:
            state = load_checkpoint(self.resume_state, map_location=self.device)
        except Exception as exc:  # not a torch file, or a torn one
            raise InputError(f"resume_state {self.resume_state} cannot be read ({type(exc).__name__}); {fix}") from None
        if not isinstance(state, dict) or state.get("version") != 1:
            raise InputError(f"resume_state {self.resume_state} is not a training state of this plugin; {fix}")
        try:
            self.model.load_other_parameter(state["other_parameter"])
            self.model.load_state_dict(state["state_dict"])
            self.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, InputError) as exc:  # another model or other settings
            first = str(exc).strip().splitlines()[0][:200]
            raise InputError(f"resume_state {self.resume_state} is the state of another model or other settings "
                             f"({first}); {fix}") from None
        if state["adversary_optimizer"] is not None:
            self._build_adversary_optimizer()
            self.adversary_optimizer.load_state_dict(state["adversary_optimizer"])
        self.start_epoch = self.resumed_from = int(state["next_epoch"])
        self._set_stage(state["stage"])
        self.cur_step, self.best_valid_score = state["cur_step"], state["best_valid_score"]
        self.best_valid_result = state["best_valid_result"]
        if state["saved_model_file"] and os.path.isfile(state["saved_model_file"]):
            self.saved_model_file = state["saved_model_file"]  # the best epoch so far was saved there
        self.stage1_model_file = state["stage1_model_file"]
        self.epoch_times = list(state["epoch_times"])
        self.train_loss_dict.update(state["train_loss_dict"])
        self.elapsed_before = float(state["elapsed"])
        rng = state["rng"]
        random.setstate(rng["python"])
        np.random.set_state(rng["numpy"])
        torch.set_rng_state(rng["torch"])
        if rng["cuda"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        if rng["loader"] is not None and getattr(train_data, "generator", None) is not None:
            train_data.generator.set_state(rng["loader"])
        self.logger.info(set_color("Resumed", "green") + f" from {self.resume_state} at epoch {self.start_epoch}")
        return True

    # ------------------------------------------------------------------ losses
    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        self.model.train_stage = self.stage
        base = loss_func or self.model.calculate_loss
        names, n_batches = [], [0]
        adversarial = bool(self._adversary_params()) and loss_func is None

        def named_loss(interaction):
            if adversarial:
                self._adversary_step(interaction)
            out = base(interaction)
            n_batches[0] += 1
            if not isinstance(out, Mapping):
                return out
            if not names:
                names.extend(out.keys())
            elif list(out.keys()) != names:
                raise ValueError(f"loss components changed within an epoch: {names} -> {list(out)}")
            return tuple(reduce_loss(v) for v in out.values())

        if self.resume_state and epoch_idx > 0 and epoch_idx != self.resumed_from:
            self._write_resume_state(train_data, epoch_idx)  # every epoch before this one has finished
        start = time.time()
        hook = getattr(self.model, "on_epoch_start", None)
        if callable(hook):  # per-epoch state of a model (LLM-ESR's teacher cache), timed with the epoch
            hook(epoch_idx)
        total = super()._train_epoch(train_data, epoch_idx, loss_func=named_loss, show_progress=show_progress)
        self.epoch_times.append(time.time() - start)
        self._log_model_stats(epoch_idx)
        self.loss_names = list(names) if names else None
        n = max(n_batches[0], 1)
        if isinstance(total, tuple):
            return tuple(t / n for t in total)
        return total / n if total is not None else total

    def _log_model_stats(self, epoch_idx):
        """Log what a model counted during the epoch (``pop_epoch_stats``, e.g. SADA's pairing)."""
        pop = getattr(self.model, "pop_epoch_stats", None)
        stats = pop() if callable(pop) else None
        if stats:
            self.epoch_stats = stats
            self.logger.info(
                set_color(f"epoch {epoch_idx} stats", "green") + ": "
                + ", ".join(f"{k}: {v:.4g}" if isinstance(v, float) else f"{k}: {v}" for k, v in stats.items())
            )
            for k, v in stats.items():
                self.tensorboard.add_scalar(f"Stats/{k}", v, epoch_idx)

    def _loss_items(self, losses):
        if isinstance(losses, tuple):
            names = self.loss_names or [f"loss{i + 1}" for i in range(len(losses))]
            return list(zip(names, losses))
        return [("loss", losses)]

    def _generate_train_loss_output(self, epoch_idx, s_time, e_time, losses):
        des = self.config["loss_decimal_place"] or 4
        parts = [f"{set_color(name, 'blue')}: {value:.{des}f}" for name, value in self._loss_items(losses)]
        return (
            set_color(f"epoch {epoch_idx} training", "green")
            + f" [stage {self.stage}, {set_color('time', 'blue')}: {e_time - s_time:.2f}s, "
            + ", ".join(parts)
            + "]"
        )

    def _add_train_loss_to_tensorboard(self, epoch_idx, losses, tag="Loss/Train"):
        items = self._loss_items(losses)
        for name, value in items:
            self.tensorboard.add_scalar(f"{tag}/{name}", value, epoch_idx)
        if len(items) > 1:
            self.tensorboard.add_scalar(tag, sum(v for _, v in items), epoch_idx)

    # ------------------------------------------------------------------ checkpoints
    def _load_weights(self, path, message):
        try:
            checkpoint = load_checkpoint(path, map_location=self.device)
        except Exception as exc:  # UnpicklingError, EOFError, zip errors: not a torch file
            raise InputError(
                f"pretrained_path {path} is not a checkpoint ({type(exc).__name__}); give the .pth a "
                f"training run saved in saved/") from None
        if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
            raise InputError(
                f"pretrained_path {path} is not a RecBole checkpoint (no state_dict); give the .pth a "
                f"training run saved in saved/")
        own = self.model.state_dict()
        shapes = [(k, tuple(v.shape), tuple(own[k].shape)) for k, v in checkpoint["state_dict"].items()
                  if k in own and hasattr(v, "shape") and tuple(v.shape) != tuple(own[k].shape)]
        if shapes:
            k, theirs, ours = shapes[0]
            raise InputError(
                f"pretrained_path {path} does not fit {type(self.model).__name__}: {k} is {list(theirs)} in the "
                f"checkpoint and {list(ours)} here ({len(shapes)} such parameters); train with the checkpoint's "
                f"settings (hidden_size, inner_size, n_layers, MAX_ITEM_LIST_LENGTH ...) and dataset")
        # A backbone checkpoint (e.g. SASRec's) may start BASRec/SADA/LLMSeR on that backbone:
        # parameters the augmenting model adds (SADA's semantic projection and gate) start fresh;
        # a parameter the model does not have is an error (wrong checkpoint).
        try:
            self.model.load_other_parameter(checkpoint.get("other_parameter"))
        except InputError as exc:
            raise InputError(f"pretrained_path {path}: {exc}") from None
        missing, unexpected = self.model.load_state_dict(checkpoint["state_dict"], strict=False)
        if unexpected:
            raise InputError(
                f"pretrained_path {path} does not fit {type(self.model).__name__}: unexpected parameters "
                f"{sorted(unexpected)[:5]} (use a checkpoint of this model or of its backbone)"
            )
        if missing:
            self.logger.info(f"Parameters not in {path}, initialised fresh: {sorted(missing)}")
        self.logger.info(f"{message}: {path}")

    def _save_checkpoint(self, epoch, verbose=True, **kwargs):
        """RecBole's checkpoint, written to a temporary file and renamed: an interrupt (Ctrl-C)
        never leaves a half-written ``.pth`` where the last good one was."""
        target = kwargs.pop("saved_model_file", self.saved_model_file)
        with atomic_path(target, suffix=".pth") as tmp:
            super()._save_checkpoint(epoch, verbose=False, saved_model_file=str(tmp), **kwargs)
        if verbose and os.path.isfile(target):
            self.logger.info(set_color("Saving current", "blue") + f": {target}")

    def resume_checkpoint(self, resume_file):
        with trusted_checkpoint_load():
            super().resume_checkpoint(resume_file)

    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        if load_best_model and eval_data and not os.path.isfile(model_file or self.saved_model_file):
            raise FileNotFoundError(
                f"no checkpoint to test: {model_file or self.saved_model_file} (was the model saved?)"
            )
        with trusted_checkpoint_load():
            return super().evaluate(
                eval_data, load_best_model=load_best_model, model_file=model_file, show_progress=show_progress
            )


#: the earlier name (the trainer serves every plugin model, not SADA only)
SADATrainer = PluginTrainer
