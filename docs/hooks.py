"""Build-time helpers of the documentation site (declared in mkdocs.yml).

- The mkdocs hook :func:`on_page_markdown` replaces ``<!-- registry:methods -->`` and
  ``<!-- registry:metrics -->`` with tables built from the registry, so the method and metric
  tables are the registry's and never written by hand.
- The griffe extension :class:`RstRoles` turns the reStructuredText roles of the docstrings
  (``:func:`~seethrough.api.explain```) into code spans (`explain`) and ``::`` literal-block
  openers into a colon, so the API reference reads as Markdown.
"""

from __future__ import annotations

import inspect
import re
from typing import Any

import griffe

METHODS_MARKER = "<!-- registry:methods -->"
METRICS_MARKER = "<!-- registry:metrics -->"

_ROLE = re.compile(r":(?:func|class|meth|mod|data|attr|exc|obj|const|py:\w+):`(~?)([^`]+)`")
_LITERAL_OPENER = re.compile(r"(?<=\S)::$", re.M)


def rst_to_markdown(text: str) -> str:
    """``text`` with reStructuredText roles as code spans and ``::`` openers as ``:``.

    A role's target keeps its last dotted part when written with ``~`` (as Sphinx shows it);
    the indented block after an opener is a Markdown code block as it stands.
    """

    def code(match: re.Match[str]) -> str:
        short, target = match.groups()
        return f"`{target.rsplit('.', 1)[-1] if short else target}`"

    return _LITERAL_OPENER.sub(":", _ROLE.sub(code, text))


class RstRoles(griffe.Extension):
    """Griffe extension: every docstring through :func:`rst_to_markdown`."""

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        """Rewrite ``obj``'s docstring in place."""
        if obj.docstring is not None:
            obj.docstring.value = rst_to_markdown(obj.docstring.value)

    def on_module(self, *, mod: griffe.Module, **kwargs: Any) -> None:
        """The same for a module (the top package gets no ``on_object`` event); idempotent."""
        self.on_object(obj=mod)


def _cell(text: object) -> str:
    """``text`` safe inside a Markdown table cell (no pipe, no line break)."""
    return " ".join(str(text).replace("|", "\\|").split())


def _value(value: object) -> str:
    """A default as a user would write it in Python, as a code span."""
    shown = f'"{value}"' if isinstance(value, str) else repr(value)
    return f"`{shown}`"


def _allowed(param: Any) -> str:
    """What a parameter accepts: its choices, its range, or its type."""
    choices = getattr(param, "choices", None)
    if choices:
        return ", ".join(_value(c) for c in choices)
    kind = getattr(getattr(param, "type", None), "__name__", "")
    bounds = [
        f"{sign} {bound}"
        for sign, bound in (
            (">=", getattr(param, "min", None)),
            ("<=", getattr(param, "max", None)),
        )
        if bound is not None
    ]
    kind = "" if kind == "object" else kind
    return _cell(" ".join([kind, ", ".join(bounds)]).strip()) or "see help"


def _needs(info: Any) -> str:
    needs = [
        n for n, flag in (("gradients", info.needs_gradients), ("layer", info.needs_layer)) if flag
    ]
    return ", ".join(needs) or "-"


def methods_markdown() -> str:
    """The methods of the registry: one overview table (name, method, family, needs, paper,
    summary), then one section per method with its docstring and a table of its parameters
    (default, accepted values, help)."""
    from seethrough import list_methods

    methods = list_methods()
    lines = [
        "| name | method | family | needs | paper | what it computes |",
        "|---|---|---|---|---|---|",
    ]
    for m in methods:
        lines.append(
            f"| [`{m.name}`](#{_anchor(m.name)}) | {_cell(m.title)} | {m.family} | {_needs(m)} "
            f"| {_cell(m.paper)} | {_cell(rst_to_markdown(m.summary))} |"
        )
    for m in methods:
        doc = rst_to_markdown(inspect.getdoc(m.cls) or m.summary)
        lines += [
            "",
            f"### `{m.name}`: {m.title} {{#{_anchor(m.name)}}}",
            "",
            f"*{m.family}* family; needs {_needs(m)}; "
            f"{'class-specific' if m.class_specific else 'the same map for every class'}.",
            "",
            doc,
            "",
        ]
        if m.params:
            lines += ["| parameter | default | accepts | help |", "|---|---|---|---|"]
            lines += [
                f"| `{p.name}` | {_value(p.default)} | {_allowed(p)} | {_cell(p.help)} |"
                for p in m.params
            ]
        else:
            lines.append("No parameters.")
    return "\n".join(lines) + "\n"


def _anchor(name: str) -> str:
    """A stable HTML id for a method's section (``gradcam++`` -> ``method-gradcampp``)."""
    return "method-" + re.sub(r"[^a-z0-9_-]", "", name.replace("+", "p").lower())


def metrics_markdown() -> str:
    """The metrics of the registry as one table: name, title, category, better, needs, range."""
    from seethrough import list_metrics

    lines = [
        "| name | metric | category | better | needs | range | what it measures |",
        "|---|---|---|---|---|---|---|",
    ]
    for m in list_metrics():
        better = "higher" if m.higher_is_better else "lower"
        bounds = "-" if m.range is None else f"[{m.range[0]}, {m.range[1]}]"
        lines.append(
            f"| `{m.name}` | {_cell(m.title)} | {m.category} | {better} "
            f"| {', '.join(m.needs) or '-'} | {bounds} | {_cell(rst_to_markdown(m.summary))} |"
        )
    return "\n".join(lines) + "\n"


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    """mkdocs hook: fill the registry markers of a page (a marker alone on its line; one quoted
    in text or code stays as it is)."""
    for marker, build in ((METHODS_MARKER, methods_markdown), (METRICS_MARKER, metrics_markdown)):
        line = re.compile(rf"^{re.escape(marker)}[ \t]*$", re.M)
        if line.search(markdown):
            table = build()
            markdown = line.sub(lambda _, table=table: table, markdown)
    return markdown
