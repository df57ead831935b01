"""One table model for everything matprobe prints or writes, rendered to rich, Markdown,
HTML, LaTeX, CSV or JSON.

A `Table` holds raw values (numbers stay numbers) plus, per column, a display name, a
unit, a one-line description (the report's glossary) and a formatter. Text renderers
(rich, Markdown, HTML, LaTeX) show the formatted strings; CSV and JSON carry the raw
values, so nothing is lost to rounding. An interval is one cell holding a (low, high)
pair: it is shown as ``[low, high]`` and written as two columns ``<key>_low``,
``<key>_high``; a (value, low, high) triple is shown as ``value [low, high]`` and
written as ``<key>``, ``<key>_low``, ``<key>_high``. A `OneSided` pair or triple (an
interval of which only the lower end is a statement) is shown as ``≥ low`` or
``value [≥ low]`` and written like any other.

Machine formats (CSV, JSON) follow one rule, whatever the command:

- CSV is ONE rectangular table that ``pandas.read_csv`` parses: a command that shows several
  tables writes its main (first) one, and says on stderr that ``--format json`` holds them all
  (sections of different columns stacked in one CSV stream parse silently as one wrong frame).
- JSON holds every table: one document per table (title, name, columns with their units and
  descriptions, rows, footnotes), a list of them when there are several.
- Numbers are numbers at full precision, never display strings; a result that has a tidy form
  of its own (`ChainResult.frame()`, a sweep's table, ...) sets it as the display table's
  `machine` table, so ``--format csv`` has the same columns as the file ``--out x.csv`` writes:
  MI intervals as ``ci_low`` / ``ci_high`` with their ``bound`` (two-sided, or lower: one-sided)
  and a ``unit`` column beside the information-valued columns.

Renderers are plain functions (`to_markdown`, `to_html`, `to_latex`, `to_csv`,
`to_json`, `to_rich`); `render(table, fmt)` picks one by name, and `stdout_console()`
gives a console that never truncates or folds cells when stdout is not a terminal.
"""

from __future__ import annotations

import html
import io
import json
import math
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

FORMATS = ("table", "markdown", "csv", "json", "latex", "html")
FORMAT_HELP = ("Output: table (terminal), markdown, csv, json, latex or html. csv: one table (the main one) of "
               "raw numbers that pandas.read_csv parses, with the columns of the command's --out CSV where it has that option; "
               "json: every table.")
# Width given to rich when stdout is a pipe or file: wide enough that no table is cut.
_OFF_TTY_WIDTH = 100_000


@dataclass(frozen=True)
class Column:
    """A column: `key` in the rows, `name` shown as header, `unit` (nats, bits,
    probability, count, ...), `description` for the glossary, `fmt` a format spec
    ('.3f') or a callable value -> str, `align` left/right, `missing` what an absent value
    (None, NaN) shows, `machine_only` a column that CSV and JSON carry and the text formats
    leave out (what they show another way, e.g. an interval's `bound` as ``≥ x``), `whole` a
    column whose lists are values (JSON lists, e.g. a column's labels), not intervals to split."""

    key: str
    name: str | None = None
    unit: str = ""
    description: str = ""
    fmt: str | Callable[[Any], str] | None = None
    align: str | None = None
    missing: str = "-"
    machine_only: bool = False
    whole: bool = False

    @property
    def header(self) -> str:
        return self.name if self.name is not None else self.key

    def format(self, value: Any) -> str:
        if _missing(value):
            return self.missing
        if isinstance(value, OneSided) and not callable(self.fmt):
            low = _fmt_one(value[-2], self.fmt)
            return f"≥ {low}" if len(value) == 2 else f"{_fmt_one(value[0], self.fmt)} [≥ {low}]"
        if isinstance(value, (tuple, list)) and len(value) == 2 and not callable(self.fmt):
            return f"[{_fmt_one(value[0], self.fmt)}, {_fmt_one(value[1], self.fmt)}]"
        if isinstance(value, (tuple, list)) and len(value) == 3 and not callable(self.fmt):
            est, lo, hi = (_fmt_one(x, self.fmt) for x in value)
            return est if lo == "-" and hi == "-" else f"{est} [{lo}, {hi}]"
        if callable(self.fmt):
            return str(self.fmt(value))
        return _fmt_one(value, self.fmt)


