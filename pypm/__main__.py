"""`python -m pypm` is `pypm`."""

import sys

from .cli import main

sys.exit(main())
