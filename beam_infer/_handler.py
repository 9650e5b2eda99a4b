"""``SavedModelHandler``: Beam's ModelHandler for any TensorFlow SavedModel.

``load_model`` runs once per worker process (Beam keeps the result in a shared handle);
``run_inference`` is a plain function of a batch and a loaded model, testable without a
pipeline. Keys, dead letters and post-processing are wrappers around it, not flags.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from apache_beam.metrics import Metrics
from apache_beam.ml.inference import base
from tfx_bsl.public.proto import model_spec_pb2

from beam_infer import _devices, _encoding, _prediction_log, _scoring, _tensors, _versions
from beam_infer._config import ModelSpec, Output, as_model_spec
from beam_infer._errors import ConfigurationError
from beam_infer._serving import LoadEvent, ServingModel
from beam_infer._signatures import SignaturePlan, plan_signatures

METRICS_NAMESPACE = "beam_infer"

PredictionLog = _prediction_log.PredictionLog
PredictionResult = base.PredictionResult


class SavedModelHandler(base.ModelHandler[Any, PredictionLog | PredictionResult, ServingModel]):
    """Loads a SavedModel once per worker and turns batches of elements into predictions.

    Signatures with one string input (and every classify/regress signature) are fed
    serialized examples; any other predict signature is fed named tensors stacked from
    the elements (see ``RunInference`` for the element kinds).

    The model's signatures are read and checked when the handler is built, so a wrong
    path, tag or signature fails pipeline construction, not the first bundle. Works with
    ``beam_infer.RunInference`` and equally with Beam's own ``RunInference`` and
    ``KeyedModelHandler``.

    ``model_path`` may be a SavedModel directory or a TF Serving-style base path of
    numbered versions: the version policy's newest complete version is chosen at build
    time (its signatures are checked), and with ``poll_interval_secs`` each worker
    switches to newer versions as they land (see ``ModelSpec``).

    Args:
        spec: A ``beam_infer.ModelSpec`` or tfx-bsl's ``InferenceSpecType``.
        output: ``Output.PREDICTION_LOG`` (default) or the lean ``Output.RESULT``.

    Raises:
        ConfigurationError: the model, its versions, tags or signatures do not fit, or
            ``output`` is not an ``Output``; the message says how to fix it.

    Example:
        >>> handler = SavedModelHandler(ModelSpec(model_path="/models/five/1"))
        >>> logs = pcoll | apache_beam.ml.inference.RunInference(handler)
    """

    def __init__(self, spec: ModelSpec | model_spec_pb2.InferenceSpecType, *,
                 output: Output = Output.PREDICTION_LOG):
        if not isinstance(output, Output):
            raise ConfigurationError(
                f"output must be a beam_infer.Output; got {output!r}. Pass "
                "output=bi.Output.PREDICTION_LOG or output=bi.Output.RESULT."
            )
        self._spec = as_model_spec(spec)
        self._version = _resolve(self._spec)
        self._plan = plan_signatures(self._spec.replace(model_path=self._version.path))
        self._output = output
        super().__init__(
            large_model=self._spec.share_across_processes,
            model_copies=self._spec.model_copies,
        )

    @property
    def spec(self) -> ModelSpec:
        return self._spec

    @property
    def plan(self) -> SignaturePlan:
        return self._plan

    @property
    def output(self) -> Output:
        return self._output

    @property
    def model_version(self) -> _versions.ModelVersion:
        """The version chosen at build time (``version`` None for a plain directory)."""
        return self._version

    def load_model(self) -> ServingModel:
        # On GPU workers: memory growth on, and each shared copy pinned to its own GPU.
        with _devices.placement(self._spec.share_across_processes) as device:
            return ServingModel(self._spec, self._version,
                                live=self._spec.poll_interval_secs is not None, device=device)

    def model_copies(self) -> int:
        """Copies per machine when shared: as configured, else one per visible GPU.

        Beam asks this on the worker (in ``setup``), so the GPUs counted are the worker's.
        """
        gpus = _devices.visible_gpus() if self._spec.share_across_processes else []
        return _devices.default_model_copies(
            self._spec.model_copies, self._spec.share_across_processes, gpus)

    def run_inference(
        self,
        batch: Sequence[Any],
        model: ServingModel,
        inference_args: Mapping[str, Any] | None = None,
    ) -> Iterable[PredictionLog | PredictionResult]:
        if not batch:
            return []
        feed = _scoring.prepare(self._plan, batch, pad=self._spec.pad_variable_length_inputs)
        lean = self._output is Output.RESULT
        answers, _, events = model.infer(feed, lean=lean)
        for event in events:
            _report_load(event)
        if lean:
            return _scoring.results(batch, answers, self._plan.signatures[0].name)
        return answers

    def get_num_bytes(self, batch: Sequence[Any]) -> int:
        if _scoring.feeds_tensors(self._plan, batch):
            return _tensors.num_bytes(batch)
        return _encoding.num_bytes(batch)

    def get_metrics_namespace(self) -> str:
        return METRICS_NAMESPACE

    def batch_elements_kwargs(self) -> Mapping[str, Any]:
        return self._spec.batching.batch_elements_kwargs()

    def update_model_path(self, model_path: str | None = None) -> None:
        """Points the handler at another model (Beam's model-refresh side input calls it)."""
        if model_path:
            self._spec = self._spec.replace(model_path=model_path)
            self._version = _resolve(self._spec)
            self._plan = plan_signatures(self._spec.replace(model_path=self._version.path))

    def __repr__(self) -> str:
        names = ",".join(s.name for s in self._plan.signatures)
        return f"SavedModelHandler({self._spec.model_path}, {self._plan.operation.value}:{names})"


def _resolve(spec: ModelSpec) -> _versions.ModelVersion:
    """A plain SavedModel directory, or the version a base path serves at build time."""
    if _versions.is_saved_model_dir(spec.model_path):
        for name in ("model_name", "version_policy", "poll_interval_secs"):
            if getattr(spec, name) is not None:
                raise ConfigurationError(
                    f"ModelSpec.{name} applies to a versioned base path (numbered version "
                    f"folders), but {spec.model_path!r} is a SavedModel directory. Point "
                    f"model_path at the folder holding the versions, or unset {name}."
                )
        return _versions.ModelVersion(path=spec.model_path)
    if not _versions.numeric_children(spec.model_path):
        return _versions.ModelVersion(path=spec.model_path)  # plan_signatures explains
    return _versions.resolve(spec.model_path,
                             spec.version_policy or _versions.VersionPolicy.latest(),
                             spec.model_name)


def _report_load(event: LoadEvent) -> None:
    """Metrics for a load that happened on this worker since the previous batch."""
    if not event.ok:
        Metrics.counter(METRICS_NAMESPACE, "model_load_failures").inc()
        return
    if event.size_bytes:
        Metrics.distribution(METRICS_NAMESPACE, "saved_model_byte_size").update(
            event.size_bytes)
    if event.warmup_records:
        Metrics.counter(METRICS_NAMESPACE, "warmup_records_replayed").inc(
            event.warmup_records)
    if event.swap:
        Metrics.counter(METRICS_NAMESPACE, "model_version_swaps").inc()
        Metrics.distribution(METRICS_NAMESPACE, "model_swap_load_latency_milli_secs").update(
            event.latency_ms)
