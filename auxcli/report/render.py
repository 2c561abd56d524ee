"""Renderings of a `Report`: text and github (tabulate), latex (booktabs tabulars), csv, json.

Text and latex show percentages (80.64, as the study prints them); csv and json keep fractions, so they
can be read back without loss. json is `Report.to_dict()` verbatim: `json.loads` gives the same data.
"""

from __future__ import annotations

import csv
import io
import json
import re

from tabulate import tabulate

from auxcli.report.beyond import BeyondTable
from auxcli.report.tables import GENERIC_METRICS, GenericRow, Report, Row, Table

FORMATS = ("text", "github", "latex", "csv", "json")
EXTENSIONS = {"text": "txt", "github": "md", "latex": "tex", "csv": "csv", "json": "json"}


def render(report: Report, fmt: str) -> str:
    """The whole report in one format, ending with a newline."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")
    return {"text": _text, "github": _github, "latex": _latex, "csv": _csv, "json": _json}[fmt](report)


# ---------------------------------------------------------------------------------------------- cells

def pct(value: float | None, std: float | None = None, pm: str = "±") -> str:
    """0.8064, 0.003 -> '80.64 ± 0.30'; None -> '-'."""
    if value is None:
        return "-"
    text = f"{value * 100:.2f}"
    return text if std is None else f"{text} {pm} {std * 100:.2f}"


def signed(delta: float | None) -> str:
    return "-" if delta is None else f"{delta:+.2f}"


def _sources(row: Row) -> str:
    by_spec: dict[str, list[str]] = {}
    for src in row.sources:
        ids = by_spec.setdefault(src["spec"] or "?", [])
        if src["run_id"]:
            ids.append(src["run_id"][:8])
    return ", ".join(f"{spec} ({' '.join(ids)})" if ids else spec for spec, ids in by_spec.items()) or "-"


def _note(missing: str | None, excluded: dict[str, int]) -> str:
    parts = [missing] if missing else []
    parts += [f"{count} {status}" for status, count in excluded.items()]
    return "; ".join(parts)


def table_grid(table: Table, pm: str = "±", note: bool = True) -> tuple[list[str], list[list[str]]]:
    """Headers and cells of one study table, percentages."""
    headers = ["row"] + (["protocol", "source"] if table.transfer else [])
    for col in table.columns:
        headers += [f"{col['label']} %", f"paper {col['name']}", f"delta {col['name']}"]
    headers += ["n"] + (["note"] if note else [])
    body = []
    for row in table.rows:
        cells = [row.label] + ([row.protocol or "-", _sources(row)] if table.transfer else [])
        for col in table.columns:
            name = col["name"]
            cells += [pct(row.values[name], row.std[name], pm),
                      pct(row.paper[name], (row.paper_std or {}).get(name), pm), signed(row.delta_pp[name])]
        cells += [str(row.n)] + ([_note(row.missing_command, row.excluded)] if note else [])
        body.append(cells)
    return headers, body


def generic_grid(rows: list[GenericRow], pm: str = "±", note: bool = True) -> tuple[list[str], list[list[str]]]:
    headers = ["spec", "task", "model"] + [f"{label} %" for _, label in GENERIC_METRICS] + ["n"]
    headers += ["note"] if note else []
    body = []
    for row in rows:
        cells = [row.spec_name, row.task, row.model]
        cells += [pct(row.values[m], row.std[m], pm) for m, _ in GENERIC_METRICS] + [str(row.n)]
        body.append(cells + ([_note(row.missing_command, row.excluded)] if note else []))
    return headers, body


def beyond_grid(table: BeyondTable, pm: str = "±", note: bool = True) -> tuple[list[str], list[list[str]]]:
    """Headers and cells of a "beyond the study" table: each spec beside its backbone's plain run."""
    headers = ["row", "test acc %", "plain run", "plain test acc %", "delta vs plain", "n", "n plain"]
    headers += ["note"] if note else []
    body = []
    for row in table.rows:
        cells = [row.label, pct(row.value, row.std, pm), row.baseline_spec or "-",
                 pct(row.baseline, row.baseline_std, pm), signed(row.delta_pp), str(row.n), str(row.baseline_n)]
        body.append(cells + ([_note(row.missing_command, {})] if note else []))
    return headers, body


