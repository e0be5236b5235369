"""Rich display in Jupyter: one helper, ``html_report``, that renders a title, lines of text and pandas
tables as HTML for every result's ``_repr_html_`` (``LmerResult``, ``StructuredResult``, ``BatchResult``:
``results/html.py``; ``EMMeans``).  It sits in this layer so that ``EMMeans`` may use it; each caller builds
its parts from the same frames and numbers its text ``repr``/summary uses.

Everything a user supplied (column names, factor levels, trait and data names, formulas) may contain
markup (``<script>``): lines are escaped with ``html.escape`` and tables are written by
``DataFrame.to_html(escape=True)``, so nothing from the data is ever read as HTML.  The plain text stays
the ``repr``.
"""

from __future__ import annotations

import html

MAX_ROWS = 20       # rows of a long table shown (the first and last ten, as pandas does)
MAX_COLUMNS = 20


def html_report(title: str, blocks) -> str:
    """``title`` and ``blocks`` as one HTML fragment.

    ``blocks`` is a sequence of ``str`` (a line of text), ``None`` (skipped) or ``(heading, frame)`` /
    ``(heading, frame, index)`` (a table under an optional heading; ``index=False`` hides the row labels).
    """
    parts = ['<div class="jaxlmm-result">', f"<p><b>{html.escape(str(title))}</b></p>"]
    lines: list[str] = []

    def flush():
        if lines:
            parts.append("<pre>" + "\n".join(html.escape(line) for line in lines) + "</pre>")
            lines.clear()

    for block in blocks:
        if block is None:
            continue
        if isinstance(block, str):
            lines.append(block)
            continue
        flush()
        heading, frame, *rest = block
        index = rest[0] if rest else True
        if heading:
            parts.append(f"<p>{html.escape(str(heading))}</p>")
        parts.append(frame.to_html(escape=True, index=index, na_rep="", max_rows=MAX_ROWS, max_cols=MAX_COLUMNS,
                                   border=0))
    flush()
    parts.append("</div>")
    return "\n".join(parts)


def emmeans_html(emm) -> str:
    """``EMMeans``: its table (as its ``repr``) and the df method and confidence level."""
    return html_report("Estimated marginal means", [(None, emm.table, False),
                                                    f"Degrees-of-freedom method: {emm.ddf}",
                                                    f"Confidence level used: {emm.level}"])
