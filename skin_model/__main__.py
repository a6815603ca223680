"""Entry point: ``python -m skin_model``."""

import sys

from skin_model.cli import main

sys.exit(main())
