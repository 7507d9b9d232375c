"""``python -m orderflow_plugin`` is the ``orderflow`` command."""

import sys

from .cli import main

sys.exit(main())
