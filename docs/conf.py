"""Sphinx configuration: the API reference from the docstrings, the README's guides as pages.

Build: ``pip install -e ".[docs]" && sphinx-build -W -b html docs docs/_build/html``.

The guide pages are cut from README.md (one page per ``##`` section), examples/README.md and
benchmarks/stability.md when the build starts, into docs/guide/ (not committed), so the README stays
the one copy of their text; links between them are rewritten to point at the pages.
"""

from __future__ import annotations

import pathlib
import re
import sys

DOCS = pathlib.Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))

import gradflow  # noqa: E402

project = "gradflow"
author = "the gradflow authors"
release = gradflow.__version__
version = release

extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.mathjax", "myst_parser"]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build"]
myst_enable_extensions = ["dollarmath"]
myst_heading_anchors = 3

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": False}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_custom_sections = [("Parity", "notes_style")]

html_theme = "furo"
html_title = f"gradflow {release}"

# ---------------------------------------------------------------------------- guide pages

# README section title -> (page, page title); sections sharing a page are joined in order.
README_PAGES = {
    "Set-up": ("start", "Getting started"),
    "A training step": ("start", "Getting started"),
    "API": ("modules", "API"),
    "When training blows up": ("blowups", "When training blows up"),
    "Optimizers and their parity": ("optimizers", "Optimizers and their parity"),
    "Learning-rate schedules": ("schedules", "Learning-rate schedules"),
    "Performance": ("performance", "Performance"),
    "Many devices": ("devices", "Many devices"),
    "Examples": ("examples", "Examples"),
    "Reliability": ("reliability", "Reliability"),
}

# link targets in the repository's markdown -> the page that holds them (relative to docs/guide/)
LINKS = {
    "docs/errors.md": "../errors.md",
    "docs/equations.md": "../equations.md",
    "benchmarks/stability.md": "stability.md",
    "../benchmarks/stability.md": "stability.md",
    "examples/README.md": "example_scripts.md",
    "#learning-rate-schedules": "schedules.md",
}


def _sections(text: str) -> list[tuple[str, str]]:
    """Split markdown at its ``## `` headings (outside code fences): [(title, body)]."""
    out, title, body, fenced = [], None, [], False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        if not fenced and line.startswith("## "):
            if title is not None:
                out.append((title, "\n".join(body)))
            title, body = line[3:].strip(), []
        elif title is not None:
            body.append(line)
    if title is not None:
        out.append((title, "\n".join(body)))
    return out


def _relink(text: str, images_from: str) -> str:
    for target, page in LINKS.items():
        text = text.replace(f"]({target})", f"]({page})")
    # images (docs/x.png from the root, ../docs/x.png from examples/) live one level up from docs/guide/
    text = re.sub(r"\]\(" + re.escape(images_from) + r"([\w.-]+\.png)\)", r"](../\1)", text)
    return text


def _write(name: str, text: str) -> None:
    path = DOCS / "guide" / f"{name}.md"
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")


def _build_guide_pages() -> None:
    (DOCS / "guide").mkdir(exist_ok=True)
    pages: dict[str, list[str]] = {}
    titles: dict[str, str] = {}
    for title, body in _sections((ROOT / "README.md").read_text(encoding="utf-8")):
        if title not in README_PAGES:
            raise RuntimeError(f"README.md section {title!r} has no page in docs/conf.py's README_PAGES")
        page, page_title = README_PAGES[title]
        titles[page] = page_title
        part = _relink(body.strip("\n"), "docs/")
        if len(pages.setdefault(page, [])) or title != page_title:
            part = f"## {title}\n\n{part}"
        pages[page].append(part)
    for page, parts in pages.items():
        _write(page, f"# {titles[page]}\n\n" + "\n\n".join(parts) + "\n")

    # examples/README.md: its links to scripts become code names (the scripts are not pages)
    ex = (ROOT / "examples" / "README.md").read_text(encoding="utf-8")
    ex = re.sub(r"\[(`[\w.]+\.py`)\]\([\w.]+\.py\)", r"\1", ex)
    ex = re.sub(r"\A# Examples\n", "# The example scripts\n", ex)  # "Examples" is the README's page
    _write("example_scripts", _relink(ex, "../docs/"))

    # benchmarks/stability.md: its ### headings become ## (a page's levels must not skip one)
    st = (ROOT / "benchmarks" / "stability.md").read_text(encoding="utf-8")
    _write("stability", re.sub(r"^### ", "## ", st, flags=re.M))


_build_guide_pages()


# ---------------------------------------------------------------------------- docstrings

# The docstrings are written to read as plain text (math in Unicode: |x|, ‖g‖, m_x, spike_ℓ). Two
# of their characters mean something else in reStructuredText: |x| is a substitution, and a word
# ending in _ is a link. Outside literal blocks and doctests, escape them.
_PIPE = re.compile(r"(?<!\\)\|")
_LINK_END = re.compile(r"(?<=\w)_(?=[^\w`]|$)|(?<=\w)_(?=[^\x00-\x7f])")
_ARXIV = re.compile(r"(?<![/\w])arXiv:(\d{4}\.\d{4,5})")


def _escape_plain_text(app, what, name, obj, options, lines):
    literal_indent, doctest = None, False
    for i, line in enumerate(lines):
        stripped = line.lstrip()
        indent = len(line) - len(stripped)
        if literal_indent is not None:
            if stripped and indent <= literal_indent:
                literal_indent = None
            else:
                continue
        doctest = stripped.startswith(">>>") or (doctest and bool(stripped))  # a doctest runs to a blank line
        if doctest:
            continue
        if "``" in line:  # inline literals: escape only outside them
            parts = line.split("``")
            parts[0::2] = [_LINK_END.sub(r"\\_", _PIPE.sub(r"\\|", p)) for p in parts[0::2]]
            lines[i] = "``".join(parts)
        else:
            lines[i] = _LINK_END.sub(r"\\_", _PIPE.sub(r"\\|", line))
        lines[i] = _ARXIV.sub(r"`arXiv:\1 <https://arxiv.org/abs/\1>`__", lines[i])
        if line.rstrip().endswith("::"):
            literal_indent = indent


def _literal_formula_blocks(app, what, name, obj, options, lines):
    """An indented block after a blank line in the description is a formula laid out in columns:
    show it as a literal block (as it reads in the source), not as a block quote."""
    out, prev_text, blank, in_block = [], None, False, False
    for i, line in enumerate(lines):
        stripped = line.lstrip()
        indent = len(line) - len(stripped)
        if indent == 0 and stripped.startswith((":", ".. ")):  # napoleon's fields: leave them as they are
            out.extend(lines[i:])
            break
        if stripped and indent > 0 and blank and not in_block and prev_text is not None:
            if not prev_text.rstrip().endswith("::") and not stripped.startswith((">>>", "- ", "* ")):
                out.extend(["::", ""])
            in_block = True
        if stripped and indent == 0:
            in_block, prev_text = False, line
        blank = not stripped
        out.append(line)
    lines[:] = out


def setup(app):
    app.connect("autodoc-process-docstring", _literal_formula_blocks)
    app.connect("autodoc-process-docstring", _escape_plain_text)
