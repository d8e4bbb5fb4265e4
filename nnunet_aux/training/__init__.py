"""nnU-Net trainers with auxiliary tasks. Only this subpackage knows nnU-Net's trainer internals.

The trainers are found by nnU-Net through its ``nnUNet_extTrainer`` search path::

    export nnUNet_extTrainer=$(nnunet_aux trainer-path)

``nnunet_aux trainers`` lists them (:mod:`.registry`); a training's length is chosen by the
trainer's name (:mod:`.variants`), with one override for the demo and benchmarks (:mod:`.schedule`).
"""

import os


def trainer_path() -> str:
    """The folder to put in ``nnUNet_extTrainer``.

    It holds a single module that re-exports the trainers of :mod:`nnunet_aux.training.trainers`,
    so nnU-Net's search imports nothing else of the package.
    """
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "trainer_path")