class OneSided(tuple):
    """An interval (low, high) or (value, low, high) of which only the lower end is a
    statement: an MI estimate whose shortfall is not bounded (`mi.interface.ONE_SIDED`),
    whose upper end is only the entropy cap. Shown as ``≥ low`` (``value [≥ low]``), so a
    reader never takes the cap for the interval's upper limit; CSV and JSON keep both ends.

    >>> Column("i", fmt=".3f").format(OneSided((0.412, 0.38, 1.099)))
    '0.412 [≥ 0.380]'
    >>> Column("i", fmt=".3f").format(OneSided((0.38, 1.099)))
    '≥ 0.380'
    """

    def __new__(cls, values):
        values = tuple(values)
        if len(values) not in (2, 3):
            raise ValueError(f"OneSided holds (low, high) or (value, low, high), got {len(values)} values")
        return super().__new__(cls, values)


def shown_difference(side_a: dict, side_b: dict) -> float:
    """A's estimate minus B's as a reader subtracts them: each as shown, to 4 decimals (the note and
    `compare`'s table footnote say the same number; a user read +0.0165 in one and +0.0164 in the other).

    >>> f"{shown_difference({'estimate': 0.63524}, {'estimate': 0.61866}):+.4f}"  # 0.0166 unrounded
    '+0.0165'
    """
    return float(f"{side_a['estimate']:.4f}") - float(f"{side_b['estimate']:.4f}")


def interval_cell(values, bound: str | None):
    """The cell of an interval (low, high) or (value, low, high) with its `bound` as MI results
    record it ("lower": one-sided, `OneSided`; anything else: the plain tuple)."""
    return OneSided(values) if bound == "lower" else tuple(values)


class NotApplicable:
    """A cell whose value does not apply (a p-value where the test says nothing, see the table's
    note): shown as ``n/a``, written as None (CSV empty, JSON null)."""

    def __str__(self) -> str:
        return "n/a"

    __repr__ = __str__


NOT_APPLICABLE = NotApplicable()


def _missing(v) -> bool:
    if v is None:
        return True
    if isinstance(v, float) and math.isnan(v):
        return True
    if isinstance(v, (tuple, list)) and len(v) in (2, 3) and all(_missing(x) for x in v):
        return True
    return False


def _fmt_one(v, spec: str | None) -> str:
    if _missing(v):
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if spec and isinstance(v, (int, float)):
        return _unsigned_zero(format(v, spec))
    if isinstance(v, float):
        return f"{v:.4g}"
    if hasattr(v, "item") and not isinstance(v, str):  # numpy scalar
        return _fmt_one(v.item(), spec)
    return str(v)


def _unsigned_zero(text: str) -> str:
    """A value that rounds to zero shown without its sign: "-0.000" read as a negative excess
    or difference that the column's digits do not hold.

    >>> _unsigned_zero(format(-0.0002, ".3f")), _unsigned_zero(format(-0.002, ".3f"))
    ('0.000', '-0.002')
    >>> _unsigned_zero(format(float("-inf"), ".3f"))
    '-inf'
    """
    mantissa = text.split("e")[0].split("E")[0]
    if text.startswith("-") and "0" in mantissa and not any(ch in "123456789" for ch in mantissa):
        return text[1:]
    return text


