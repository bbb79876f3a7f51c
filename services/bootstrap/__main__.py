"""`python -m services.bootstrap`: see services/bootstrap/bootstrap.py."""

import sys

from services.bootstrap.bootstrap import main

sys.exit(main())
