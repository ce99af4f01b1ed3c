"""``python -m pudnet`` (and ``torchrun -m pudnet train ...``): the ``pudnet`` command."""

import sys

from .cli import main

sys.exit(main())
