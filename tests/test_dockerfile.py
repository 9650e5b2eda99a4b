"""The GPU worker image must match what jobs are submitted with (no Docker engine here:
this checks the Dockerfile against the installed versions and the requirements)."""

from __future__ import annotations

import pathlib
import re
import sys

import apache_beam
import tensorflow as tf

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def test_base_image_matches_the_submitting_python_and_beam():
    version = re.search(r"^ARG BEAM_VERSION=(\S+)$", DOCKERFILE, re.M).group(1)
    assert version == apache_beam.__version__
    base = re.search(r"^FROM (\S+)$", DOCKERFILE, re.M).group(1)
    assert base == f"apache/beam_python{sys.version_info.major}.{sys.version_info.minor}" \
                   "_sdk:${BEAM_VERSION}"
    assert 'ENTRYPOINT ["/opt/apache/beam/boot"]' in DOCKERFILE


def test_image_installs_the_pinned_requirements_and_a_gpu_tensorflow_of_the_same_minor():
    assert "pip install -r requirements.txt" in DOCKERFILE
    pin = re.search(r'"tensorflow\[and-cuda\]>=(\d+\.\d+),<(\d+\.\d+)"', DOCKERFILE)
    assert pin, "the image must install TensorFlow with its CUDA libraries"
    assert tf.__version__.startswith(pin.group(1) + ".")
    requirement = re.search(r"^tensorflow>=(\S+),<(\S+)$",
                            (ROOT / "requirements.txt").read_text(), re.M)
    assert (pin.group(1), pin.group(2)) == (requirement.group(1), requirement.group(2))
    assert "COPY beam_infer ./beam_infer" in DOCKERFILE
    assert "COPY beam_infer_cli.py ./" in DOCKERFILE  # the console script's module
    # The jobs reach the workers pickled by value; the image claims no "pipelines" name.
    assert "COPY pipelines" not in DOCKERFILE
