"""The exceptions beam_infer raises.

Every error is a ``BeamInferError``; each message says what was wrong, what was
received and how to fix it, in at most ``_messages.MAX_MESSAGE_CHARS`` characters::

    BeamInferError
    ├── ConfigurationError (also ValueError)   raised while the pipeline is built
    │   ├── UnknownArgumentError (also          a keyword the class or function does
    │   │   TypeError)                          not take; suggests the closest names
    │   ├── ModelPathError (also                no SavedModel at the path (an OSError,
    │   │   FileNotFoundError)                  as tfx-bsl's loader raises)
    │   ├── TagsError                           no MetaGraph with the requested tags
    │   └── SignatureError                      unknown or unusable signature
    ├── ModelLoadError (also RuntimeError)      a worker could not load the model
    │   └── IncompatibleVersionError            a version that does not fit the plan
    │                                           the pipeline was built with
    ├── InputError (also ValueError)            an element the signature cannot take
    ├── TransientError                          a failure that may go away when the same
    │                                           call is made again (retried; e.g. a
    │                                           remote endpoint's 503)
    └── InferenceError (also RuntimeError)      an element failed and no dead-letter
                                                output was asked for; names its key,
                                                stage and reason
"""

from __future__ import annotations


class BeamInferError(Exception):
    """Base class of every error beam_infer raises."""


class ConfigurationError(BeamInferError, ValueError):
    """The transform was configured wrongly; raised while the pipeline is built."""


class UnknownArgumentError(ConfigurationError, TypeError):
    """A keyword argument that the class or function does not take.

    Also a ``TypeError``, which Python raises for an unexpected keyword, so code that
    catches that keeps working. The message suggests the closest valid names.
    """


class ModelPathError(ConfigurationError, FileNotFoundError):
    """The model path is missing or holds no SavedModel.

    Also a ``FileNotFoundError`` (an ``OSError``), as tfx-bsl's loader raises for the same
    mistake, so code written for tfx-bsl that catches ``OSError`` keeps working.
    """


class TagsError(ConfigurationError):
    """The SavedModel has no MetaGraph with the requested tag set."""


class SignatureError(ConfigurationError):
    """A requested signature is missing or cannot be served."""


class ModelLoadError(BeamInferError, RuntimeError):
    """A worker failed to copy or load the SavedModel."""


class IncompatibleVersionError(ModelLoadError):
    """A model version's signatures do not fit the ones the pipeline was built with.

    Raised on a worker instead of serving it; a newer version that does not fit is kept
    out like one that fails to load, and the serving version goes on.
    """


class InputError(BeamInferError, ValueError):
    """An element cannot be fed to the model's signature."""


class TransientError(BeamInferError):
    """A failure that may go away when the same call is made again.

    ``_retries`` retries model calls that raise it (with TensorFlow's own transient
    errors); a backend raises a subclass for failures worth retrying, e.g. a remote
    endpoint that answered 503 (``beam_infer.remote.RetryableRemoteError``).
    """


class InferenceError(BeamInferError, RuntimeError):
    """An element could not be scored and the transform has no dead-letter output.

    The message names the element's key (when it has one), the stage that failed and
    why. Ask for ``RunInference(spec).with_dead_letters()`` to route such elements to a
    second output instead of stopping the pipeline.
    """
