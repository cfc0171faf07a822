"""``python -m gensis ...``: the ``gensis`` command, for an environment whose scripts folder is not on PATH."""

import sys

try:
    from gensis.cli.main import entry
except KeyboardInterrupt:  # a Ctrl-C while Python imports gensis: the line (and status) of any other Ctrl-C
    print("gensis: interrupted", file=sys.stderr)
    sys.exit(130)

entry()
