"""The run report: one self-contained HTML page (`report.html`) about a `codekiln run` folder.

`build_report(folder)` reads whatever parts of the run folder exist (ARCHITECTURE.md, "Run folder") and
writes FOLDER/report.html: the config and the pipeline's stages, a data card (the corpus funnel, what each
filter removed with examples, languages, licenses, PII), tokenizer compression against references, training
curves, evaluation beside published anchors, the fine-tune's before and after, and the exported files with
how to use them. A part that is missing gives its section one "not run" line; a part that cannot be read
gives a note in red; neither stops the page.

The page loads nothing: its charts are inline SVG drawn by codekiln.report.svg, its styles inline, no
script, and a Content-Security-Policy that forbids any request, so it works offline and as an attachment.
It sits on top with cli.py and pipeline.py and reads only the on-disk contracts of the stages.
"""

from __future__ import annotations

from pathlib import Path

from codekiln.errors import UserError
from codekiln.files import atomic_write_bytes
from codekiln.report import data_card, overview, sections
from codekiln.report.html import Html, note, page, prose, tag
from codekiln.report.inputs import RunFolder

REPORT_FILE = "report.html"
# (id, navigation label, heading, renderer): the page's sections in order. Tests check every id is on the page.
SECTIONS = [
    ("overview", "Overview", "What ran", overview.render_overview),
    ("data", "Data", "Data card", data_card.render),
    ("tokenizer", "Tokenizer", "Tokenizer", sections.render_tokenizer),
    ("training", "Training", "Training", sections.render_training),
    ("evaluation", "Evaluation", "Evaluation", sections.render_evaluation),
    ("finetune", "Fine-tune", "Fine-tune", sections.render_finetune),
    ("exports", "Exports", "Exported model", overview.render_exports),
]
# What an unexpected shape in a part's JSON raises while a section reads it: the section then says so,
# and the rest of the page still renders. Anything else is a bug and raises.
_SHAPE_ERRORS = (KeyError, TypeError, ValueError, IndexError, AttributeError, OSError, ZeroDivisionError)


def render(folder: str | Path) -> tuple[str, list[str]]:
    """(the page's HTML, problems met while reading the folder) for a run folder."""
    run = RunFolder(folder)
    if not run.path.is_dir():
        raise UserError(f"{run.path} is not a directory (give the run folder that `codekiln run --out` wrote)")
    name = run.path.resolve().name
    parts = []
    for ident, _, heading, renderer in SECTIONS:
        before = len(run.problems)
        try:
            body = renderer(run)
        except _SHAPE_ERRORS as exc:
            run.problems.append(f"{heading}: {type(exc).__name__}: {exc}")
            body = Html("")
        problems = [note(f"could not read {p}", cls="problem") for p in run.problems[before:]]
        parts.append(tag("section", tag("h2", heading), *problems, body, id=ident))
    from codekiln import __version__

    html = page(f"codekiln run: {name}", f"Run report for {run.path}",
                [(ident, label) for ident, label, _, _ in SECTIONS], parts,
                prose(f"Written by codekiln {__version__}; `codekiln report {run.path}` rebuilds it. A self-contained "
                      "page: nothing on it is loaded from elsewhere."))
    return html, run.problems


def build_report(folder: str | Path, out: str | Path | None = None) -> Path:
    """Write the run folder's report (FOLDER/report.html unless `out` says where) and return its path."""
    html, _ = render(folder)
    path = Path(out) if out is not None else Path(folder) / REPORT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, html.encode("utf-8"))
    return path


__all__ = ["REPORT_FILE", "SECTIONS", "build_report", "render"]
