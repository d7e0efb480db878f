"""`python -m retrain.cli` is the `retrain` command too (as `python -m retrain`)."""

import sys

from retrain.cli import main

sys.exit(main())
