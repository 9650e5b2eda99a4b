"""``python -m beam_infer``: the ``beam-infer`` command without the console script."""

from __future__ import annotations

import sys

from beam_infer._cli import main

sys.exit(main())
