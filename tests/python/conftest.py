"""Fixtures of the Python package's tests (docs/python.md).

They run against the installed package (tools/test-python.sh builds a wheel and installs it in a
fresh venv); `reference` is the C++ side of the bit-for-bit checks, tests/python/reference_cli.cpp,
found through $QSL_PYTHON_REFERENCE or in build/tests.
"""
import os
import pathlib
import subprocess

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def reference():
    path = os.environ.get("QSL_PYTHON_REFERENCE") or str(ROOT / "build/tests/qsl-python-reference")
    if not os.path.isfile(path):
        pytest.fail(f"{path} is missing: build the C++ tests first (tools/build.sh)")

    def run(*args):
        done = subprocess.run([path, *map(str, args)], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    return run


@pytest.fixture
def rng():
    return np.random.default_rng(2026)


def gaussian(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)
