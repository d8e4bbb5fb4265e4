"""nnunet_aux: auxiliary-task training for nnU-Net v2.

The pure parts (``scales``, ``synthetic``, ``losses``, ``heads``, ``evaluation``) are
usable without nnU-Net's environment variables or a dataset; only ``training`` knows
nnU-Net's trainer internals.
"""

__version__ = "0.2.0"
