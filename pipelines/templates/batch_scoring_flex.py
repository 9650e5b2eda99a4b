"""Entry point of the batch scoring Dataflow Flex Template (``FLEX_TEMPLATE_PYTHON_PY_FILE``).

The Flex Template launcher runs this file with the template's parameters as flags, submits
the job and does not wait for it. So the job is run with ``--commit=in_pipeline``: its
last step judges the run, commits the outputs and writes the manifest on a worker, and a
run that fails its checks fails the Dataflow job. See docs/batch_scoring.md.
"""

from __future__ import annotations

import logging
import sys

from pipelines import batch_scoring


def main(argv: list[str] | None = None) -> int:
    """``pipelines.batch_scoring.main`` with the commit done by the pipeline."""
    return batch_scoring.main([*(sys.argv[1:] if argv is None else argv),
                               "--commit=in_pipeline"], prog="batch_scoring_flex")


if __name__ == "__main__":
    logging.getLogger().setLevel(logging.WARNING)
    sys.exit(main())