@dataclass
class Table:
    """Rows of raw values under described columns, with a title and footnotes. `name`: a short
    machine name of the table (JSON's "name", e.g. "strata"); `machine`: the table CSV and JSON
    write in this one's place (the result's tidy form: raw numbers, `ci_low`/`ci_high`, `bound`,
    `unit`), where the displayed layout is not one (`machine_form`)."""

    columns: list[Column]
    rows: list[dict[str, Any]] = field(default_factory=list)
    title: str = ""
    footnotes: list[str] = field(default_factory=list)
    name: str = ""
    machine: "Table | None" = None

    def machine_form(self) -> "Table":
        """What CSV and JSON write for this table: its `machine` table, else itself."""
        return self.machine if self.machine is not None else self

    def __str__(self) -> str:
        # print(res.to_table()) showed the dataclass's repr, a screen of Column(...) (a study's first try)
        return to_markdown(self)

    def add_row(self, **values: Any) -> None:
        self.rows.append(values)

    def cells(self) -> list[list[str]]:
        """Display strings, row by row."""
        return [[c.format(r.get(c.key)) for c in self.columns] for r in self.rows]

    def headers(self) -> list[str]:
        return [c.header for c in self.columns]

    def records(self) -> list[dict[str, Any]]:
        """Raw values with intervals split into `<key>_low` / `<key>_high` (CSV and JSON)."""
        out = []
        for r in self.rows:
            rec: dict[str, Any] = {}
            for c in self.columns:
                v = r.get(c.key)
                if c.whole:
                    rec[c.key] = [_plain(x) for x in v] if isinstance(v, (tuple, list)) else _plain(v)
                elif isinstance(v, (tuple, list)) and len(v) == 2:
                    rec[f"{c.key}_low"], rec[f"{c.key}_high"] = (_plain(v[0]), _plain(v[1]))
                elif isinstance(v, (tuple, list)) and len(v) == 3:
                    rec[c.key], rec[f"{c.key}_low"], rec[f"{c.key}_high"] = (_plain(x) for x in v)
                else:
                    rec[c.key] = _plain(v)
            out.append(rec)
        return out

    def frame(self):
        """The raw values as a DataFrame (intervals in two columns)."""
        import pandas as pd

        return pd.DataFrame(self.records())

    def select(self, columns: Sequence[Column], title: str | None = None,
               footnotes: Sequence[str] | None = None) -> "Table":
        """The same rows under a subset of the columns."""
        return Table(list(columns), self.rows, self.title if title is None else title,
                     list(self.footnotes if footnotes is None else footnotes))

    def for_text(self) -> "Table":
        """The table the text formats show: without its `machine_only` columns."""
        keep = [c for c in self.columns if not c.machine_only]
        return self.select(keep) if len(keep) < len(self.columns) else self

    def without_empty_columns(self) -> "Table":
        """The table without the columns that are empty ("-" or "") in every row; a table
        without rows keeps its columns (they say what would be there)."""
        if not self.rows:
            return self
        keep = [c for c in self.columns
                if any(c.format(r.get(c.key)) not in ("", "-") for r in self.rows)]
        return self.select(keep) if len(keep) < len(self.columns) else self

    def glossary(self) -> list[tuple[str, str, str]]:
        """(header, unit, description) for every column that has a description."""
        return [(c.header, c.unit, c.description) for c in self.columns if c.description]

    @classmethod
    def from_frame(cls, frame, title: str = "", columns: Sequence[Column] | None = None,
                   footnotes: Iterable[str] = (), index: bool = False, name: str = "") -> "Table":
        """A table from a DataFrame (columns named after the frame's when not given)."""
        data = frame.reset_index() if index else frame
        known = {c.key: c for c in (columns or ())}
        cols = [known.get(str(k), Column(str(k))) for k in data.columns]
        rows = [dict(zip((str(k) for k in data.columns), vals))
                for vals in data.itertuples(index=False, name=None)]
        return cls(cols, rows, title, list(footnotes), name)


def _plain(v):
    """JSON/CSV-safe raw value: numpy scalars to Python, NaN and `NOT_APPLICABLE` to None."""
    if isinstance(v, NotApplicable):
        return None
    if hasattr(v, "item") and not isinstance(v, (str, bytes)):
        try:
            v = v.item()
        except (ValueError, AttributeError):
            pass
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _is_numeric_column(table: Table, col: Column) -> bool:
    vals = [r.get(col.key) for r in table.rows if not _missing(r.get(col.key))]
    return bool(vals) and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                              or (hasattr(v, "dtype") and v.dtype.kind in "iuf") for v in vals)


def _align(table: Table, col: Column) -> str:
    return col.align or ("right" if _is_numeric_column(table, col) else "left")


# ------------------------------------------------------------------------ Markdown


def md_escape(text: str) -> str:
    """A GFM table cell: `|` escaped (it would end the cell), newlines as spaces."""
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def to_markdown(table: Table, title: bool = True, footnotes: bool = True, align: bool = True) -> str:
    """GitHub-flavoured Markdown: bold title line, the table, footnotes as a list.
    Every cell, header cells included, has its `|` escaped. `align=False`: every column
    left-aligned (the report's tables)."""
    table = table.for_text()
    out = []
    if title and table.title:
        out += [f"**{table.title}**", ""]
    heads = [md_escape(h) for h in table.headers()]
    out.append("| " + " | ".join(heads) + " |")
    out.append("|" + "|".join("---:" if align and _align(table, c) == "right" else "---"
                              for c in table.columns) + "|")
    for row in table.cells():
        out.append("| " + " | ".join(md_escape(v) for v in row) + " |")
    if footnotes and table.footnotes:
        out.append("")
        out += [f"- {n}" for n in table.footnotes]
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------------ HTML


