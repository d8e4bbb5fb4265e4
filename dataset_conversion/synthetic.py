"""Write a synthetic scale-decomposed dataset (vessel trees with known radii).

Same as `nnunet_aux synth`; `-h` lists every option. Example::

    python dataset_conversion/synthetic.py -d 900 -n 20 --n-test 5
    python dataset_conversion/synthetic.py -d 901 -n 20 --n-test 5 --preset clinical  # CT-calibrated, harder
"""

import sys

from nnunet_aux.cli import main

if __name__ == "__main__":
    sys.exit(main(["synth", *sys.argv[1:]]))
