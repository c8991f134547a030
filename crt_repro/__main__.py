"""``python -m crt_repro``: the ``crt-repro`` command (torchrun starts it this way)."""
import sys

from crt_repro.cli import main

sys.exit(main())
