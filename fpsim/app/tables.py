"""Plain-text tables for the command line and the reports."""

from __future__ import annotations

__all__ = ["format_table"]


def format_table(header: list[str], rows: list[list[str]], right=frozenset()) -> str:
    """Plain-text table: columns padded, those indexed in ``right`` right-aligned.

    Examples
    --------
    >>> print(format_table(["a", "n"], [["x", "1"], ["yy", "10"]], right={1}))
    a    n
    --  --
    x    1
    yy  10
    """
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) if rows else len(header[i])
              for i in range(len(header))]

    def line(cells):
        out = [c.rjust(w) if i in right else c.ljust(w)
               for i, (c, w) in enumerate(zip(cells, widths))]
        return "  ".join(out).rstrip()

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), sep, *(line(r) for r in rows)])
