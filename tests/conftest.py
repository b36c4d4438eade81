"""Shared fixtures for the test suite."""

from __future__ import annotations

import os

import jax
import pytest


@pytest.fixture
def x64():
    """Enable float64 for one test."""
    jax.config.update("jax_enable_x64", True)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", False)


# The 8-device tests run in a subprocess started by tests/test_sharding.py.
collect_ignore = [] if os.environ.get("GRADFLOW_MULTIDEVICE") else ["multidevice"]
