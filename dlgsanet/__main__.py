"""``python -m dlgsanet``: the command line (see ``dlgsanet.cli``)."""
import sys

from .cli import main

sys.exit(main())
