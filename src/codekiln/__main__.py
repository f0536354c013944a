"""`python -m codekiln ...` (what torchrun launches): the same entry point as the console script."""

import sys

from codekiln.cli import main

sys.exit(main())