def to_html(table: Table, title: bool = True, footnotes: bool = True, compact: bool = False) -> str:
    """An HTML <table> (caption = title; footnotes in a <ul> after it), all text escaped.
    `compact`: header and cells only, on one line, styled by the page (the report's tables)."""
    table = table.for_text()
    esc = html.escape
    if compact:
        head = "".join(f"<th>{esc(h)}</th>" for h in table.headers())
        body = "".join("<tr>" + "".join(f"<td>{esc(v)}</td>" for v in row) + "</tr>" for row in table.cells())
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    out = ['<table class="matprobe">']
    if title and table.title:
        out.append(f"<caption>{esc(table.title)}</caption>")
    out.append("<thead><tr>" + "".join(
        f'<th title="{esc(c.description)}">{esc(c.header)}</th>' if c.description
        else f"<th>{esc(c.header)}</th>" for c in table.columns) + "</tr></thead>")
    out.append("<tbody>")
    aligns = [_align(table, c) for c in table.columns]
    for row in table.cells():
        out.append("<tr>" + "".join(
            f'<td style="text-align:right">{esc(v)}</td>' if a == "right" else f"<td>{esc(v)}</td>"
            for v, a in zip(row, aligns)) + "</tr>")
    out.append("</tbody></table>")
    if footnotes and table.footnotes:
        out.append("<ul class=\"footnotes\">" + "".join(f"<li>{esc(n)}</li>" for n in table.footnotes)
                   + "</ul>")
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------------ LaTeX

_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
        "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
        "<": "$<$", ">": "$>$", "|": r"\textbar{}"}

# Non-ASCII characters as plain LaTeX (no package beyond the kernel): pdflatex rejects a raw "≥".
# Math symbols are (math, text) pairs: the math is set as $...$, adjacent ones in one $...$.
_TEX_MATH = {"≥": r"\geq", "≤": r"\leq", "≠": r"\neq", "≈": r"\approx", "±": r"\pm", "×": r"\times",
             "·": r"\cdot", "−": "-", "→": r"\to", "←": r"\leftarrow", "⇒": r"\Rightarrow", "√": r"\surd",
             "∞": r"\infty", "⊥": r"\perp", "∪": r"\cup", "∩": r"\cap", "∈": r"\in", "∑": r"\sum",
             "∼": r"\sim", "≪": r"\ll", "≫": r"\gg", "°": r"^{\circ}", "′": "'", "∣": "|",
             "Î": r"\hat{I}", "Ĥ": r"\hat{H}", "Ŷ": r"\hat{Y}", "ŷ": r"\hat{y}", "ε": r"\varepsilon",
             "ϵ": r"\epsilon", "φ": r"\varphi", "ϕ": r"\phi", "ϑ": r"\vartheta", "ℓ": r"\ell"}
_TEX_TEXT = {"–": "--", "—": "---", "‘": "`", "’": "'", "“": "``", "”": "''", "…": r"\ldots{}", "§": r"\S{}",
             "¶": r"\P{}", "\u00a0": "~", "\u2009": r"\,", "\u202f": r"\,", "•": r"\textbullet{}",
             "©": r"\copyright{}", "ß": r"\ss{}", "æ": r"\ae{}", "Æ": r"\AE{}", "ø": r"\o{}",
             "Ø": r"\O{}", "å": r"\aa{}", "Å": r"\AA{}", "œ": r"\oe{}", "Œ": r"\OE{}", "ł": r"\l{}",
             "Ł": r"\L{}", "¿": r"?`", "¡": r"!`"}
_SUPERSCRIPTS = dict(zip("⁰¹²³⁴⁵⁶⁷⁸⁹⁺⁻⁼⁽⁾ⁿⁱ", "0123456789+-=()ni"))
_SUBSCRIPTS = dict(zip("₀₁₂₃₄₅₆₇₈₉₊₋₌₍₎", "0123456789+-=()"))
# text accents over a letter (a character that decomposes into letter + combining mark)
_TEX_ACCENTS = {"\u0301": "'", "\u0300": "`", "\u0302": "^", "\u0308": '"', "\u0303": "~", "\u0304": "=",
                "\u0307": ".", "\u030c": "v", "\u0306": "u", "\u030b": "H", "\u030a": "r", "\u0327": "c",
                "\u0328": "k"}
_GREEK_NAMES = {"lamda": "lambda"}
# capital Greek letters LaTeX has no command for: they are Latin capitals
_GREEK_LATIN = {"alpha": "A", "beta": "B", "epsilon": "E", "zeta": "Z", "eta": "H", "iota": "I", "kappa": "K",
                "mu": "M", "nu": "N", "omicron": "O", "rho": "P", "tau": "T", "chi": "X"}
# math accents of a combining mark after a symbol (R̂ -> \hat{R})
_MATH_ACCENTS = {"\u0302": "hat", "\u0303": "tilde", "\u0304": "bar", "\u0305": "bar", "\u0307": "dot",
                 "\u0308": "ddot", "\u0301": "acute", "\u0300": "grave", "\u030c": "check", "\u0306": "breve",
                 "\u20d7": "vec"}


