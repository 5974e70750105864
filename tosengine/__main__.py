"""`python -m tosengine`: the CLI."""

import sys

from tosengine.cli import main

sys.exit(main())
