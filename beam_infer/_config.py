"""Explicit, frozen configuration, checked when built: the model to serve (``ModelSpec``
with its ``VersionPolicy`` and ``ModelCache``), batching, retries and the output format."""

from __future__ import annotations

import dataclasses
import enum
import os
from collections.abc import Iterable, Mapping
from typing import Any

from tfx_bsl.public.proto import model_spec_pb2

from beam_infer._errors import ConfigurationError
from beam_infer._keywords import checked_keywords


def is_whole(value: Any, *, at_least: int) -> bool:
    """An ``int`` (not a ``bool``) of at least ``at_least``."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= at_least


def is_number(value: Any, *, at_least: float | None = None, above: float | None = None) -> bool:
    """An ``int`` or ``float`` (not a ``bool``) of at least ``at_least`` / above ``above``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return (at_least is None or value >= at_least) and (above is None or value > above)


DEFAULT_SIGNATURE = "serving_default"
DEFAULT_TAGS = ("serve",)


@dataclasses.dataclass(frozen=True, kw_only=True)
class VersionPolicy:
    """Which versions of a base path may serve; TF Serving's ``ServableVersionPolicy``.

    TF Serving can serve several versions at once because each request names one. A
    RunInference step scores each element once, so beam_infer serves the *newest*
    version the policy allows that loads, and falls back to older allowed versions only
    when newer ones fail to load.

    Build one with ``VersionPolicy.latest(n)``, ``VersionPolicy.all()`` or
    ``VersionPolicy.specific(*versions)``.

    Example:
        >>> spec = ModelSpec(model_path="gs://b/models/five",
        ...                  version_policy=VersionPolicy.specific(3, 4))
    """

    kind: str = "latest"
    num_versions: int = 1
    versions: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in ("latest", "all", "specific"):
            raise ConfigurationError(
                f"VersionPolicy.kind must be 'latest', 'all' or 'specific'; got {self.kind!r}. "
                "Build policies with VersionPolicy.latest(n), .all() or .specific(*versions)."
            )
        if not is_whole(self.num_versions, at_least=1):
            raise ConfigurationError(
                f"VersionPolicy.latest needs a positive number of versions; got "
                f"{self.num_versions!r}. Example: VersionPolicy.latest(2)."
            )
        versions = tuple(self.versions)
        if not all(is_whole(v, at_least=0) for v in versions):
            raise ConfigurationError(
                f"VersionPolicy.specific takes version numbers (integers >= 0); got "
                f"{versions!r}. Example: VersionPolicy.specific(1, 2)."
            )
        if self.kind == "specific" and not versions:
            raise ConfigurationError(
                "VersionPolicy.specific needs at least one version number; got none. "
                "Example: VersionPolicy.specific(3)."
            )
        object.__setattr__(self, "versions", tuple(sorted(set(versions))))

    @classmethod
    def latest(cls, num_versions: int = 1) -> VersionPolicy:
        """The newest ``num_versions`` complete versions (TF Serving's default, 1)."""
        return cls(kind="latest", num_versions=num_versions)

    @classmethod
    def all(cls) -> VersionPolicy:
        """Every complete version; the newest serves."""
        return cls(kind="all")

    @classmethod
    def specific(cls, *versions: int) -> VersionPolicy:
        """Only the listed versions; the newest of them present serves."""
        return cls(kind="specific", versions=tuple(versions))

    def allowed(self, complete: Iterable[int]) -> list[int]:
        """The versions this policy allows among ``complete``, newest first."""
        newest_first = sorted(set(complete), reverse=True)
        if self.kind == "latest":
            return newest_first[: self.num_versions]
        if self.kind == "specific":
            return [v for v in newest_first if v in self.versions]
        return newest_first

    def describe(self) -> str:
        if self.kind == "latest":
            return f"latest({self.num_versions})"
        if self.kind == "specific":
            return f"specific({', '.join(map(str, self.versions))})"
        return "all()"


