"""`python -m services.mlflow [mlflow server args...]`: see services/mlflow/__init__.py."""

from __future__ import annotations

import sys

from services.mlflow.launcher import main

if __name__ == "__main__":
    sys.exit(main())
