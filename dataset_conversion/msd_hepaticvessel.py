"""Convert the Medical Segmentation Decathlon's Task08_HepaticVessel into a scale-decomposed nnU-Net dataset.

Same as `nnunet_aux convert msd-hepaticvessel`; `-h` lists every option. Example::

    python dataset_conversion/msd_hepaticvessel.py -i /data/Task08_HepaticVessel -d 508
"""

import sys

from nnunet_aux.cli import main

if __name__ == "__main__":
    sys.exit(main(["convert", "msd-hepaticvessel", *sys.argv[1:]]))
