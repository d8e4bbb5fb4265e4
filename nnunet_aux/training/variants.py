"""nnU-Net-style variants of every trainer: the one documented way to set a training's length.

As nnU-Net's own ``nnUNetTrainer_<X>epochs`` (nnunetv2/training/nnUNetTrainer/variants/
training_length), each trainer module ends with :func:`add_variants`, which defines, at import,

* ``<trainer>_<X>epochs`` for X in :data:`EPOCH_VARIANTS` (nnU-Net's lengths plus 2000, the
  paper's), and
* ``<trainer>_smoke``: :data:`SMOKE_SETTINGS`, one short epoch for tests and quick checks.

:data:`GENERATED` records them (``nnunet_aux trainers`` lists them). Benchmarks and the demo,
which need lengths no name gives, use the one override instead: :mod:`.schedule`.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, Optional, Type

import torch

#: nnU-Net's training lengths (nnunetv2/training/nnUNetTrainer/variants/training_length), plus the paper's 2000
EPOCH_VARIANTS = (5, 10, 20, 50, 100, 250, 500, 750, 2000)
#: What ``_smoke`` sets: one epoch of 5 training and 2 validation iterations.
SMOKE_SETTINGS = {"num_epochs": 1, "num_iterations_per_epoch": 5, "num_val_iterations_per_epoch": 2}
#: base trainer name -> {variant name: the attributes it sets}, in the order defined
GENERATED: Dict[str, Dict[str, Dict[str, Any]]] = {}


def make_variants(base: Type, module: str, epochs: Iterable[int] = EPOCH_VARIANTS,
                  smoke: Optional[Dict[str, Any]] = None) -> Dict[str, Type]:
    """Subclasses ``<name>_smoke`` and ``<name>_<X>epochs`` of ``base``.

    Parameters
    ----------
    base : type
        The trainer.
    module : str
        Module the classes are defined as if written in (so nnU-Net finds them by name and
        pickling works).
    epochs : iterable of int, optional
        The X of ``_<X>epochs``.
    smoke : dict, optional
        Updates :data:`SMOKE_SETTINGS` for this trainer's ``_smoke``.

    Returns
    -------
    variants : dict of str to type
        Name -> class; also recorded in :data:`GENERATED` with the attributes each sets.
    """
    out = {}

    def subclass(name: str, **attrs):
        def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                     device: torch.device = torch.device("cuda")):
            base.__init__(self, plans, configuration, fold, dataset_json, device)
            for k, v in attrs.items():
                setattr(self, k, v)

        cls = type(name, (base,), {"__init__": __init__, "__module__": module, "__qualname__": name,
                                   "__doc__": f"{base.__name__} with {attrs}."})
        out[name] = cls
        GENERATED.setdefault(base.__name__, {})[name] = dict(attrs)

    subclass(f"{base.__name__}_smoke", **{**SMOKE_SETTINGS, **(smoke or {})})
    for n in epochs:
        subclass(f"{base.__name__}_{n}epochs", num_epochs=n)
    return out


def add_variants(namespace: Dict[str, Any], *bases: Type, smoke: Optional[Dict[str, Any]] = None) -> None:
    """Define the variants of each of ``bases`` in the module whose ``globals()`` is ``namespace``
    and list them in its ``__all__`` (called at the end of each trainer module)."""
    for base in bases:
        for name, cls in make_variants(base, namespace["__name__"], smoke=smoke).items():
            namespace[name] = cls
            namespace["__all__"].append(name)
