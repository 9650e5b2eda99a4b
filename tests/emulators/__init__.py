"""Local stand-ins for Google Cloud services, started by pytest fixtures.

Each module is a pytest plugin (registered in ``tests/conftest.py``) with a session
fixture that starts one emulator on a free loopback port and stops it at the end, and a
function fixture that points the test's environment at it:

* ``gcs`` (``tests.emulators.gcs``): gcp-storage-emulator, ``STORAGE_EMULATOR_HOST``;
* ``pubsub`` (``tests.emulators.pubsub``): the Cloud SDK's Pub/Sub emulator jar,
  ``PUBSUB_EMULATOR_HOST``;
* ``local_bigquery`` / ``bigquery_beam`` (``tests.emulators.bigquery``): local-bigquery in
  a Python 3.13 venv, with Beam's BigQuery clients pointed at it (in-process runners).

Tests that use them carry the ``emulators`` marker. A missing GCS or Pub/Sub emulator
fails the test with what to install; a missing Python 3.13 skips the BigQuery tests with
a message naming what was looked for.
"""
