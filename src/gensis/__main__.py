"""``python -m gensis ...``: the ``gensis`` command, for an environment whose scripts folder is not on PATH."""

import sys

from gensis.cli.main import main

sys.exit(main())
