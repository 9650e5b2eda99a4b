"""``apache_beam.ml.inference.tensorflow_inference``'s module path, pointed at beam_infer.

``from beam_infer.tensorflow_inference import TFModelHandlerNumpy`` (or ``from beam_infer
import tensorflow_inference``) is Beam's import with one word changed. This module *is*
``beam_infer._beam_api`` (it replaces itself in ``sys.modules``), so replacing
``tensorflow_inference._load_model`` in a test, as Beam's own tests do, replaces the
function the handlers call.
"""

import sys

from beam_infer import _beam_api

sys.modules[__name__] = _beam_api
