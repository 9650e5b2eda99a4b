"""``SavedModelBackend``: the ``_backend.Backend`` of a SavedModel loaded in each worker.

Built with the pipeline: it resolves the version to serve (a SavedModel directory, or
the version policy's choice among a base path's numbered versions), reads and plans its
signatures and reads the graph's example parsers for the validator, so a wrong path, tag
or signature fails construction. On the worker ``load`` returns a
``_serving.ServingModel`` (versions followed and hot-swapped when asked), placed on this
copy's GPU, or the model a user's ``load_override_fn`` returned, after sizing the
process's TensorFlow thread pools as the spec says (``_threads``).
"""

from __future__ import annotations

from beam_infer._backend import ModelVersion, Servable, SpecOptions
from beam_infer._config import ModelSpec
from beam_infer._errors import ConfigurationError
from beam_infer._signatures import Feed, SignaturePlan, plan, signatures_of
from beam_infer._validation import Validator
from beam_infer.saved_model import _devices, _files, _override, _threads, _versions
from beam_infer.saved_model._serving import ServingModel


class SavedModelBackend(SpecOptions):
    """A SavedModel (or a base path of numbered versions) served in the worker process.

    Args:
        spec: The model and how it is served.
        load_override_fn: tfx-bsl's hook, run on the worker instead of beam_infer's load
            (see ``_override``).

    Raises:
        ConfigurationError: the path, its versions, tags or signatures do not fit.
    """

    def __init__(self, spec: ModelSpec,
                 load_override_fn: _override.LoadOverrideFn | None = None):
        if load_override_fn is not None and spec.poll_interval_secs is not None:
            raise ConfigurationError(
                "ModelSpec.poll_interval_secs makes workers load new versions themselves, "
                "but load_override_fn loads the model instead; use one or the other."
            )
        self.spec = spec
        self.load_override_fn = load_override_fn
        self.version = resolve(spec)
        path = self.version.path
        # saved_model.pb is read once: the plan, the validator's rules and the override's
        # tensor names all come from this MetaGraph.
        meta_graph = _files.read_meta_graph(path, spec.effective_tags)
        self.plan = plan(signatures_of(meta_graph.signature_def),
                         spec.effective_signature_names, path)
        self._validator = Validator.for_plan(
            self.plan, meta_graph=None if self.plan.feed is Feed.TENSORS else meta_graph,
            strict_casts=spec.strict_input_casts)
        self._tensor_names = _override.tensor_names(
            meta_graph, [s.name for s in self.plan.signatures]) if load_override_fn else {}

    @property
    def location(self) -> str:
        return self.spec.model_path

    sends_ahead = False  # the model runs in this process: nothing to overlap

    @property
    def share_across_processes(self) -> bool:
        return self.spec.share_across_processes

    def load(self) -> Servable:
        # TensorFlow's thread pools first: it takes them only before its first operation.
        _threads.apply(self.spec.intra_op_threads, self.spec.inter_op_threads)
        if self.load_override_fn is not None:
            loaded = self.load_override_fn(self.version.path, list(self.spec.effective_tags))
            return _override.OverriddenModel(loaded, self.version, self._tensor_names,
                                             self.spec.model_path)
        # On GPU workers: memory growth on, and each shared copy pinned to its own GPU.
        with _devices.placement(self.spec.share_across_processes) as device:
            return ServingModel(self.spec, self.version,
                                live=self.spec.poll_interval_secs is not None, device=device,
                                plan=self.plan)

    def validator(self) -> Validator:
        """Built from the version the plan was read from (a base path has no saved_model.pb)."""
        return self._validator

    def model_copies(self) -> int:
        """Copies per machine when shared: as configured, else one per visible GPU.

        Beam asks this on the worker (in ``setup``), so the GPUs counted are the worker's.
        """
        gpus = _devices.visible_gpus() if self.spec.share_across_processes else []
        return _devices.default_model_copies(
            self.spec.model_copies, self.spec.share_across_processes, gpus)

    def update_model_path(self, model_path: str) -> SavedModelBackend:
        return SavedModelBackend(self.spec.replace(model_path=model_path),
                                 self.load_override_fn)

    def __repr__(self) -> str:
        names = ",".join(s.name for s in self.plan.signatures)
        return f"{self.spec.model_path}, {self.plan.operation.value}:{names}"


def validator(model_path: str, tags: tuple[str, ...], plan: SignaturePlan, *,
              strict_casts: bool = False) -> Validator:
    """The validator of ``plan``, with feature rules from the SavedModel's graph if it reads."""
    meta_graph = None
    if plan.feed is not Feed.TENSORS:
        try:
            meta_graph = _files.select_meta_graph(_files.read_saved_model(model_path),
                                                  tuple(tags), model_path)
        except (ConfigurationError, OSError):
            # The rules only sharpen messages and catch bad input early; without the
            # graph the type checks still run.
            meta_graph = None
    return Validator.for_plan(plan, meta_graph=meta_graph, strict_casts=strict_casts)


def resolve(spec: ModelSpec) -> ModelVersion:
    """A plain SavedModel directory, or the version a base path serves at build time."""
    if _versions.is_saved_model_dir(spec.model_path):
        for name in ("model_name", "version_policy", "poll_interval_secs"):
            if getattr(spec, name) is not None:
                raise ConfigurationError(
                    f"ModelSpec.{name} applies to a versioned base path (numbered version "
                    f"folders), but {spec.model_path!r} is a SavedModel directory. Point "
                    f"model_path at the folder holding the versions, or unset {name}."
                )
        return ModelVersion(path=spec.model_path)
    if not _versions.numeric_children(spec.model_path):
        return ModelVersion(path=spec.model_path)  # plan_signatures explains
    return _versions.resolve(spec.model_path,
                             spec.version_policy or _versions.VersionPolicy.latest(),
                             spec.model_name)
