"""Code the tests share that is not a test: model builders, pipeline helpers, harnesses.

``model_zoo`` builds the tiny SavedModels, ``publishing`` publishes versions TF Serving
style, ``beam_helpers`` reads pipeline outputs, ``object_store`` and ``remote_fs`` fake
remote filesystems, and ``portable`` runs a local job service and worker pool (a pytest
plugin, named in ``tests/conftest.py``'s ``pytest_plugins``). The cloud-service emulators
are fixtures of their own, in ``tests/emulators``.
"""
