"""The SavedModel backend: a TensorFlow SavedModel loaded in each worker process.

It implements the seam in ``beam_infer._backend`` (``SavedModelBackend`` is the
``Backend``, ``_serving.ServingModel`` the ``Servable``); everything else in scoring is
backend-neutral. One module per concern:

* ``_backend``: ``SavedModelBackend``, what the handler is built with;
* ``_files``: ``saved_model.pb`` read from any Beam filesystem, MetaGraph, signatures;
* ``_versions``: TF Serving-style numbered versions, completeness, version policies;
* ``_compatibility``: which versions fit the signatures the pipeline was built with;
* ``_serving``: ``ServingModel``, the served version of a worker, hot-swapped;
* ``_loading``: ``LoadedModel``, one version copied to local disk, loaded and warmed up;
* ``_model_cache``: safe local copies of remote models;
* ``_warmup``: TF Serving warm-up request files, read and written;
* ``_devices``: GPU memory growth and one GPU per shared copy;
* ``_override``: models that tfx-bsl's ``load_override_fn`` loads.
"""

from beam_infer.saved_model._backend import SavedModelBackend

__all__ = ["SavedModelBackend"]
