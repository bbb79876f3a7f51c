"""`python -m flows.batch`: see cli.py."""

import sys

from flows.batch.cli import main

sys.exit(main())
