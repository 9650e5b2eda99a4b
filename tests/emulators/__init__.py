"""Local stand-ins for the cloud services the jobs use, started by pytest fixtures.

Each module is a pytest plugin, registered from ``tests/conftest.py`` with ``pytest_plugins``.
Servers listen on free loopback ports and stop when the session ends; tests that use them
carry the ``emulators`` marker.
"""
