"""The first ``import beam_infer`` of a process: its dependencies without the collector's passes.

Importing TensorFlow and Beam creates about 800,000 tracked Python objects (modules,
functions, classes, protobuf descriptors) that live until the process ends, and almost
no garbage. The cyclic garbage collector cannot know that: while they are imported it
runs full collections over the growing heap, afterwards every full collection walks them
again, and when the process ends the interpreter's last collections walk them once more.
On the project's 2-core machine that was 1.9 s of the 7.6 s of a first ``import
beam_infer``, and 1.9 to 2.3 s between the end of a pipeline and the end of its process
(``benchmarks/startup.py``; medians of fresh processes).

So when importing beam_infer is what imports TensorFlow, ``dependencies_imported`` runs
the import with the collector paused and then moves every object alive to the
collector's permanent generation (``gc.freeze()``), where collections skip them; the
collector is back on (if it was on) for every object created after. Pausing alone would
not do: the next collections would walk the same objects, once per generation. What is
frozen is what the process holds once the import ends: beam_infer, TensorFlow, Beam,
what was imported before them, and the import's own garbage (a few thousand objects,
under 1 MB). A process that imported TensorFlow before beam_infer has paid for it
already: nothing is changed there. ``gc.unfreeze()`` undoes the freeze.
"""

from __future__ import annotations

import contextlib
import gc
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def dependencies_imported() -> Iterator[None]:
    """Pauses the collector for the ``with`` block and freezes what is alive after it.

    Only when TensorFlow is not imported yet; if the block raises, the collector is
    restored and nothing is frozen.
    """
    if "tensorflow" in sys.modules:
        yield
        return
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
        gc.freeze()
    finally:
        if collecting:
            gc.enable()
