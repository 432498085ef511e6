"""``python -m torchpint``: the same as the ``torchpint`` command (used under torchrun)."""

import sys

from torchpint.cli import main

sys.exit(main())
