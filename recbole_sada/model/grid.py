"""The method x backbone grid, declared once: every ``<Method><Backbone>`` model is built here.

A backbone declares what it is (``causal``: position ``t`` sees items ``<= t`` only, so it is
trained on next-item targets; BERT4Rec is bidirectional, trained by cloze masking); a method
declares what it needs (``needs_causal``).  The registry (:func:`recbole_sada.utils.get_model`)
finds the classes below like any other plugin model, and names the reason for a pair that is not
built.  Adding a backbone: one file in ``backbones/`` and one line in :data:`BACKBONES`; adding a
method: its mixin and one line in :data:`METHODS`.

Each class is ``type(name, (MethodMixin, Backbone), ...)`` with ``backbone_name`` set, so its yaml
layers are ``<Backbone>.yaml``, ``<Method>.yaml``, ``<Method><Backbone>.yaml``.
"""
from recbole_sada.model.backbones.bert4rec import BERT4Rec
from recbole_sada.model.backbones.fmlprec import FMLPRec
from recbole_sada.model.backbones.gru4rec import GRU4Rec
from recbole_sada.model.backbones.nextitnet import NextItNet
from recbole_sada.model.backbones.sasrec import SASRec
from recbole_sada.model.basrec import BASRecMixin
from recbole_sada.model.idea import IDEAMixin
from recbole_sada.model.llmemb import LLMEmbRATMixin
from recbole_sada.model.llmesr import LLMESRMixin
from recbole_sada.model.llmser import LLMSeRMixin
from recbole_sada.model.sada import SADAMixin

BACKBONES = {"SASRec": SASRec, "GRU4Rec": GRU4Rec, "FMLPRec": FMLPRec, "NextItNet": NextItNet, "BERT4Rec": BERT4Rec}
METHODS = {"BASRec": BASRecMixin, "SADA": SADAMixin, "LLMSeR": LLMSeRMixin, "LLMESR": LLMESRMixin, "IDEA": IDEAMixin,
           "LLMEmbRAT": LLMEmbRATMixin}

#: ``{model name: why it is not built}`` for the pairs the declarations rule out
UNSUPPORTED = {}


def unsupported_reason(method, backbone):
    """Why ``<method><backbone>`` cannot be trained correctly, or None."""
    mixin, klass = METHODS[method], BACKBONES[backbone]
    if getattr(mixin, "needs_causal", False) and not getattr(klass, "causal", True):
        why = getattr(mixin, "causal_reason", "its augmented views and cross-sequence mixes are")
        return (f"{method} needs a causal (left-to-right) backbone: {why} "
                f"trained on the next item at every position, and {backbone} is bidirectional (cloze training); "
                f"use {method}SASRec, {method}GRU4Rec, {method}FMLPRec or {method}NextItNet")
    return None


def _build():
    built = {}
    for method, mixin in METHODS.items():
        for backbone, klass in BACKBONES.items():
            name = f"{method}{backbone}"
            reason = unsupported_reason(method, backbone)
            if reason:
                UNSUPPORTED[name] = reason
                continue
            built[name] = type(name, (mixin, klass), {
                "__module__": __name__, "__qualname__": name, "__doc__": f"{method} over {backbone}.",
                "backbone_name": backbone,
            })
    return built


globals().update(_build())
