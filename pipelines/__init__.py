"""Runnable jobs built on beam_infer, following Beam's example contract:
``run(argv=None, save_main_session=True, test_pipeline=None) -> PipelineResult``.

This package lives in the checkout and is not installed by ``pip install beam-infer``
(which installs only ``beam_infer``): run the jobs from the checkout's root with
``python -m pipelines.<job>``; their code reaches remote workers pickled by value (see
``pipelines/jobs.py`` and docs/packaging.md).

Two kinds of module: *jobs*, which have a ``python -m pipelines.<job>`` entry point
(``basic``, ``batch_scoring``, ``branching``, ``cascade``, ``dead_letters``, ``emulators``,
``keyed``, ``postprocess``, ``streaming``), and the shared job helpers they are built from
(``jobs``, ``models``, ``question_rows``, ``formats``, ``tables``, ``columns``, ``services``,
the batch-scoring steps, ...). A job imports only ``beam_infer`` and helpers, never another
job, and ``beam_infer`` never imports this package; ``tests/test_layout.py`` checks both.

Importing it imports ``beam_infer``, and TensorFlow and Beam with it, without
TensorFlow's C++ start-up lines (see ``beam_infer_cli.quiet_tensorflow_import``) unless
``--verbose`` is on the command line. That is the jobs' choice; importing ``beam_infer``
alone changes no logging.
"""

from beam_infer_cli import quiet_tensorflow_import as _quiet_tensorflow_import

_quiet_tensorflow_import()
