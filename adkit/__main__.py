"""``python -m adkit`` = the ``adkit`` command (:mod:`adkit.cli`)."""

import sys

from .cli import main

sys.exit(main())
