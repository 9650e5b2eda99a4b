"""``SavedModelHandler``: Beam's ModelHandler for any TensorFlow SavedModel.

``load_model`` runs once per worker process (Beam keeps the result in a shared handle);
``run_inference`` is a plain function of a batch and a loaded model, testable without a
pipeline. Keys, dead letters and post-processing are wrappers around it, not flags.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf
from apache_beam.metrics import Metrics
from apache_beam.ml.inference import base
from tfx_bsl.public.proto import model_spec_pb2

from beam_infer import _devices, _encoding, _override, _prediction_log, _tensors, _versions
from beam_infer._config import ModelSpec, Output, as_model_spec
from beam_infer._errors import ConfigurationError
from beam_infer._keywords import checked_keywords
from beam_infer._serving import LoadEvent, ServingModel
from beam_infer._signatures import Feed, Operation, Signature, SignaturePlan, plan_signatures

METRICS_NAMESPACE = "beam_infer"

PredictionLog = _prediction_log.PredictionLog
PredictionResult = base.PredictionResult


@dataclasses.dataclass(frozen=True)
class ModelResults:
    """What ``call_model`` returns.

    Attributes:
        outputs: Each called signature with its outputs (numpy, the batch first).
        rows: For tensor inputs, each input's per-element arrays before padding (what
            predict logs echo); None for serialized examples.
        version: The model version that answered (``version`` None for a plain
            SavedModel directory, whose logs carry no model name or version).
        loads: Model loads on this worker since the previous call, for
            ``SavedModelHandler.report_loads`` to turn into metrics in the thread that
            runs the bundle (Beam drops metrics updated from other threads).
    """

    outputs: list[tuple[Signature, dict[str, np.ndarray]]]
    rows: dict[str, Sequence[np.ndarray]] | None = None
    version: _versions.ModelVersion | None = None
    loads: tuple[LoadEvent, ...] = ()


@checked_keywords
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
        load_override_fn: tfx-bsl's hook: ``fn(model_path, tags)`` run on the worker
            instead of beam_infer's load, returning what ``tf.saved_model.load`` returns
            or a ``tf.compat.v1.Session`` with the model loaded (see ``_override``).

    Raises:
        ConfigurationError: the model, its versions, tags or signatures do not fit, or
            ``output`` is not an ``Output``; the message says how to fix it.

    Example:
        >>> handler = SavedModelHandler(ModelSpec(model_path="/models/five/1"))
        >>> logs = pcoll | apache_beam.ml.inference.RunInference(handler)
    """

    def __init__(self, spec: ModelSpec | model_spec_pb2.InferenceSpecType, *,
                 output: Output = Output.PREDICTION_LOG,
                 load_override_fn: _override.LoadOverrideFn | None = None):
        if not isinstance(output, Output):
            raise ConfigurationError(
                f"output must be a beam_infer.Output; got {output!r}. Pass "
                "output=bi.Output.PREDICTION_LOG or output=bi.Output.RESULT."
            )
        if load_override_fn is not None and not callable(load_override_fn):
            raise ConfigurationError(
                f"load_override_fn must be a function (model_path, tags) -> model; got "
                f"{type(load_override_fn).__name__}."
            )
        self._spec = as_model_spec(spec)
        if load_override_fn is not None and self._spec.poll_interval_secs is not None:
            raise ConfigurationError(
                "ModelSpec.poll_interval_secs makes workers load new versions themselves, "
                "but load_override_fn loads the model instead; use one or the other."
            )
        self._version = _resolve(self._spec)
        self._plan = plan_signatures(self._spec.replace(model_path=self._version.path))
        self._output = output
        self._load_override_fn = load_override_fn
        self._tensor_names = _override.tensor_names(
            self._version.path, self._spec.effective_tags,
            [s.name for s in self._plan.signatures]) if load_override_fn else {}
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
    def load_override_fn(self) -> _override.LoadOverrideFn | None:
        return self._load_override_fn

    @property
    def model_version(self) -> _versions.ModelVersion:
        """The version chosen at build time (``version`` None for a plain directory)."""
        return self._version

    def load_model(self) -> ServingModel:
        if self._load_override_fn is not None:
            loaded = self._load_override_fn(self._version.path, list(self._spec.effective_tags))
            return _override.OverriddenModel(  # type: ignore[return-value]
                loaded, self._version, self._tensor_names, self._spec.model_path)
        # On GPU workers: memory growth on, and each shared copy pinned to its own GPU.
        with _devices.placement(self._spec.share_across_processes) as device:
            return ServingModel(self._spec, self._version,
                                live=self._spec.poll_interval_secs is not None, device=device,
                                plan=self._plan)

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
        encoded = self.encode(batch)
        results = self.call_model(encoded, model)
        self.report_loads(results)
        return self.build_outputs(batch, encoded, results)

    # The three stages of run_inference, separate so that a wrapper (see _isolation) can
    # tell which one failed and retry or isolate just that one.

    def encode(self, batch: Sequence[Any]) -> list[Any]:
        """Serialized examples; for tensor inputs the elements, stacked by ``call_model``.

        Raises:
            InputError: an element is of a type the signature cannot take.
        """
        if self._feeds_tensors(batch):
            return list(batch)
        return _encoding.serialize_examples(
            batch,
            signature_name=self._plan.signatures[0].name,
            accepts_sequence_examples=self._plan.operation is Operation.PREDICT,
        )

    def call_model(self, encoded: Sequence[Any] | _tensors.TensorBatch | tf.Tensor,
                   model: ServingModel) -> ModelResults:
        """Calls the signature(s) on ``encode``'s output; outputs keep the batch first.

        ``encoded`` may also be a batch that came stacked (``RunInference.on_batches()``):
        a ``TensorBatch``, or a 1-D array or string tensor of serialized examples, fed as
        it is.

        The served version answers (it may change between calls when versions are
        followed); loads since the previous call come back in ``ModelResults.loads``.

        Raises:
            InputError: the elements cannot be stacked into the signature's inputs.
        """
        plan = self._plan
        first = plan.signatures[0]
        rows = None
        stacked = isinstance(encoded, np.ndarray | tf.Tensor)
        if isinstance(encoded, _tensors.TensorBatch) or (
                not stacked and self._feeds_tensors(encoded)):
            tensors = encoded if isinstance(encoded, _tensors.TensorBatch) else \
                _tensors.batch_tensors(encoded, first, pad=self._spec.pad_variable_length_inputs,
                                      strict=self._spec.strict_input_casts)
            signatures, calls, rows = [first], [(first.name, tensors.feeds)], tensors.rows
        else:
            # One object array: TF converts it to a string tensor without a Python loop.
            feed = encoded if stacked else np.array(encoded, dtype=object)
            signatures = list(plan.signatures) \
                if plan.operation is Operation.MULTI_INFERENCE else [first]
            calls = [(s.name, {s.inputs[0].alias: feed}) for s in signatures]
        outputs, version, events = model.call(calls)
        return ModelResults(list(zip(signatures, outputs, strict=True)), rows=rows,
                            version=version, loads=tuple(events))

    def report_loads(self, results: ModelResults) -> None:
        """Metrics for the model loads ``results`` carries; call it from the bundle's thread."""
        for event in results.loads:
            _report_load(event)

    def report_pending_loads(self, model: ServingModel) -> None:
        """Metrics for loads a failed call left unreported; call it from the bundle's thread.

        For bundles that succeed although a call failed (its elements became dead
        letters): a later call may never come, or fail too.
        """
        for event in model.take_load_events():
            _report_load(event)

    def build_outputs(self, batch: Sequence[Any], encoded: Sequence[Any],
                      results: ModelResults) -> list[PredictionLog] | list[PredictionResult]:
        """One PredictionLog (or lean PredictionResult) per element of ``batch``.

        Logs of a versioned model record its name and version in ``model_spec``.
        """
        plan = self._plan
        signature, outputs = results.outputs[0]
        if self._output is Output.RESULT:
            return _results(batch, lean_outputs(results), signature.name)
        version = results.version
        model = None if version is None or version.version is None \
            else (version.name, version.version)
        if results.rows is not None:
            return _prediction_log.tensor_predict_logs(
                results.rows, outputs, len(batch), signature_name=signature.name, model=model)
        if plan.operation is Operation.PREDICT:
            return _prediction_log.predict_logs(
                encoded, outputs, input_alias=plan.input_alias, signature_name=signature.name,
                model=model)
        if plan.operation is Operation.MULTI_INFERENCE:
            logs = _prediction_log.multi_inference_logs(encoded, results.outputs)
        elif plan.operation is Operation.CLASSIFY:
            logs = _prediction_log.classify_logs(encoded, outputs, signature_name=signature.name)
        else:
            logs = _prediction_log.regress_logs(encoded, outputs, signature_name=signature.name)
        if model is not None:
            _prediction_log.stamp_model_spec(logs, *model, signature.name)
        return logs

    def _feeds_tensors(self, batch: Sequence[Any]) -> bool:
        if self._plan.feed is Feed.TENSORS:
            return True
        # A one-string-input predict signature takes raw strings too; examples stay the
        # default for Example protos and bytes.
        return bool(batch) and self._plan.operation is Operation.PREDICT and \
            _tensors.is_tensor_element(batch[0])

    def get_num_bytes(self, batch: Sequence[Any]) -> int:
        if self._feeds_tensors(batch):
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
            if self._load_override_fn is not None:
                self._tensor_names = _override.tensor_names(
                    self._version.path, self._spec.effective_tags,
                    [s.name for s in self._plan.signatures])

    def __repr__(self) -> str:
        names = ",".join(s.name for s in self._plan.signatures)
        return f"SavedModelHandler({self._spec.model_path}, {self._plan.operation.value}:{names})"