def footer_lines(report: Report) -> list[str]:
    f = report.footer
    lines = [
        ("Values: accuracy in % at the final epoch, mean ± sample standard deviation over seeds (ddof=1); "
         "no ± when n=1. n counts FINISHED runs, the latest per (spec, seed). delta = ours - paper, "
         "percentage points."),
        f"Paper: {f['paper']}.",
    ]
    if report.beyond:
        lines.append("Beyond the study: no paper numbers; delta vs plain = ours - the same backbone's plain run "
                     "(final_test_acc), percentage points. SLA's two rows read one run (single and aggregated "
                     "inference).")
    if f.get("excluded"):
        counts = ", ".join(f"{c} {s}" for s, c in f["excluded"].items())
        names = ", ".join(f"{r['run_name']} ({r['status']})" for r in f["excluded_runs"][:10])
        more = " ..." if len(f["excluded_runs"]) > 10 else ""
        lines.append(f"Left out (not finished): {counts}: {names}{more}.")
    if f.get("other_settings"):
        lines.append(f"{f['other_settings']} runs of other settings not shown; `--all-settings` lists them "
                     "(results of another identity than the reported spec's, see README).")
        for r in f.get("other_settings_runs", []):
            differs = "; ".join(r["differs"]) or "settings differ"
            lines.append(f"  {r['run_name']} ({r['status']}, run {r['run_id']}): {differs}")
    if f.get("superseded"):
        lines.append(f"Left out: {f['superseded']} older finished run(s) of a seed that was run again.")
    if f.get("report_runs"):
        lines.append(f"Ignored: {f['report_runs']} auxcli-report/auxcli-analysis run(s) "
                     "(tag auxcli.report=true or auxcli.analysis=true).")
    if f.get("untagged"):
        lines.append(f"Ignored: {f['untagged']} run(s) without the auxcli.spec_name tag.")
    if "tracking_uri" in f:
        lines.append(f"Store: {f['tracking_uri']}, experiment {f.get('experiment')!r}.")
    if "source" in f:
        lines.append(f"Read from {f['source']}.")
    return lines


# ---------------------------------------------------------------------------------------------- formats

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]<>|#~])")


def one_line(text: str) -> str:
    """Free text (run names, tags, paths from the store) on one line: control characters become spaces,
    so no name can start a new table row, a new LaTeX line outside a comment, or a markdown block."""
    return _CONTROL.sub(" ", text)


