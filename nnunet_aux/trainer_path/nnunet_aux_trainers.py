"""Entry point for nnU-Net's trainer search (``nnUNet_extTrainer``): the trainers live in the package."""

from nnunet_aux.training.trainers import *  # noqa: F401,F403
from nnunet_aux.training.trainers import __all__  # noqa: F401
