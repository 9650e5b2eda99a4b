"""Local stand-ins for Google Cloud services, started by pytest fixtures.

Each module is a pytest plugin (registered in ``tests/conftest.py``) with a session
fixture that starts one emulator on a free loopback port and stops it at the end, and a
function fixture that points the test's environment at it:

* ``gcs`` (``tests.emulators.gcs``): gcp-storage-emulator, ``STORAGE_EMULATOR_HOST``;
* ``pubsub`` (``tests.emulators.pubsub``): the Cloud SDK's Pub/Sub emulator jar,
  ``PUBSUB_EMULATOR_HOST``.

A missing emulator fails the test with what to install; nothing is skipped.
"""
