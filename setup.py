"""Packaging for beam_infer. Dependencies live in requirements*.txt so pip, CI and
Dataflow's --requirements_file read the same pins."""

from __future__ import annotations

import pathlib

from setuptools import find_packages, setup

HERE = pathlib.Path(__file__).parent


def _requirements(name: str) -> list[str]:
    lines = (HERE / name).read_text().splitlines()
    return [line.strip() for line in lines
            if line.strip() and not line.startswith(("#", "-r"))]


setup(
    name="beam-infer",
    version="0.1.0",
    description="Apache Beam transforms that score data with TensorFlow SavedModels.",
    long_description=(HERE / "README.md").read_text(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11,<3.12",
    packages=find_packages(include=["beam_infer", "beam_infer.*", "pipelines", "pipelines.*"]),
    package_data={"pipelines": ["data/*"]},
    install_requires=_requirements("requirements.txt"),
    extras_require={"test": _requirements("requirements-test.txt")},
    entry_points={"console_scripts": ["beam-infer = beam_infer._cli:main"]},
)