def markdown_escape(text: str) -> str:
    """`one_line` plus a backslash before every character with a meaning in GitHub markdown tables."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", one_line(text))


def _sections(report: Report, fmt: str, heading: str) -> str:
    clean = markdown_escape if fmt == "github" else one_line

    def grid(headers: list[str], body: list[list[str]]) -> str:
        return tabulate([[clean(c) for c in row] for row in body], [clean(h) for h in headers], tablefmt=fmt,
                        disable_numparse=True)

    parts = []
    for table in report.tables:
        parts.append(f"{heading}{clean(table.title)}\n\n{grid(*table_grid(table))}")
    for beyond in report.beyond:
        parts.append(f"{heading}{clean(beyond.title)}\n\n{grid(*beyond_grid(beyond))}")
    if report.generic:
        parts.append(f"{heading}Other specs\n\n{grid(*generic_grid(report.generic))}")
    if not parts:
        parts.append("No runs.")
    return "\n\n".join(parts + ["\n".join(clean(line) for line in footer_lines(report))]) + "\n"


def _text(report: Report) -> str:
    return _sections(report, "simple", "")


def _github(report: Report) -> str:
    return _sections(report, "github", "### ")


_LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_ESCAPES.get(ch, ch) for ch in one_line(text))


def _tabular(title: str, headers: list[str], body: list[list[str]], text_columns: int) -> str:
    def cell(text: str) -> str:
        return latex_escape(text).replace("±", r"$\pm$")

    spec = "l" * text_columns + "r" * (len(headers) - text_columns)
    lines = [f"% {latex_escape(title)}", f"\\begin{{tabular}}{{{spec}}}", r"\toprule",
             " & ".join(cell(h) for h in headers) + r" \\", r"\midrule"]
    lines += [" & ".join(cell(c) for c in row) + r" \\" for row in body]
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines)


def _latex(report: Report) -> str:
    parts = ["% auxcli report: booktabs tabulars (\\usepackage{booktabs}); accuracies in %"]
    for table in report.tables:
        headers, body = table_grid(table, note=False)
        parts.append(_tabular(table.title, headers, body, 3 if table.transfer else 1))
    for beyond in report.beyond:
        headers, body = beyond_grid(beyond, note=False)
        parts.append(_tabular(beyond.title, headers, body, 1))
    if report.generic:
        headers, body = generic_grid(report.generic, note=False)
        parts.append(_tabular("Other specs", headers, body, 3))
    # escaped although a comment: a name must not end the comment line or reach any later tool as TeX
    parts.append("\n".join("% " + latex_escape(line) for line in footer_lines(report)))
    return "\n\n".join(parts) + "\n"


CSV_FIELDS = ("table", "suite", "key", "label", "spec_name", "column", "metric", "value", "std", "n", "paper",
              "paper_std", "delta_pp", "protocol", "source", "run_ids", "missing_command",
              "baseline", "baseline_n")  # beyond: source is the plain run, delta_pp ours - plain


def _csv(report: Report) -> str:
    """One row per (table row, column), fractions; the generic table as table `generic`."""
    out = io.StringIO()
    writer = csv.DictWriter(out, CSV_FIELDS, lineterminator="\n")
    writer.writeheader()

    def blank(value: object) -> object:
        return "" if value is None else value

    for table in report.tables:
        for row in table.rows:
            for col in table.columns:
                name = col["name"]
                writer.writerow({
                    "table": table.id, "suite": table.suite, "key": row.key, "label": row.label,
                    "spec_name": blank(row.spec_name), "column": name, "metric": col["metric"],
                    "value": blank(row.values[name]), "std": blank(row.std[name]), "n": row.n,
                    "paper": row.paper[name], "paper_std": blank((row.paper_std or {}).get(name)),
                    "delta_pp": blank(row.delta_pp[name]), "protocol": blank(row.protocol),
                    "source": " ".join(f"{s['spec']}:{s['run_id'] or ''}" for s in row.sources),
                    "run_ids": " ".join(row.run_ids), "missing_command": blank(row.missing_command),
                })
    for beyond in report.beyond:
        for row in beyond.rows:
            writer.writerow({
                "table": beyond.id, "suite": beyond.suite, "key": row.key, "label": row.label,
                "spec_name": blank(row.spec_name), "column": "test", "metric": row.metric,
                "value": blank(row.value), "std": blank(row.std), "n": row.n,
                "delta_pp": blank(row.delta_pp), "source": blank(row.baseline_spec),
                "baseline": blank(row.baseline), "baseline_n": row.baseline_n,
                "run_ids": " ".join(row.run_ids + row.baseline_run_ids),
                "missing_command": blank(row.missing_command),
            })
    for row in report.generic:
        for metric, label in GENERIC_METRICS:
            writer.writerow({
                "table": "generic", "suite": "", "key": row.spec_name, "label": row.task,
                "spec_name": row.spec_name, "column": label, "metric": metric,
                "value": blank(row.values[metric]), "std": blank(row.std[metric]), "n": row.n,
                "run_ids": " ".join(row.run_ids), "missing_command": blank(row.missing_command),
            })
    return out.getvalue()


def _json(report: Report) -> str:
    return json.dumps(report.to_dict(), indent=2, allow_nan=False) + "\n"
