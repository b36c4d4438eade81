"""docs/equations.md cannot rot: every test id it names exists, every docstring citation resolves.

The page names the tests that reproduce each equation as pytest node ids in backquotes
(`tests/test_x.py::test_name[case]`, or without ``[case]`` for every case of a test). Collecting
the files it names with pytest itself, in a subprocess, checks each id against the real
parametrization rather than against a guess at how pytest spells it.
"""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "equations.md"
NODE_ID = re.compile(r"`(tests/[\w/]+\.py::[^`\s]+)`")
EQ_ROW = re.compile(r"^\| \((\d+)\) \|", re.MULTILINE)
# what docstrings cited before docs/equations.md existed: files and article numbers outside the repository
OUTSIDE = re.compile(r"EQUATIONS\.md|seeds/|(?i:\bdocuments? 00\d)")
CITATION = re.compile(r"docs/equations\.md,\s+eqs?\.\s+\(([\d\)\(, –and]+)\)")


def named_ids(text: str) -> list[str]:
    return sorted(set(NODE_ID.findall(text)))


def collected_ids(files: list[str]) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-o", "addopts=", "-p", "no:cacheprovider", *files],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return {line.strip() for line in out.stdout.splitlines() if "::" in line}


def missing_ids(named: list[str], collected: set[str]) -> list[str]:
    bare = {c.split("[", 1)[0] for c in collected}
    return [n for n in named if n not in collected and ("[" in n or n not in bare)]


def test_every_test_id_on_the_page_exists():
    named = named_ids(PAGE.read_text(encoding="utf-8"))
    assert len(named) >= 40, f"expected the page to name its tests, found {len(named)}"
    files = sorted({n.split("::", 1)[0] for n in named})
    for f in files:
        assert (ROOT / f).is_file(), f"docs/equations.md names {f}, which does not exist"
    missing = missing_ids(named, collected_ids(files))
    assert not missing, f"docs/equations.md names tests that do not exist: {missing}"


def test_the_check_catches_a_renamed_case():
    collected = {"tests/test_a.py::test_f[x]", "tests/test_a.py::test_g"}
    assert missing_ids(["tests/test_a.py::test_f[x]", "tests/test_a.py::test_f", "tests/test_a.py::test_g"], collected) == []
    assert missing_ids(["tests/test_a.py::test_f[y]", "tests/test_a.py::test_h"], collected) == [
        "tests/test_a.py::test_f[y]",
        "tests/test_a.py::test_h",
    ]


def test_equations_are_numbered_once_in_order():
    numbers = [int(n) for n in EQ_ROW.findall(PAGE.read_text(encoding="utf-8"))]
    assert numbers == list(range(1, len(numbers) + 1)), numbers


def test_docstring_citations_resolve():
    numbers = {int(n) for n in EQ_ROW.findall(PAGE.read_text(encoding="utf-8"))}
    cited = 0
    for path in sorted((ROOT / "gradflow").glob("*.py")):
        text = path.read_text(encoding="utf-8")
        bad = OUTSIDE.search(text)
        assert bad is None, f"{path.name} cites {bad.group(0)!r}: cite docs/equations.md or a paper"
        for match in CITATION.finditer(text):
            for n in re.findall(r"\d+", match.group(1)):
                assert int(n) in numbers, f"{path.name} cites docs/equations.md eq. ({n}), which the page lacks"
                cited += 1
    assert cited >= 15, f"expected the docstrings to cite docs/equations.md, found {cited} citations"
