"""Shared fixtures for the test suite."""

from __future__ import annotations

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
