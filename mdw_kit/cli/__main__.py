"""``python -m mdw_kit.cli``: the ``mdw`` command."""
import sys

from mdw_kit.cli import main

sys.exit(main())
