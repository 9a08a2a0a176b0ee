"""``python -m hfdistac.cli``: the ``hfdistac`` command."""

import sys

from .main import main

sys.exit(main())
