"""``python -m bind`` runs the ``bindspace`` command."""

import sys

from bind.cli import main

sys.exit(main())
