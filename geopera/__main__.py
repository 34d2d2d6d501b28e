"""``python -m geopera``: the same as the ``geopera`` command (for machines without the script)."""

import sys

from geopera.cli.main import main

sys.exit(main())
