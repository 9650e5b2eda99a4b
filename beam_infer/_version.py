"""The package version, in one place: ``beam_infer.__version__`` and setup.py read it."""

__version__ = "0.2.0"
