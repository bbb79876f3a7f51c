"""`python -m flows.training`: see cli.py."""

import sys

from flows.training.cli import main

sys.exit(main())
