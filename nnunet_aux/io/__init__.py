"""Files on disk: image reading, writing and checking, and safe writes of any file.

The layer below :mod:`nnunet_aux.conversion` and :mod:`nnunet_aux.evaluation` (it imports
neither):

- :mod:`~nnunet_aux.io.files`: file modes, atomic writes, outputs kept apart from inputs,
  the per-dataset-ID lock;
- :mod:`~nnunet_aux.io.images`: volumes read and written with SimpleITK (geometry kept,
  every file checked to be complete before it is read, every write read back);
- :mod:`~nnunet_aux.io.segmentations`: segmentations in every format nnU-Net writes
  (SimpleITK's formats and nnU-Net's own reader classes).
"""