def lean_outputs(results: ModelResults) -> dict[str, np.ndarray]:
    """The lean output's batched outputs: by alias, or ``"<signature>/<alias>"`` when
    several signatures answered (multi-inference)."""
    if len(results.outputs) == 1:
        return results.outputs[0][1]
    return {f"{s.name}/{alias}": value for s, values in results.outputs
            for alias, value in values.items()}


def _results(batch: Sequence[Any], outputs: Mapping[str, np.ndarray], signature_name: str
             ) -> list[PredictionResult]:
    """One ``PredictionResult(element, {alias: row})`` per element; rows are numpy views."""
    _prediction_log.check_batch_outputs(outputs, len(batch), signature_name)
    aliases = list(outputs)
    if len(aliases) == 1:
        (alias,) = aliases
        return [_result(e, {alias: row}) for e, row in zip(batch, outputs[alias], strict=True)]
    columns = [outputs[a] for a in aliases]
    return [_result(e, dict(zip(aliases, rows, strict=True)))
            for e, *rows in zip(batch, *columns, strict=True)]


def _new_result(example: Any, inference: dict[str, np.ndarray]) -> PredictionResult:
    # NamedTuple's generated __new__ is a Python frame; this is the same tuple, 4x faster.
    return tuple.__new__(PredictionResult, (example, inference, None))


_result = _new_result if PredictionResult._fields == ("example", "inference", "model_id") \
    else PredictionResult


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
        if event.incompatible:
            Metrics.counter(METRICS_NAMESPACE, "incompatible_model_versions").inc()
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
