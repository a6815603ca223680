import sys

from skin_model.cli import main

sys.exit(main())
