"""The version is defined once (gradflow.__version__) and the installed package's metadata agrees."""

from __future__ import annotations

import importlib.metadata
import pathlib
import re

import gradflow

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_version_is_the_installed_metadata_version():
    assert re.fullmatch(r"\d+\.\d+\.\d+(\.dev\d+|rc\d+)?", gradflow.__version__), gradflow.__version__
    assert importlib.metadata.version("gradflow") == gradflow.__version__


def test_pyproject_reads_the_version_from_the_package():
    text = (ROOT / "pyproject.toml").read_text()
    project = text.split("[project]", 1)[1].split("\n[", 1)[0]
    assert not re.search(r"^version\s*=", project, re.M), "pyproject.toml must not repeat the version"
    assert 'dynamic = ["version"]' in project
    assert 'version = { attr = "gradflow.__version__" }' in text
