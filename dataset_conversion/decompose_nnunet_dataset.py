"""Decompose the vessel label of any nnU-Net raw dataset into scales (a new dataset).

Same as `nnunet_aux decompose`; `-h` lists every option. Example::

    python dataset_conversion/decompose_nnunet_dataset.py -d 8 -o 510 --vessel-label vessel
"""

import sys

from nnunet_aux.cli import main

if __name__ == "__main__":
    sys.exit(main(["decompose", *sys.argv[1:]]))
