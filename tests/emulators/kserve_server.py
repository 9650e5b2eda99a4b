"""KServe's own ModelServer (``kserve`` 0.21 from PyPI) serving a real SavedModel, for the
v1 (TF Serving-style ``:predict``) and v2 (Open Inference Protocol) REST APIs.

``SavedModelServer`` is a small ``kserve.Model``: ``load()`` runs ``tf.saved_model.load``,
``predict()`` calls one signature. v1 bodies reach it as raw bytes (``{"instances"}`` or
``{"inputs"}``, ``{"b64"}`` for strings; answered ``{"predictions"}``), v2 requests as an
``InferRequest`` (BYTES inputs may use the binary extension; answered with an
``InferResponse`` in JSON). The server runs in a subprocess (``python -m
tests.emulators.kserve_server``; it takes ~10 s to start), one per session, stopped at
the end; gRPC is off.

What KServe 0.21 itself does not do, and so neither does this: BYTES inputs that are not
UTF-8 over v2 REST (it decodes binary-extension BYTES to text before ``predict()`` and
answers 500), so Example-fed models are served over v1 only; version URLs
(``/v2/models/NAME/versions/V`` answers 501) and TF Serving's ``:classify`` / ``:regress``
or metadata routes on v1. One kserve model serves one signature.

Faults and counters go through a second model, ``_control``: ``POST
/v1/models/_control:predict`` with ``{"instances": [{"fail": N, "status": 503|429,
"delay_secs": S, "delay": N, "bad": [x, ...], "reset": true}]}`` plans them and answers
with the counters (requests, rows scored, ``scored`` by row key). Failures are raised as
FastAPI ``HTTPException``s (``{"detail": ...}``); a bad row (its ``x`` or first float
value in ``bad``) is kserve's ``InvalidInput`` (400, ``{"error": ...}``).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import dataclasses
import json
import sys
import threading
from collections.abc import Iterator

import pytest

STATE = {"plan": collections.deque(), "bad": set(), "requests": 0, "rows": 0,
         "scored": collections.Counter()}
LOCK = threading.Lock()


def _model_classes():
    import kserve
    import numpy as np
    import tensorflow as tf
    from fastapi import HTTPException
    from kserve.errors import InvalidInput
    from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

    from tests.emulators.tf_serving import row_keys

    class SavedModelServer(kserve.Model):
        def __init__(self, name: str, path: str, signature_name: str):
            super().__init__(name)
            self.path, self.signature_name = path, signature_name

        def load(self) -> bool:
            root = tf.saved_model.load(self.path, tags=["serve"])
            self.function = root.signatures[self.signature_name]
            self.root = root
            self.inputs = self.function.structured_input_signature[1]
            self.outputs = self.function.structured_outputs
            self.ready = True
            return self.ready

        def _types(self, specs):
            from beam_infer.remote._kserve_v2 import datatype
            return [{"name": n, "datatype": datatype(s.dtype),
                     "shape": [-1 if d is None else d for d in s.shape]}
                    for n, s in sorted(specs.items())]

        def get_input_types(self):
            return self._types(self.inputs)

        def get_output_types(self):
            return self._types(self.outputs)

        async def predict(self, payload, headers=None):
            with LOCK:
                STATE["requests"] += 1
                planned = STATE["plan"].popleft() if STATE["plan"] else None
            if planned is not None:
                kind, value = planned
                if kind == "delay":
                    await asyncio.sleep(value)
                else:
                    raise HTTPException(status_code=value, detail=f"injected fault: {value}")
            v2 = isinstance(payload, InferRequest)
            if v2:
                feeds = {i.name: i.as_numpy() for i in payload.inputs}
            else:
                body = json.loads(payload) if isinstance(payload, bytes | str) else payload
                data = body.get("instances", body.get("inputs"))
                (alias, spec), = self.inputs.items() if len(self.inputs) == 1 else (None, None)
                if alias is None:
                    raise InvalidInput("this v1 server takes one-input signatures")
                if spec.dtype == tf.string:
                    data = [base64.b64decode(v["b64"]) if isinstance(v, dict) else v.encode()
                            for v in data]
                    feeds = {alias: np.array(data, dtype=object)}
                else:
                    feeds = {alias: np.array(data, dtype=spec.dtype.as_numpy_dtype)}
            keys = row_keys(feeds)
            bad = [k for k in keys if isinstance(k, float) and k in STATE["bad"]]
            if bad:
                raise InvalidInput(f"input value x={bad[0]!r} is marked bad")
            try:
                outputs = {a: t.numpy() for a, t in self.function(
                    **{a: tf.constant(v) for a, v in feeds.items()}).items()}
            except tf.errors.InvalidArgumentError as e:
                raise InvalidInput(e.message) from None
            with LOCK:
                STATE["rows"] += len(keys)
                STATE["scored"].update(str(k) for k in keys)
            if v2:
                result = []
                for alias, value in sorted(outputs.items()):
                    output = InferOutput(name=alias, shape=list(value.shape),
                                         datatype=self._types({alias: tf.TensorSpec(
                                             value.shape, tf.string if value.dtype == object
                                             else value.dtype)})[0]["datatype"])
                    output.set_data_from_numpy(value, binary_data=False)
                    result.append(output)
                return InferResponse(response_id=payload.id or "", model_name=self.name,
                                     infer_outputs=result)
            (alias, value), = outputs.items()
            return {"predictions": value.tolist()}

    class Control(kserve.Model):
        def __init__(self):
            super().__init__("_control")
            self.ready = True

        async def predict(self, payload, headers=None):
            body = json.loads(payload) if isinstance(payload, bytes | str) else payload
            with LOCK:
                for order in body.get("instances", []):
                    if order.get("reset"):
                        STATE.update(plan=collections.deque(), bad=set(), requests=0, rows=0,
                                     scored=collections.Counter())
                    STATE["plan"].extend([("fail", int(order.get("status", 503)))]
                                         * int(order.get("fail", 0)))
                    STATE["plan"].extend([("delay", float(order.get("delay_secs", 0)))]
                                         * int(order.get("delay", 0)))
                    STATE["bad"].update(float(v) for v in order.get("bad", []))
                return {"predictions": [{"requests": STATE["requests"], "rows": STATE["rows"],
                                         "scored": dict(STATE["scored"])}]}

    return kserve, SavedModelServer, Control


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--model", action="append", default=[],
                        help="NAME=PATH[:SIGNATURE]")
    args = parser.parse_args(argv)
    kserve, saved_model_server, control = _model_classes()
    models = []
    for spec in args.model:
        name, _, rest = spec.partition("=")
        path, _, signature = rest.partition(":")
        model = saved_model_server(name, path, signature or "serving_default")
        model.load()
        models.append(model)
    models.append(control())
    kserve.ModelServer(http_port=args.http_port, grpc_port=0, enable_grpc=False,
                       workers=1).start(models)


@dataclasses.dataclass(frozen=True)
class KServe:
    url: str
    paths: dict[str, str]  # model name -> the SavedModel directory it serves

    def control(self, **order) -> dict:
        import requests
        answer = requests.post(f"{self.url}/v1/models/_control:predict",
                               json={"instances": [order]}, timeout=60)
        answer.raise_for_status()
        return answer.json()["predictions"][0]


@pytest.fixture(scope="session")
def kserve_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KServe]:
    """KServe serving ``five`` (y = 5x, Examples) and ``dense`` (Keras 3, float x)."""
    pytest.importorskip("kserve", reason="kserve is not installed (pip install -r "
                        "requirements-test.txt installs it)")
    from pipelines import models as demo
    from tests.emulators import _server
    from tests.support import model_zoo

    root = tmp_path_factory.mktemp("kserve")
    five = demo.build_multiplier_model(str(root / "five"), 5.0)
    dense = model_zoo.keras3_export(root / "dense")
    command = lambda port: [sys.executable, "-m", "tests.emulators.kserve_server",  # noqa: E731
                            "--http-port", str(port), "--model", f"five={five}",
                            "--model", f"dense={dense}"]
    with _server.running("kserve", command, lambda port: f"http://{_server.HOST}:{port}/v2/health/ready",
                         root, start_timeout_secs=180) as port:
        yield KServe(f"http://{_server.HOST}:{port}", {"five": str(five), "dense": str(dense)})


@pytest.fixture
def kserve_server(kserve_session: KServe) -> Iterator[KServe]:
    kserve_session.control(reset=True)
    yield kserve_session
    kserve_session.control(reset=True)


if __name__ == "__main__":
    main(sys.argv[1:])
