"""A fix for Beam's local FnApiRunner: metrics that stay readable and flat in long runs.

Beam's FnApiRunner (``--runner=FnApiRunner``, the DirectRunner's batch engine, and the
engine behind the local portable job service) folds each bundle's metrics into the
stage's and the pipeline's totals in ``FnApiRunner.run_stages``
(``apache_beam/runners/portability/fn_api_runner/fn_runner.py``)::

    monitoring_infos_by_stage[stage] = consolidate_monitoring_infos(
        itertools.chain(bundle_results.process_bundle.monitoring_infos,
                        monitoring_infos_by_stage[stage]))

``consolidate`` (``apache_beam/metrics/monitoring_infos.py``) is a generator, so nothing
is folded until the metrics are read: after n bundles the totals are n nested
generators, each holding its bundle's metrics. A local stream runs hundreds of bundles a
second; after about 1,000 of them ``result.metrics()`` raises ``RecursionError``, and
memory grows with every bundle until then.

``patch_local_runner_metrics`` makes the runner fold eagerly: the same values, one flat
list per stage. It changes only the name ``fn_runner.consolidate_monitoring_infos``, and
only on the Beam versions known to have the lazy fold (checked by version and by the
function being a generator function); elsewhere it does nothing. ``RunInference`` and
its variants apply it when they are added to a pipeline; call it yourself in a process
that runs pipelines without them, such as a local job service.
"""

from __future__ import annotations

import inspect
import threading

import apache_beam as beam
from apache_beam.metrics import monitoring_infos
from apache_beam.runners.portability.fn_api_runner import fn_runner

# Beam releases this applies to, [first, last) as (major, minor): checked on 2.77, the
# release requirements.txt pins; a release past it is left alone until it is checked
# (tests/test_local_runner_metrics.py reproduces the bug on the installed Beam).
AFFECTED_BEAM_VERSIONS = ((2, 0), (2, 78))

_LOCK = threading.Lock()
_lazy_consolidate = monitoring_infos.consolidate


def _eager_consolidate(metrics, key=monitoring_infos.to_key):
    """``monitoring_infos.consolidate``, folded now: a list, not a generator."""
    return list(_lazy_consolidate(metrics, key))


def needs_patch(version: str = beam.__version__) -> bool:
    """Whether this Beam version's FnApiRunner has the lazy metrics fold."""
    major, minor = (int(part) for part in version.split(".")[:2])
    first, last = AFFECTED_BEAM_VERSIONS
    return first <= (major, minor) < last and \
        inspect.isgeneratorfunction(_lazy_consolidate)


def patch_local_runner_metrics() -> bool:
    """Makes the local FnApiRunner fold metrics eagerly (see the module docstring).

    Safe to call any number of times, from any thread.

    Returns:
        True if the runner folds eagerly now (patched by this call or an earlier one);
        False on a Beam version that does not need it (nothing changed).

    Example:
        >>> import beam_infer as bi
        >>> bi.patch_local_runner_metrics()  # before running a long local stream
        True
    """
    with _LOCK:
        if fn_runner.consolidate_monitoring_infos is _eager_consolidate:
            return True
        if not needs_patch() or fn_runner.consolidate_monitoring_infos is not _lazy_consolidate:
            return False
        fn_runner.consolidate_monitoring_infos = _eager_consolidate
        return True
