"""HTML representations of xproda's report objects in notebooks (one helper for all).

:class:`~xproda.learning.trainer.TrainingReport`,
:class:`~xproda.sites.observations.report.CleaningReport` and
:class:`~xproda.io.writer.WriteReport` show as a small table of their key facts (and their
tables, if any) in Jupyter through ``_repr_html_``; their text ``repr`` is unchanged.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["html_report"]


def html_report(title: str, facts: Sequence[tuple[str, Any]],
                tables: Mapping[str, Any] | None = None, *, max_rows: int = 12) -> str:
    """An HTML block: a title, a two-column table of facts, then titled tables.

    Parameters
    ----------
    title : str
        Heading (the object's class and what it is about).
    facts : sequence of (str, object)
        Label and value; values are shown with ``str`` and escaped.
    tables : mapping of str to pandas.DataFrame, optional
        Tables shown below the facts (``DataFrame.to_html``, at most ``max_rows`` rows;
        empty ones are left out).
    max_rows : int, keyword-only, default 12

    Returns
    -------
    str
    """
    rows = "".join(f"<tr><th style='text-align:left'>{html.escape(str(k))}</th>"
                   f"<td style='text-align:left'>{html.escape(str(v))}</td></tr>"
                   for k, v in facts)
    parts = [f"<div class='xproda-report'><b>{html.escape(title)}</b>",
             f"<table>{rows}</table>"]
    for name, df in (tables or {}).items():
        if df is None or not len(df):
            continue
        more = f" (first {max_rows} of {len(df)})" if len(df) > max_rows else ""
        parts.append(f"<details><summary>{html.escape(name)}{more}</summary>"
                     f"{df.head(max_rows).to_html(index=False)}</details>")
    parts.append("</div>")
    return "".join(parts)
