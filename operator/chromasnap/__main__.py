"""``python -m chromasnap``."""

import sys

from chromasnap.cli.main import main

sys.exit(main())
