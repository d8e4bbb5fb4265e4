"""Entry point for nnU-Net's trainer search (``nnUNet_extTrainer``): the demo trainers."""

from nnunet_aux.demo.trainers import nnUNetTrainer_demo, nnUNetTrainerScaleContrastiveLite_demo  # noqa: F401
