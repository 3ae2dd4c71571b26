"""``python -m chromasnap``."""

import sys

from chromasnap.cli import main

sys.exit(main())