def _tex_symbol(ch: str) -> tuple[str, str]:
    """("math", LaTeX math) or ("text", LaTeX text) of one non-ASCII character."""
    import unicodedata

    if ch in _TEX_MATH:
        return "math", _TEX_MATH[ch]
    if ch in _TEX_TEXT:
        return "text", _TEX_TEXT[ch]
    if ch in _SUPERSCRIPTS:
        return "math", "^{" + _SUPERSCRIPTS[ch] + "}"
    if ch in _SUBSCRIPTS:
        return "math", "_{" + _SUBSCRIPTS[ch] + "}"
    name = unicodedata.name(ch, "").split()
    if name[:2] == ["GREEK", "SMALL"] and len(name) == 4 or name[:2] == ["GREEK", "CAPITAL"] and len(name) == 4:
        letter = _GREEK_NAMES.get(name[-1].lower(), name[-1].lower())
        if name[1] == "CAPITAL":
            if letter in _GREEK_LATIN:
                return "text", _GREEK_LATIN[letter]
            return "math", "\\" + letter.capitalize()
        return ("text", "o") if letter == "omicron" else ("math", "\\" + letter)
    decomposed = unicodedata.normalize("NFD", ch)
    if len(decomposed) == 2 and decomposed[0].isascii() and decomposed[1] in _TEX_ACCENTS:
        base = decomposed[0]
        return "text", "\\" + _TEX_ACCENTS[decomposed[1]] + "{" + _TEX.get(base, base) + "}"
    compat = unicodedata.normalize("NFKD", ch)
    if compat.isascii() and compat.strip():
        return "text", "".join(_TEX.get(c, c) for c in compat)
    return "text", f"[U+{ord(ch):04X}]"


def tex_escape(text: str) -> str:
    r"""Text as LaTeX that pdflatex compiles with no package: the specials escaped (``%`` -> ``\%``,
    ``_`` -> ``\_``, ...) and every non-ASCII character as plain ASCII LaTeX: math symbols in math
    (``≥`` -> ``$\geq$``, ``Î`` -> ``$\hat{I}$``, ``Δ`` -> ``$\Delta$``, ``10⁻¹`` -> ``10$^{-1}$``),
    dashes and accents as LaTeX writes them (``–`` -> ``--``, ``é`` -> ``\'{e}``); a character with no
    such form is written ``[U+XXXX]``.

    >>> print(tex_escape("≥ 0.38 ± 0.1, 95% of x_1, R̂"))
    $\geq$ 0.38 $\pm$ 0.1, 95\% of x\_1, $\hat{R}$
    """
    import unicodedata

    out: list[str] = []
    math_run: list[str] = []

    def flush() -> None:
        if math_run:
            out.append("$" + "".join(_join_math(math_run)) + "$")
            math_run.clear()

    for ch in unicodedata.normalize("NFC", str(text)):
        if ch.isascii():
            flush()
            out.append(_TEX.get(ch, ch))
        elif unicodedata.combining(ch):
            accent = _MATH_ACCENTS.get(ch)
            if accent and math_run:
                math_run[-1] = f"\\{accent}{{{math_run[-1]}}}"
            elif accent and out and len(out[-1]) == 1 and out[-1].isalnum():
                math_run.append(f"\\{accent}{{{out.pop()}}}")
            else:
                flush()
                out.append(f"[U+{ord(ch):04X}]")
        else:
            kind, tex = _tex_symbol(ch)
            if kind == "math":
                math_run.append(tex)
            else:
                flush()
                out.append(tex)
    flush()
    return "".join(out)


def _join_math(parts: list[str]) -> list[str]:
    """Adjacent math pieces in one formula: superscripts (subscripts) merged into one ``^{...}``
    (``_{...}``, a double one is an error), a control word followed by a letter kept apart."""
    merged: list[str] = []
    for part in parts:
        if merged and part[:2] in ("^{", "_{") and merged[-1][:2] == part[:2] and merged[-1].endswith("}"):
            merged[-1] = merged[-1][:-1] + part[2:]
        elif merged and merged[-1][-1:].isalpha() and merged[-1].startswith("\\") and part[:1].isalpha():
            merged.append(" " + part)
        else:
            merged.append(part)
    return merged


