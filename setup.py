"""Packaging for beam_infer. Dependencies live in requirements*.txt so pip, CI and
Dataflow's --requirements_file read the same pins; the version lives in
beam_infer/_version.py.

The distribution installs the ``beam_infer`` library and the ``beam-infer`` command
only. The runnable jobs in ``pipelines/`` stay in the checkout (``python -m
pipelines.keyed``) and reach remote workers pickled by value, so installing beam-infer
claims no generic top-level name such as ``pipelines`` (see docs/packaging.md).
"""

from __future__ import annotations

import pathlib
import re

from setuptools import find_packages, setup

HERE = pathlib.Path(__file__).parent
VERSION = re.search(r'^__version__ = "([^"]+)"$',
                    (HERE / "beam_infer" / "_version.py").read_text(), re.M).group(1)
# The project's public home: a placeholder until the repository's address is confirmed;
# change it here (one place) and in mkdocs.yml's repo_url.
REPOSITORY = "https://github.com/beam-infer/beam-infer"


def _requirements(name: str) -> list[str]:
    lines = (HERE / name).read_text().splitlines()
    requirements = [line.split("#", 1)[0].strip() for line in lines]
    return [r for r in requirements if r and not r.startswith("-r")]


setup(
    name="beam-infer",
    version=VERSION,
    description="Apache Beam transforms that score data with TensorFlow SavedModels: "
                "a drop-in for tfx-bsl's RunInference.",
    long_description=(HERE / "README.md").read_text(),
    long_description_content_type="text/markdown",
    author="The beam_infer authors",
    url=REPOSITORY,
    project_urls={
        "Documentation": f"{REPOSITORY}/tree/main/docs",
        "Source": REPOSITORY,
        "Changelog": f"{REPOSITORY}/blob/main/CHANGELOG.md",
        "Issues": f"{REPOSITORY}/issues",
    },
    license="Apache-2.0",
    license_files=["LICENSE"],
    keywords=["apache-beam", "tensorflow", "savedmodel", "inference", "batch-inference",
              "dataflow", "tfx-bsl", "runinference", "tensorflow-serving", "predictionlog"],
    classifiers=[
        "Development Status :: 4 - Beta",
        "Intended Audience :: Developers",
        "Intended Audience :: Science/Research",
        "License :: OSI Approved :: Apache Software License",
        "Operating System :: POSIX :: Linux",
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3 :: Only",
        "Programming Language :: Python :: 3.11",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
        "Topic :: Software Development :: Libraries :: Python Modules",
    ],
    python_requires=">=3.11,<3.12",
    packages=find_packages(include=["beam_infer", "beam_infer.*"]),
    py_modules=["beam_infer_cli"],
    install_requires=_requirements("requirements.txt"),
    extras_require={"test": _requirements("requirements-test.txt")},
    entry_points={"console_scripts": ["beam-infer = beam_infer_cli:main"]},
)