class Output(enum.Enum):
    """What ``RunInference`` emits per element.

    ``PREDICTION_LOG``: a ``tensorflow.serving.PredictionLog``, tfx-bsl's layout.
    ``RESULT``: Beam's lean ``PredictionResult(example, inference)``: the element as it
    came in and a ``dict`` of its numpy output rows keyed by output alias (for
    multi-inference, by ``"<signature>/<alias>"``); no protos are built.
    """

    PREDICTION_LOG = "prediction_log"
    RESULT = "result"


@checked_keywords
@dataclasses.dataclass(frozen=True, kw_only=True)
class BatchConfig:
    """How elements are grouped into model calls: six of ``beam.BatchElements``' parameters.

    Each field is the ``BatchElements`` parameter of the same name; unset fields keep
    Beam's defaults. The others (element weights, length buckets, clocks) are not
    offered: they would change what a batch is for the model.

    Size bounds apply in batch and streaming; with ``max_batch_duration_secs`` set, Beam
    buffers elements across bundles (a keyed, stateful path) and flushes a batch at the
    latest after that many seconds, so a streaming pipeline gets full batches under load
    and bounded latency when thin.

    Example:
        >>> BatchConfig(min_batch_size=8, max_batch_size=256, max_batch_duration_secs=0.05)
    """

    min_batch_size: int | None = None
    max_batch_size: int | None = None
    max_batch_duration_secs: float | None = None
    target_batch_overhead: float | None = None
    target_batch_duration_secs: float | None = None
    variance: float | None = None

    def __post_init__(self) -> None:
        for name in ("min_batch_size", "max_batch_size"):
            value = getattr(self, name)
            if value is not None and not is_whole(value, at_least=1):
                raise ConfigurationError(
                    f"BatchConfig.{name} must be a positive integer; got {value!r}. "
                    f"Pass a whole number of elements such as {name}=64, or leave it unset."
                )
        for name in ("max_batch_duration_secs", "target_batch_duration_secs"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ConfigurationError(
                    f"BatchConfig.{name} must be a positive number of seconds; got {value!r}."
                )
        if self.target_batch_overhead is not None and not 0 < self.target_batch_overhead <= 1:
            raise ConfigurationError(
                "BatchConfig.target_batch_overhead is a fraction of batch time in (0, 1]; "
                f"got {self.target_batch_overhead!r}."
            )
        if self.variance is not None and self.variance < 0:
            raise ConfigurationError(
                f"BatchConfig.variance must be >= 0; got {self.variance!r}."
            )
        low, high = self.min_batch_size, self.max_batch_size
        if low is not None and high is not None and low > high:
            raise ConfigurationError(
                f"BatchConfig.min_batch_size ({low}) is larger than max_batch_size ({high}); "
                "make min_batch_size <= max_batch_size."
            )

    def batch_elements_kwargs(self) -> dict[str, Any]:
        """The keyword arguments for ``beam.BatchElements``: only the fields that are set."""
        return {
            field.name: getattr(self, field.name)
            for field in dataclasses.fields(self)
            if getattr(self, field.name) is not None
        }


@checked_keywords
@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelCache:
    """Where workers keep local copies of remote models, and how much disk they may use.

    A model on a remote filesystem (``gs://``, ``s3://``, ...) is copied to local disk
    once per machine before it is loaded. Copies are keyed by the remote listing (names,
    sizes, modification times), so a re-export to the same path is copied again; a copy
    is reused only after its files are checked against the listing. Local paths are
    loaded in place and never copied.

    Attributes:
        directory: Where copies live. Unset: ``<temp dir>/beam_infer-<uid>/models``. It
            is created with mode 0700 and used only while it is a real directory owned
            by the worker's user.
        max_bytes: After a new copy, older copies of the same path and then the least
            recently used others are removed until the copies take at most this much
            (a copy being loaded is never removed). Default 10 GiB.

    Example:
        >>> spec = ModelSpec(model_path="gs://b/models/five/1",
        ...                  model_cache=ModelCache(directory="/mnt/disks/models"))
    """

    directory: str | None = None
    max_bytes: int = 10 * 2**30

    def __post_init__(self) -> None:
        if self.directory is not None and (not isinstance(self.directory, str)
                                           or not os.path.isabs(self.directory)):
            raise ConfigurationError(
                f"ModelCache.directory must be an absolute local path; got "
                f"{self.directory!r}. Example: ModelCache(directory='/mnt/disks/models')."
            )
        if not is_whole(self.max_bytes, at_least=1):
            raise ConfigurationError(
                f"ModelCache.max_bytes must be a positive number of bytes; got "
                f"{self.max_bytes!r}. Example: ModelCache(max_bytes=20 * 2**30)."
            )


@checked_keywords
@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """What to serve: a SavedModel path, its signatures and tags, batching and sharing.

    The same content as tfx-bsl's ``InferenceSpecType.saved_model_spec`` plus its
    ``batch_parameters``, and what that proto cannot say: latency-bounded batching and
    how the loaded model is shared on a machine.

    Attributes:
        model_path: A SavedModel directory on any Beam filesystem (local, ``gs://``, ...).
        signature_names: Signatures to run. Empty means ``("serving_default",)``; several
            classify/regress signatures mean one multi-inference call.
        tags: The MetaGraph's tag set. Empty means ``("serve",)``.
        batching: How elements are batched; see ``BatchConfig``.
        share_across_processes: Load one copy per machine, shared by all SDK processes
            (big models, GPUs) instead of one per process.
        model_copies: With sharing on, how many copies per machine. Unset: one per GPU
            the worker sees (each pinned to its GPU), or 1 on a machine without GPUs.
        model_name: The name PredictionLogs record in ``model_spec.name`` when
            ``model_path`` is a versioned base path. Unset: the base path's last folder.
        version_policy: For a versioned base path (numbered child folders, as TF
            Serving's): which versions may serve. Unset: ``VersionPolicy.latest(1)``.
        poll_interval_secs: For a versioned base path: how often a worker looks for a new
            version between batches, then loads, warms up and switches to it. Unset: the
            version chosen when the pipeline is built serves the whole job.
        pad_variable_length_inputs: For tensor inputs, pad dimensions the signature leaves
            variable (``?``) to the largest element of each batch (zeros, empty strings),
            as TF Serving's option of the same name. Off: elements of a batch must agree.
        model_cache: Where workers copy a remote model to and how much disk the copies
            may take; see ``ModelCache``.
        strict_input_casts: For tensor inputs, cast a value to the signature's dtype only
            when the cast loses nothing (a safe numpy cast, or equal values after it).
            Off (the default): casts within a kind are made too when every value fits,
            as Keras ``predict`` and TF Serving's REST API do: float64 rows feed a
            float32 input as long as finite values stay finite, int64 an int32 input
            when every value is in range.
        intra_op_threads: Threads TensorFlow uses within one operation (a matrix
            multiply), per worker process, as TF Serving's
            ``--tensorflow_intra_op_parallelism``. Unset: TensorFlow's default, every
            core of the machine in each process; with several SDK processes on a machine,
            cores / processes keeps their model calls off each other's cores (see
            docs/sizing.md). Process-wide: TensorFlow takes it before its first operation
            in the process, so the first model loaded there sets it.
        inter_op_threads: Operations TensorFlow runs at once, per worker process, as TF
            Serving's ``--tensorflow_inter_op_parallelism``; unset and process-wide as
            ``intra_op_threads``.

    Example:
        >>> spec = ModelSpec(model_path="gs://bucket/models/five/1",
        ...                  batching=BatchConfig(max_batch_size=512))
        >>> live = ModelSpec(model_path="gs://bucket/models/five", poll_interval_secs=30)
    """

    model_path: str
    signature_names: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    batching: BatchConfig = BatchConfig()
    share_across_processes: bool = False
    model_copies: int | None = None
    model_name: str | None = None
    version_policy: VersionPolicy | None = None
    poll_interval_secs: float | None = None
    pad_variable_length_inputs: bool = False
    model_cache: ModelCache = ModelCache()
    strict_input_casts: bool = False
    intra_op_threads: int | None = None
    inter_op_threads: int | None = None

    def __post_init__(self) -> None:
        for name in ("intra_op_threads", "inter_op_threads"):
            value = getattr(self, name)
            if value is not None and not is_whole(value, at_least=1):
                raise ConfigurationError(
                    f"ModelSpec.{name} must be a positive integer (threads per worker "
                    f"process) or None for TensorFlow's default; got {value!r}. Example: "
                    f"{name}=2."
                )
        if not isinstance(self.strict_input_casts, bool):
            raise ConfigurationError(
                "ModelSpec.strict_input_casts must be True or False; got "
                f"{self.strict_input_casts!r}."
            )
        if not isinstance(self.model_cache, ModelCache):
            raise ConfigurationError(
                "ModelSpec.model_cache must be a ModelCache; got "
                f"{type(self.model_cache).__name__}. Example: "
                "model_cache=bi.ModelCache(directory='/mnt/disks/models')."
            )
        if not isinstance(self.pad_variable_length_inputs, bool):
            raise ConfigurationError(
                "ModelSpec.pad_variable_length_inputs must be True or False; got "
                f"{self.pad_variable_length_inputs!r}."
            )
        if not isinstance(self.model_path, str) or not self.model_path:
            raise ConfigurationError(
                f"ModelSpec.model_path must be a non-empty path string; got {self.model_path!r}."
            )
        for name in ("signature_names", "tags"):
            value = getattr(self, name)
            if isinstance(value, str) or not all(isinstance(v, str) and v for v in value):
                raise ConfigurationError(
                    f"ModelSpec.{name} must be a tuple of non-empty strings; got {value!r}. "
                    f'For one name write {name}=("{value if isinstance(value, str) else "..."}",).'
                )
            object.__setattr__(self, name, tuple(value))
        if not isinstance(self.batching, BatchConfig):
            raise ConfigurationError(
                f"ModelSpec.batching must be a BatchConfig; got {type(self.batching).__name__}."
            )
        if self.model_copies is not None:
            if not is_whole(self.model_copies, at_least=1):
                raise ConfigurationError(
                    f"ModelSpec.model_copies must be a positive integer; got {self.model_copies!r}."
                )
            if not self.share_across_processes:
                raise ConfigurationError(
                    "ModelSpec.model_copies only applies when the model is shared across "
                    f"processes; got model_copies={self.model_copies} with "
                    "share_across_processes=False. Set share_across_processes=True."
                )
        if self.model_name is not None and (not isinstance(self.model_name, str)
                                            or not self.model_name):
            raise ConfigurationError(
                f"ModelSpec.model_name must be a non-empty string; got {self.model_name!r}."
            )
        if self.version_policy is not None and not isinstance(self.version_policy,
                                                              VersionPolicy):
            raise ConfigurationError(
                "ModelSpec.version_policy must be a VersionPolicy; got "
                f"{type(self.version_policy).__name__}. Example: "
                "version_policy=VersionPolicy.latest(2)."
            )
        value = self.poll_interval_secs
        if value is not None and not is_number(value, above=0):
            raise ConfigurationError(
                "ModelSpec.poll_interval_secs must be a positive number of seconds; got "
                f"{value!r}. TF Serving polls every 1 s; 5 to 60 s suits a bucket."
            )

    @property
    def effective_signature_names(self) -> tuple[str, ...]:
        return self.signature_names or (DEFAULT_SIGNATURE,)

    @property
    def effective_tags(self) -> tuple[str, ...]:
        return self.tags or DEFAULT_TAGS

    def replace(self, **changes: Any) -> ModelSpec:
        """A copy with ``changes`` applied (e.g. another ``model_path``)."""
        return dataclasses.replace(self, **changes)


def as_model_spec(spec: ModelSpec | model_spec_pb2.InferenceSpecType) -> ModelSpec:
    """Accepts our ``ModelSpec`` or tfx-bsl's ``InferenceSpecType`` and returns a ``ModelSpec``.

    A proto's ``batch_parameters`` are kept as given, as tfx-bsl keeps them: a
    ``target_batch_overhead`` outside (0, 1] is refused by Beam's ``BatchElements`` when
    the pipeline is built, not here.

    Raises:
        ConfigurationError: the proto asks for a remote model or has no model path.
    """
    if isinstance(spec, ModelSpec):
        return spec
    if not isinstance(spec, model_spec_pb2.InferenceSpecType):
        raise ConfigurationError(
            "RunInference needs a beam_infer.ModelSpec or a tfx_bsl InferenceSpecType; "
            f"got {type(spec).__name__}. Example: "
            'bi.RunInference(bi.ModelSpec(model_path="/models/five"))'
        )
    kind = spec.WhichOneof("type")
    if kind != "saved_model_spec":
        raise ConfigurationError(
            f"InferenceSpecType sets {kind or 'no model'}; beam_infer runs SavedModels in "
            "process and needs saved_model_spec { model_path: ... }. To call a remote "
            "endpoint use tfx_bsl.public.beam.RunInference."
        )
    saved = spec.saved_model_spec
    batching = _int_fields({
        field.name: value
        for field, value in spec.batch_parameters.ListFields()
    })
    # tfx-bsl hands batch_parameters to Beam as they are; Beam's BatchElements checks
    # target_batch_overhead (a fraction in (0, 1]) when the pipeline is built.
    overhead = batching.pop("target_batch_overhead", None)
    config = BatchConfig(**batching)
    if overhead is not None:
        object.__setattr__(config, "target_batch_overhead", overhead)
    return ModelSpec(
        model_path=saved.model_path,
        signature_names=tuple(saved.signature_name),
        tags=tuple(saved.tag),
        batching=config,
    )


def _int_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    ints = {"min_batch_size", "max_batch_size"}
    return {name: int(v) if name in ints else float(v) for name, v in fields.items()}


@checked_keywords
@dataclasses.dataclass(frozen=True, kw_only=True)
class RetryConfig:
    """How a model call that fails transiently is retried before its elements fail.

    Transient failures are TensorFlow's ``ResourceExhaustedError``, ``UnavailableError``,
    ``DeadlineExceededError`` and ``AbortedError``, a backend's ``TransientError`` (a
    remote endpoint's 429, 502, 503, 504, UNAVAILABLE, timeouts, dropped connections),
    and a call that runs longer than ``call_timeout_secs``. They are retried up to
    ``max_attempts`` calls in all, waiting ``initial_backoff_secs`` and then
    ``backoff_multiplier`` times longer each time (at most ``max_backoff_secs``). Other
    failures (e.g. ``InvalidArgumentError`` from a malformed example, a remote 400) are
    deterministic and never retried.

    Attributes:
        max_attempts: Calls in all, the first included; 1 turns retries off.
        initial_backoff_secs: Wait before the first retry.
        backoff_multiplier: Factor applied to the wait after each retry.
        max_backoff_secs: Upper bound of one wait.
        call_timeout_secs: A model call still running after this long counts as a
            transient failure and is retried. TensorFlow cannot cancel a running call,
            so the abandoned call finishes in the background. None: no timeout.

    Example:
        >>> RetryConfig(max_attempts=5, initial_backoff_secs=1.0, call_timeout_secs=60.0)
    """

    max_attempts: int = 3
    initial_backoff_secs: float = 0.5
    backoff_multiplier: float = 2.0
    max_backoff_secs: float = 30.0
    call_timeout_secs: float | None = None

    def __post_init__(self) -> None:
        if not is_whole(self.max_attempts, at_least=1):
            raise ConfigurationError(
                f"RetryConfig.max_attempts must be a positive integer; got "
                f"{self.max_attempts!r}. Use max_attempts=1 to turn retries off."
            )
        for name in ("initial_backoff_secs", "max_backoff_secs"):
            value = getattr(self, name)
            if not is_number(value, at_least=0):
                raise ConfigurationError(
                    f"RetryConfig.{name} must be a number of seconds >= 0; got {value!r}."
                )
        if not is_number(self.backoff_multiplier, at_least=1):
            raise ConfigurationError(
                f"RetryConfig.backoff_multiplier must be >= 1; got {self.backoff_multiplier!r}."
            )
        timeout = self.call_timeout_secs
        if timeout is not None and not is_number(timeout, above=0):
            raise ConfigurationError(
                f"RetryConfig.call_timeout_secs must be a positive number of seconds or None; "
                f"got {timeout!r}."
            )

    def backoff_secs(self, retry: int) -> float:
        """The wait before retry number ``retry`` (1 for the first retry)."""
        return min(self.max_backoff_secs,
                   self.initial_backoff_secs * self.backoff_multiplier ** (retry - 1))
