"""`python -m keras_kd` runs the `keras-kd` command."""

import sys

from keras_kd.cli import main

sys.exit(main())
