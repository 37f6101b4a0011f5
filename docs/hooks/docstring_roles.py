"""MkDocs hook: Sphinx roles in docstrings (``:func:`x```, ``:class:`~a.B```) become API links.

Our docstrings cite other objects with Sphinx roles; mkdocstrings renders them as the role's name followed by
inline code. This hook turns each into an mkdocs-autorefs reference: a link where the name is a documented object,
plain code where it is not (a relative name such as ``.head``), never a build warning.
"""

from __future__ import annotations

import re

ROLE = re.compile(r":(?:func|class|meth|mod|data|attr|exc|obj):<code>(~?)([\w.]+)</code>")


def _reference(match: re.Match) -> str:
    tilde, name = match.groups()
    shown = name.rsplit(".", 1)[-1] if tilde else name
    return f'<autoref identifier="{name.lstrip(".")}" optional><code>{shown}</code></autoref>'


def on_page_content(html: str, page, config, files) -> str:
    return ROLE.sub(_reference, html)