def tex_comment(text: str) -> str:
    """A LaTeX comment line (``% ...``) of `text` in ASCII: its non-ASCII characters as `tex_escape`
    writes them, one comment line per line of text."""
    import re

    def ascii_line(line: str) -> str:  # a letter before a combining mark goes with it (R̂)
        return re.sub(r"[A-Za-z0-9]?[^\x00-\x7f]+", lambda m: tex_escape(m.group()), line)

    return "\n".join("% " + ascii_line(line) for line in str(text).split("\n"))


def to_latex(table: Table, title: bool = True, footnotes: bool = True) -> str:
    """A LaTeX table environment (booktabs-free: \\hline only), every cell escaped."""
    table = table.for_text()
    spec = "".join("r" if _align(table, c) == "right" else "l" for c in table.columns)
    out = [r"\begin{table}[t]", r"\centering"]
    if title and table.title:
        out.append(r"\caption{" + tex_escape(table.title) + "}")
    out += [r"\begin{tabular}{" + spec + "}", r"\hline",
            " & ".join(tex_escape(h) for h in table.headers()) + r" \\", r"\hline"]
    for row in table.cells():
        out.append(" & ".join(tex_escape(v) for v in row) + r" \\")
    out += [r"\hline", r"\end{tabular}"]
    if footnotes and table.footnotes:
        out.append(r"\par\footnotesize " + r" \\ ".join(tex_escape(n) for n in table.footnotes))
    out.append(r"\end{table}")
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------------ CSV / JSON


