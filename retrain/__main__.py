"""`python -m retrain` is the `retrain` command."""

import sys

from retrain.cli import main

sys.exit(main())
