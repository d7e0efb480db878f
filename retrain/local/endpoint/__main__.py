"""`python -m retrain.local.endpoint`: the detached router process (see `detached`)."""

import sys

from retrain.local.endpoint.detached import main

sys.exit(main())
