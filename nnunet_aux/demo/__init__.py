"""One-command end-to-end demo: ``nnunet_aux demo`` (:func:`~nnunet_aux.demo.pipeline.run_demo`).

Synthetic scale-decomposed vessel data, nnU-Net's own planning, training and prediction
for the binary baseline and ``nnUNetTrainerScaleContrastiveLite``, evaluation and a Markdown
report with pictures. Importing this package is cheap; nnU-Net and torch are imported
when the demo runs.
"""

from .cli import register, run

__all__ = ["register", "run"]
