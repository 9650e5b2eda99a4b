"""KServe's own ModelServer (tests/emulators/kserve_server.py) through real Beam pipelines.

* v1, the TF Serving-compatible REST API (``/v1/models/NAME:predict``), serving ``y = 5x``
  on serialized Examples: ``bi.EndpointSpec.from_url(".../v1/models/five",
  signatures_from=<the SavedModel it serves>)`` writes the PredictionLogs local scoring of
  that SavedModel writes, keyed and unkeyed; without ``signatures_from`` the pipeline
  fails when it is built, saying that KServe's v1 API has no metadata route.
* Faults over v1 and v2 (the Open Inference Protocol): 503 bursts are retried, 429s
  throttle the client, rows the server refuses (400) are dead-lettered with its reason,
  and the server's own counters show every other row scored exactly once.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import beam_infer as bi
from tests.support.remote_helpers import FAST_RETRY, TIMEOUT, canonical, examples, score

pytestmark = pytest.mark.emulators

VALUES = [float(v) for v in range(1, 25)]
BATCHING = bi.BatchConfig(min_batch_size=8, max_batch_size=8)


def v1_spec(kserve_server, **fields) -> bi.EndpointSpec:
    return bi.EndpointSpec.from_url(f"{kserve_server.url}/v1/models/five",
                                    signatures_from=kserve_server.paths["five"],
                                    timeout_secs=TIMEOUT, **fields)


def v2_spec(kserve_server, **fields) -> bi.EndpointSpec:
    return bi.EndpointSpec.from_url(f"{kserve_server.url}/v2/models/dense",
                                    timeout_secs=TIMEOUT, **fields)


def elements_for(kind: str, values) -> list:
    if kind == "v1":
        return examples(*values)
    return [np.array([v], np.float32) for v in values]


def spec_for(kserve_server, kind: str) -> bi.EndpointSpec:
    make = v1_spec if kind == "v1" else v2_spec
    return make(kserve_server, batching=BATCHING, max_request_rows=3, max_in_flight=2)


def x_of(kind: str, element) -> float:
    if kind == "v1":
        if isinstance(element, bytes):
            element = tf.train.Example.FromString(element)
        return float(element.features.feature["x"].float_list.value[0])
    return float(element[0])


def scored_exactly_once(kserve_server, values) -> bool:
    scored = kserve_server.control()["scored"]
    return {str(v): scored.get(str(v)) for v in values} == dict.fromkeys(map(str, values), 1)


# --- v1: the TF Serving-compatible REST API ----------------------------------------------

@pytest.mark.parametrize("keyed", [False, True], ids=["unkeyed", "keyed"])
def test_v1_examples_score_like_the_saved_model_it_serves(kserve_server, tmp_path, keyed):
    elements = examples(1.0, -2.5, 4.0, 1000.0)
    if keyed:
        elements = [(f"k{i}", e) for i, e in enumerate(elements)]
    remote, _ = score(v1_spec(kserve_server), elements, str(tmp_path / "remote"))
    here, _ = score(bi.ModelSpec(model_path=kserve_server.paths["five"]), elements,
                    str(tmp_path / "local"))
    assert len(remote) == len(elements)
    assert canonical(remote) == canonical(here)
    assert scored_exactly_once(kserve_server, [1.0, -2.5, 4.0, 1000.0])


def test_v1_without_signatures_from_fails_at_build_saying_why(kserve_server):
    spec = bi.EndpointSpec.from_url(f"{kserve_server.url}/v1/models/five",
                                    timeout_secs=TIMEOUT)
    with pytest.raises(bi.ConfigurationError) as raised:
        bi.RunInference(spec)
    message = str(raised.value)
    assert "/v1/models/five/metadata answered HTTP 404" in message
    assert "KServe's v1 API" in message and "signatures_from" in message
    assert f"{kserve_server.url}/v2/models/five" in message
    assert "Check that the server is up" not in message  # it is: no advice that misleads


# --- faults over v1 and v2 ---------------------------------------------------------------

@pytest.mark.parametrize("kind", ["v1", "v2"])
def test_503_bursts_and_429s_are_retried_and_nothing_is_scored_twice(kserve_server, tmp_path,
                                                                      kind):
    kserve_server.control(fail=2, status=503)
    kserve_server.control(fail=1, status=429)
    outputs, _ = score(spec_for(kserve_server, kind), elements_for(kind, VALUES),
                       str(tmp_path), output=bi.Output.RESULT, retry=FAST_RETRY)
    assert sorted(x_of(kind, r.example) for r in outputs) == VALUES
    for result in outputs:
        (value,) = result.inference.values()
        assert np.asarray(value).ravel().tolist() == [5.0 * x_of(kind, result.example)]
    assert scored_exactly_once(kserve_server, VALUES)
    # 3 batches of 8 rows, each sent as requests of 3, 3 and 2 rows; the 3 failed ones again
    assert kserve_server.control()["requests"] == 3 * 3 + 3


@pytest.mark.parametrize("kind", ["v1", "v2"])
def test_rows_the_server_refuses_are_dead_lettered_with_its_reason(kserve_server, tmp_path,
                                                                   kind):
    bad = {5.0, 18.0}
    kserve_server.control(bad=sorted(bad))
    keyed = [(f"k{int(v)}", e) for v, e in zip(VALUES, elements_for(kind, VALUES),
                                                strict=True)]
    logs, failed = score(spec_for(kserve_server, kind), keyed, str(tmp_path),
                         dead_letters=True)
    good = [v for v in VALUES if v not in bad]
    assert sorted(int(key[1:]) for key, _ in logs) == [int(v) for v in good]
    assert scored_exactly_once(kserve_server, good)
    assert sorted(letter.key for letter in failed) == ["k18", "k5"]
    for letter in failed:
        assert letter.stage is bi.Stage.INFERENCE
        assert letter.error_type == "RemoteInputError"
        assert f"x={float(letter.key[1:])!r} is marked bad" in letter.message
