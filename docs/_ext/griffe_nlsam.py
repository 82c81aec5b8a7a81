"""A griffe extension for the API reference (mkdocs.yml loads it; it is no part of the package).

It changes what the reference shows, never the code:

* ``#:`` comments above a module constant (the Sphinx convention the code uses) become its
  docstring.
* The fields of ``TrainConfig`` are declared as ``_option(default, help)``: the help text, the
  same that ``nlsam train --help`` prints, becomes the field's docstring and the default its
  value.
* The layers a network module assigns in ``__init__`` (``self.conv1 = nn.Conv2d(...)``) are
  state, not API: undocumented ones are left out. So are undocumented fields that the class
  docstring already describes in its ``Attributes:`` section. Other class-level fields
  (``DataBundle``'s, say) stay.
* Sphinx roles in docstrings (``:func:`x` ``, ``:mod:`.registry` ``) are shown as code, reST
  simple tables (``=====  =====`` rulers) as Markdown tables, doctest examples (``>>>``) as
  code blocks, and a reST ``::`` before a code block as ``:``.
"""

from __future__ import annotations

import ast
import re

import griffe

_ROLE = re.compile(r":(?:py:)?(?:func|mod|class|meth|attr|data|exc|obj|const):`~?([^`]+)`")
_RULER = re.compile(r"^=+(?: +=+)+ *$")
_DOCTEST_FLAG = re.compile(r"\s*# doctest:.*$")
_LITERAL = re.compile(r"(\S)::$", re.MULTILINE)


class NlsamReference(griffe.Extension):
    def on_attribute_instance(self, *, node, attr, agent, **kwargs) -> None:
        if not attr.docstring:
            comment = _comment_above(getattr(agent, "code", ""), attr.lineno)
            if comment:
                attr.docstring = griffe.Docstring(comment, parent=attr)
        if isinstance(node, ast.AnnAssign) and isinstance(node.value, ast.Call):
            call = node.value
            if isinstance(call.func, ast.Name) and call.func.id == "_option":
                _describe_option(attr, call)

    def on_class_members(self, *, node, cls, agent, **kwargs) -> None:
        described = set()
        if cls.docstring:
            for section in griffe.parse_google(cls.docstring, warnings=False):
                if section.kind is griffe.DocstringSectionKind.attributes:
                    described.update(a.name for a in section.value)
        methods = [m for m in cls.members.values() if not m.is_alias and m.is_function]
        for name, member in list(cls.members.items()):
            if member.is_alias or not member.is_attribute or member.docstring:
                continue
            # first assigned inside a method (`self.x = ...`), or described by the class docstring;
            # removed, not marked private: the reference reaches most classes through aliases
            # (nlsam.attention.NLSAM), whose members would not see such a mark
            in_method = any(m.lineno <= member.lineno <= (m.endlineno or m.lineno) for m in methods)
            if in_method or name in described:
                cls.del_member(name)

    def on_package(self, *, pkg, **kwargs) -> None:
        _show_roles_as_code(pkg, set())


def _comment_above(code: str, lineno: int) -> str:
    lines = code.splitlines()
    found = []
    i = lineno - 2
    while 0 <= i < len(lines) and lines[i].strip().startswith("#:"):
        found.append(lines[i].strip()[2:].strip())
        i -= 1
    return " ".join(reversed(found))


def _describe_option(attr, call: ast.Call) -> None:
    help_node = call.args[1] if len(call.args) > 1 else next((k.value for k in call.keywords if k.arg == "help"), None)
    if isinstance(help_node, ast.Constant) and isinstance(help_node.value, str) and not attr.docstring:
        text = help_node.value
        attr.docstring = griffe.Docstring(text[:1].upper() + text[1:] + ".", parent=attr)
    factory = next((k.value for k in call.keywords if k.arg == "factory"), None)
    if factory is not None:
        attr.value = f"{ast.unparse(factory)}()"
    elif call.args:
        attr.value = ast.unparse(call.args[0])
    else:
        attr.value = "None"


def _show_roles_as_code(obj, seen: set) -> None:
    if obj.path in seen:
        return
    seen.add(obj.path)
    if obj.docstring:
        text = _ROLE.sub(r"`\1`", obj.docstring.value)
        obj.docstring.value = _LITERAL.sub(r"\1:", _doctest_blocks(_markdown_tables(text)))
    for member in obj.members.values():
        if not member.is_alias:
            _show_roles_as_code(member, seen)


def _markdown_tables(text: str) -> str:
    """reST simple tables (a ruler, the header, a ruler, the rows, a ruler) as Markdown tables.
    A line whose first cell is blank, or that follows a cell ending in a comma, continues the
    row above (the code's tables wrap long cells that way)."""
    lines = text.split("\n")
    out, i = [], 0
    while i < len(lines):
        rulers = [j for j in range(i, len(lines)) if _RULER.match(lines[j])][:3]
        if len(rulers) < 3 or rulers[0] != i:
            out.append(lines[i])
            i += 1
            continue
        spans = [m.span() for m in re.finditer(r"=+", lines[i])]

        def cells(line, spans=spans):
            return [
                line[a : (spans[k + 1][0] if k + 1 < len(spans) else len(line))].strip()
                for k, (a, _) in enumerate(spans)
            ]

        header = cells(" ".join(lines[i + 1 : rulers[1]]))
        rows = []
        for line in lines[rulers[1] + 1 : rulers[2]]:
            row = cells(line)
            if rows and (not row[0] or any(c.endswith(",") for c in rows[-1])):
                rows[-1] = [f"{a} {b}".strip() for a, b in zip(rows[-1], row)]
            else:
                rows.append(row)
        for row in [header, ["---"] * len(spans)] + rows:
            out.append("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |")
        i = rulers[2] + 1
    return "\n".join(out)


def _doctest_blocks(text: str) -> str:
    """Each run of ``>>>`` lines, with the output lines after them, as a fenced ``pycon`` block
    (without ``# doctest:`` flags); in a docstring they follow text with no blank line or
    carry its indentation, which Markdown would read as a quote or as more text."""
    lines = text.split("\n")
    out, i = [], 0
    while i < len(lines):
        if not lines[i].lstrip().startswith(">>>"):
            out.append(lines[i])
            i += 1
            continue
        indent = len(lines[i]) - len(lines[i].lstrip())
        block = []
        while i < len(lines) and lines[i].strip() and len(lines[i]) - len(lines[i].lstrip()) >= indent:
            block.append(_DOCTEST_FLAG.sub("", lines[i][indent:].rstrip()))
            i += 1
        out += ["", "```pycon", *block, "```", ""]
    return "\n".join(out)