def to_csv(table: Table) -> str:
    """The table's `machine_form`: raw values (full precision), intervals as two columns; no
    title or footnotes."""
    import csv

    table = table.machine_form()
    records = table.records()
    keys: list[str] = []
    for rec in records:
        keys += [k for k in rec if k not in keys]
    if not records:
        keys = [c.key for c in table.columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    writer.writeheader()
    for rec in records:
        writer.writerow({k: ("" if v is None else repr(v) if isinstance(v, float) else v)
                         for k, v in rec.items()})
    return buf.getvalue()


def table_document(table: Table) -> dict:
    """The JSON form of the table's `machine_form`: title, name (when it has one), columns (key,
    name, unit, description), rows of raw values, footnotes."""
    table = table.machine_form()
    return {"title": table.title, **({"name": table.name} if table.name else {}),
            "columns": [{"key": c.key, "name": c.header, "unit": c.unit, "description": c.description}
                        for c in table.columns],
            "rows": table.records(), "footnotes": list(table.footnotes)}


def to_json(table: Table | Sequence[Table]) -> str:
    doc = ([table_document(t) for t in table] if isinstance(table, (list, tuple))
           else table_document(table))
    return json.dumps(doc, indent=2, default=str) + "\n"


# ------------------------------------------------------------------------ rich


def to_rich(table: Table, widths: Sequence[int] | None = None, title: bool = True):
    """A rich Table. Numbers and intervals never fold (a cut number misleads). With `widths`
    (`fit_widths`), text columns get those widths and wrap at spaces, so the table fits a
    terminal; a word longer than its column folds."""
    table = table.for_text()
    from rich.table import Table as RichTable

    rt = RichTable(title=(table.title or None) if title else None, title_justify="left",
                   caption=("\n".join(table.footnotes) or None) if title else None, caption_justify="left")
    for j, c in enumerate(table.columns):
        if widths is None:
            rt.add_column(c.header, justify=_align(table, c), no_wrap=True)
        else:  # a number's column is at least as wide as its values: only its header can wrap
            rt.add_column(c.header, justify=_align(table, c), no_wrap=False, overflow="fold", width=widths[j])
    for row in table.cells():
        rt.add_row(*row)
    return rt


# Terminal layout (`show`): a box-drawn rich table spends 3 characters per column (two of
# padding, one rule) and 1 more for the left rule. A wrapped text column keeps at least its
# longest word (up to LONG_WORD characters: longer ones, such as paths, fold) and at least
# WRAP_FLOOR characters, or its own width if narrower, so wrapped text stays readable.
WRAP_FLOOR = 12
LONG_WORD = 30
MAX_KEY_SHARE = 0.5  # repeated row-label columns take at most this share of the width


def _wrappable(table: Table, col: Column) -> bool:
    """Text columns wrap; numbers, intervals and short codes do not."""
    if _is_numeric_column(table, col):
        return False
    values = [r.get(col.key) for r in table.rows]
    if any(isinstance(v, (tuple, list)) for v in values):
        return False  # intervals and estimates with intervals
    return True


def _cell_width(text: str) -> int:
    from rich.cells import cell_len

    return max((cell_len(line) for line in str(text).split("\n")), default=0)


def _column_widths(table: Table) -> list[tuple[int, int]]:
    """(natural width, narrowest width) of each column's content, header included."""
    cells = table.cells()
    out = []
    for j, c in enumerate(table.columns):
        natural = max([_cell_width(c.header)] + [_cell_width(row[j]) for row in cells])
        if _wrappable(table, c):
            word = max([_cell_width(w) for row in cells for w in str(row[j]).split()]
                       + [_cell_width(w) for w in c.header.split()] + [0])
            narrow = min(natural, max(WRAP_FLOOR, min(word, LONG_WORD)))
        else:  # numbers and intervals stay whole; the header may wrap at its spaces
            narrow = max([_cell_width(w) for w in c.header.split()] + [_cell_width(row[j]) for row in cells])
        out.append((natural, narrow))
    return out


def fit_widths(table: Table, width: int) -> list[int]:
    """Content width of each column so the table is at most `width` wide (when it can be):
    numbers keep theirs; text columns start at their narrowest and share what is left,
    the narrowest first (water filling), none beyond its natural width."""
    table = table.for_text()
    natural_narrow = _column_widths(table)
    widths = [n for _, n in natural_narrow]
    spare = width - table_width(widths)
    text = [j for j, c in enumerate(table.columns) if _wrappable(table, c)]
    for j, (natural, narrow) in enumerate(natural_narrow):  # unwrapped headers first: they are short
        if j not in text and natural - narrow <= spare:
            widths[j], spare = natural, spare - (natural - narrow)
    while spare > 0:
        short = [j for j in text if widths[j] < natural_narrow[j][0]]
        if not short:
            break
        share = max(spare // len(short), 1)
        for j in sorted(short, key=lambda j: natural_narrow[j][0] - widths[j]):
            add = min(share, natural_narrow[j][0] - widths[j], spare)
            widths[j] += add
            spare -= add
            if spare <= 0:
                break
    return widths


def table_width(widths: Sequence[int]) -> int:
    """Characters a box-drawn rich table needs for columns of these content widths."""
    return sum(widths) + 3 * len(widths) + 1


def fit_columns(table: Table, width: int | None) -> list[Table]:
    """The table as one or more tables that each fit `width` characters (None: no limit).

    Empty columns are left out. Text columns may wrap (down to WRAP_FLOOR characters);
    when even that is too wide, the columns are dealt into consecutive tables that repeat
    the leading row-label columns (the first text columns, up to MAX_KEY_SHARE of the
    width), so every value is shown whole and each row stays identifiable. A single
    column wider than the terminal on its own (a long unbroken value) is still shown: its
    words fold rather than being cut.
    """
    table = table.for_text()
    table = table.without_empty_columns()
    if width is None or not table.columns:
        return [table]
    widths = _column_widths(table)
    if table_width([n for _, n in widths]) <= width:
        return [table]
    # row-label columns: the leading text columns, within MAX_KEY_SHARE of the width
    keys: list[int] = []
    for j, c in enumerate(table.columns):
        if not _wrappable(table, c) or (keys and table_width(
                [widths[k][1] for k in keys + [j]]) > MAX_KEY_SHARE * width):
            break
        keys.append(j)
    if len(keys) == len(table.columns):  # all text: keep the first as the label
        keys = keys[:1]
    rest = [j for j in range(len(table.columns)) if j not in keys]
    groups: list[list[int]] = []
    for j in rest:
        if groups and table_width([widths[k][1] for k in keys + groups[-1] + [j]]) <= width:
            groups[-1].append(j)
        else:
            groups.append([j])
    parts = []
    for i, group in enumerate(groups):
        cols = [table.columns[k] for k in keys + group]
        last = i == len(groups) - 1
        title = table.title if i == 0 else (f"{table.title} (continued)" if table.title else "")
        parts.append(table.select(cols, title=title, footnotes=table.footnotes if last else []))
    return parts


def render(table: Table | Sequence[Table], fmt: str) -> str:
    """Text of one table (or several, in order) in `fmt` (not 'table', which is rich). CSV is one
    table, the first (main) one: several CSV tables in one stream do not parse as one
    (`csv_left_out` names the rest); JSON holds them all."""
    tables = list(table) if isinstance(table, (list, tuple)) else [table]
    if fmt == "json":
        return to_json(tables if len(tables) > 1 else tables[0])
    if fmt == "csv":
        return to_csv(tables[0])
    fn = {"markdown": to_markdown, "md": to_markdown, "html": to_html, "latex": to_latex,
          "tex": to_latex, "csv": to_csv}.get(fmt)
    if fn is None:
        raise ValueError(f"format {fmt!r}: use one of {', '.join(FORMATS)}")
    return "\n".join(fn(t) for t in tables)


def csv_left_out(tables: Sequence[Table]) -> str | None:
    """The line that says, beside a CSV of the first of several tables, where the others are."""
    if len(tables) < 2:
        return None

    def label(t: Table) -> str:
        t = t.machine_form()
        return t.name or t.title or "untitled"

    rest = ", ".join(label(t) for t in tables[1:])
    return (f"note: --format csv writes one table, {label(tables[0])}; the other {len(tables) - 1} ({rest}) "
            f"are in --format json, which holds all {len(tables)}")


def check_format(fmt: str) -> str:
    from matprobe.errors import MatprobeError

    if fmt not in FORMATS:
        raise MatprobeError(f"--format {fmt}: use one of {', '.join(FORMATS)}")
    return fmt


def stdout_console(file=None):
    """A rich console on stdout; when it is not a terminal, wide enough that nothing is
    truncated or wrapped (pipes, tee, cluster logs, notebooks' captured output)."""
    from rich.console import Console

    stream = file or sys.stdout
    tty = hasattr(stream, "isatty") and stream.isatty()
    if tty:
        return Console(file=stream)
    return Console(file=stream, width=_OFF_TTY_WIDTH, soft_wrap=True, color_system=None,
                   highlight=False)


def show(tables: Table | Sequence[Table], fmt: str = "table", console=None,
         lines: Sequence[str] = ()) -> None:
    """Print tables (and plain lines after them, e.g. notes) in `fmt` to stdout.
    Machine formats (csv, json) print the tables alone, so the output parses: CSV the first
    table (a line on stderr names the others), JSON all of them (see the module's rule)."""
    tables = list(tables) if isinstance(tables, (list, tuple)) else [tables]
    console = console or stdout_console()
    if fmt == "table":
        from rich.text import Text

        # on a terminal every table fits its width (wrapped text, columns dealt into parts);
        # off a terminal (pipes, files, logs) nothing is wrapped or cut: full rows, one per line
        width = console.width if console.is_terminal else None
        for t in tables:
            for part in fit_columns(t, width):
                if part.title:
                    console.print(Text(part.title, style="italic"), soft_wrap=width is None)
                widths = fit_widths(part, width) if width is not None else None
                console.print(to_rich(part, widths, title=False), width=width or _OFF_TTY_WIDTH, crop=False)
                for note in part.footnotes:
                    console.print(Text(note, style="dim"), soft_wrap=width is None)
        for line in lines:  # wrapped at the terminal's width (words whole); whole lines off it
            console.print(line, highlight=False, soft_wrap=width is None, markup=False)
        return
    if fmt == "csv" and len(tables) > 1:
        lines = [csv_left_out(tables), *lines]
    if fmt in ("csv", "json") and lines:  # keep stdout parseable; the notes go to stderr
        sys.stderr.write("".join(f"{x}\n" for x in lines))
    # plain write: no rich markup parsing, no wrapping
    console.file.write(document(tables, fmt, () if fmt in ("csv", "json") else lines))
    console.file.flush()


def document(tables: Table | Sequence[Table], fmt: str, lines: Sequence[str] = ()) -> str:
    """The text `show` prints in a file format (not 'table'): the tables (`render`), then the note
    `lines` as the format writes a list (Markdown items, an HTML list, LaTeX comment lines; CSV and
    JSON take none). A command's ``--out FILE.md|.tex`` writes this, so the file is what
    ``--format markdown|latex`` prints."""
    tables = list(tables) if isinstance(tables, (list, tuple)) else [tables]
    text = render(tables, fmt)
    if fmt in ("markdown", "html", "latex") and lines:
        extra = list(lines)
        if fmt == "markdown":
            text += "\n" + "\n".join(f"- {md_escape(x)}" for x in extra) + "\n"
        elif fmt == "html":
            text += "<ul>" + "".join(f"<li>{html.escape(x)}</li>" for x in extra) + "</ul>\n"
        else:
            text += "\n".join(tex_comment(x) for x in extra) + "\n"
    return text


class StdoutConsole:
    """A console that follows the current sys.stdout (test runners swap it), built by
    `stdout_console` so that off a terminal nothing is cut to 80 columns."""

    def __init__(self):
        self._stream = None
        self._console = None

    def _get(self):
        if self._console is None or self._stream is not sys.stdout:
            self._stream = sys.stdout
            self._console = stdout_console(sys.stdout)
        return self._console

    def __getattr__(self, name):
        return getattr(self._get(), name)
