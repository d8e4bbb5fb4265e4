"""Convert 3D-IRCADb-01 (DICOM series per patient) into a scale-decomposed nnU-Net dataset.

Same as `nnunet_aux convert ircadb`; `-h` lists every option. Example::

    python dataset_conversion/ircadb.py -i /data/3Dircadb1 -d 509 --crop-liver --margin-mm 10
"""

import sys

from nnunet_aux.cli import main

if __name__ == "__main__":
    sys.exit(main(["convert", "ircadb", *sys.argv[1:]]))
