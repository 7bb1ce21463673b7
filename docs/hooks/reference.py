"""MkDocs hook: the reference pages, generated at build time from the code, so they cannot go stale.

- ``reference/cli.md``: every command and option of the argparse parser (``qkdissect.cli.build_parser``);
- ``reference/config.md``: every config key of ``workflow/schemas/config.schema.yaml`` (``qkdissect.configdoc``);
- ``reference/stores.md``: every store kind's variables, with their descriptions, long names and units, read from
  the store builders of ``qkdissect.stores.schema``;
- ``reference/errors.md``: every one-line error, from the places where errors are raised in ``src/qkdissect``;
- the claims table of ``appendix/index.md`` (the ``<!-- claims-table -->`` marker), from ``qkdissect.core.claims``.

Run alone (``python docs/hooks/reference.py OUT``) it writes the generated pages to OUT, for a look.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"
if str(SRC) not in sys.path:  # the checkout's package, whatever is installed
    sys.path.insert(0, str(SRC))

GENERATED = ("reference/cli.md", "reference/config.md", "reference/stores.md", "reference/errors.md")
NOTE = "<!-- generated at build time by docs/hooks/reference.py: edit the code it reads, not this page -->\n"


def _unref(text: str) -> str:
    """Square brackets outside code spans escaped: ``imagenet-hf[:/cache][@rev]`` is no reference link."""
    parts = text.split("`")
    parts[::2] = [re.sub(r"([\[\]])", r"\\\1", p) for p in parts[::2]]
    return "`".join(parts)


def _cell(text: object) -> str:
    return _unref(" ".join(str(text).split()).replace("|", "\\|"))


# --------------------------------------------------------------------------------------------------- the CLI
def _option(action: argparse.Action) -> tuple[str, str, str, str]:
    """(option, values, default, help) of one argument."""
    name = ", ".join(f"`{s}`" for s in action.option_strings) or f"`{action.metavar or action.dest}`"
    if action.choices is not None and not isinstance(action.choices, dict):
        values = " \\| ".join(f"`{c}`" for c in action.choices)
    elif action.nargs == 0:
        values = "flag"
    else:
        values = f"`{action.metavar or action.dest.upper()}`"
        if action.nargs in ("+", "*"):
            values += " ..."
    default = action.default
    shown = "" if default in (None, False, argparse.SUPPRESS) or action.nargs == 0 else f"`{default}`"
    if not action.option_strings:
        shown = "required" if action.nargs not in ("?", "*") else ""
    elif action.required:
        shown = "required"
    return name, values, shown, _cell(action.help or "")


def cli_page() -> str:
    from qkdissect.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {a.dest: a.help for a in sub._choices_actions}
    out = [NOTE, "# Command line\n", "`qkdissect COMMAND [options]`; `qkdissect COMMAND -h` prints a command's help.\n"]
    out.append("```text\n" + (parser.description or "").strip() + "\n```\n")
    out.append("Global options: " + "; ".join(
        f"`{'`, `'.join(a.option_strings)}`: {a.help}" for a in parser._actions
        if a.option_strings and a.help not in (None, argparse.SUPPRESS) and "-h" not in a.option_strings
    ) + ".\n")  # fmt: skip
    out.append("| command | what it does |\n|---|---|")
    out.extend(f"| [`{name}`](#{name}) | {_cell(helps.get(name, ''))} |" for name in sub.choices)
    out.append("")
    for name, cmd in sub.choices.items():
        out.append(f"## `qkdissect {name}` {{#{name}}}\n")
        out.append(_cell(helps.get(name, "")) + "\n")
        usage = " ".join(cmd.format_usage().split())
        out.append(f"```text\n{usage.removeprefix('usage: ')}\n```\n")
        rows = [_option(a) for a in cmd._actions if a.help != argparse.SUPPRESS and "-h" not in a.option_strings]
        if rows:
            out.append("| argument | values | default | description |\n|---|---|---|---|")
            out.extend(f"| {n} | {v} | {d} | {h} |" for n, v, d, h in rows)
            out.append("")
    return "\n".join(out)


# ------------------------------------------------------------------------------------------------ the config
def config_page() -> str:
    from qkdissect.configdoc import load, render

    text = render(load(ROOT / "workflow/schemas/config.schema.yaml"))
    text = re.sub(r"^<!--.*?-->\n", "", text)  # its own note names the command that writes config/README.md
    return NOTE + "\n".join(_unref(line) for line in text.splitlines()) + "\n"


# ------------------------------------------------------------------------------------------------ the stores
def _text(node: ast.AST | None, names: dict[str, Any]) -> str | None:
    """A string expression's text: constants, f-strings (``{...}`` for what is computed), ``+`` of those."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        parts = []
        for v in node.values:
            if isinstance(v, ast.Constant):
                parts.append(str(v.value))
            else:
                parts.append("{" + ast.unparse(v.value if isinstance(v, ast.FormattedValue) else v) + "}")
        return "".join(parts)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _text(node.left, names), _text(node.right, names)
        if left is None and right is None:
            return None
        return (left or "{" + ast.unparse(node.left) + "}") + (right or "{" + ast.unparse(node.right) + "}")
    if isinstance(node, ast.Name) and isinstance(names.get(node.id), str):
        return str(names[node.id])
    return None


def _dims(node: ast.AST, names: dict[str, Any]) -> str:
    if isinstance(node, ast.Name) and isinstance(names.get(node.id), tuple):
        return ", ".join(names[node.id])
    try:
        value = ast.literal_eval(node)
    except ValueError:
        return ast.unparse(node)
    return ", ".join(value) if isinstance(value, tuple) else str(value)


def _store_variables(fn: ast.FunctionDef, names: dict[str, Any]) -> Iterator[tuple[str, str, str]]:
    """(name, dims, description) of every variable a builder puts in ``variables`` (dict entries and
    ``variables[...] = ...``), in source order; f-string names with their placeholders."""
    names = dict(names)
    for node in ast.walk(fn):  # the builder's own tuples of dims (``dims = ("layer", ...)``)
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                continue
            if isinstance(value, tuple) and all(isinstance(v, str) for v in value):
                names[node.targets[0].id] = value
    for node in ast.walk(fn):
        pairs: list[tuple[ast.AST, ast.AST]] = []
        if isinstance(node, ast.Dict):
            pairs = [(k, v) for k, v in zip(node.keys, node.values, strict=True) if k is not None]
        elif isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Subscript):
            target = node.targets[0]
            if isinstance(target.value, ast.Name) and target.value.id == "variables":
                pairs = [(target.slice, node.value)]
        for key, value in pairs:
            name = _text(key, names)
            if name is None or not isinstance(value, ast.Tuple) or len(value.elts) != 3:
                continue
            desc = _text(value.elts[2], names) or ""
            yield name, _dims(value.elts[0], names), desc


def _dict_keys(node: ast.AST) -> Iterator[str]:
    """The string keys of a dict literal, those of ``**{...}`` and ``**({...} if ... else {})`` inside it too."""
    if isinstance(node, ast.IfExp):
        yield from _dict_keys(node.body)
        yield from _dict_keys(node.orelse)
    if not isinstance(node, ast.Dict):
        return
    for key, value in zip(node.keys, node.values, strict=True):
        if key is None:
            yield from _dict_keys(value)
        elif isinstance(key, ast.Constant) and isinstance(key.value, str):
            yield key.value


def store_attributes(builders: dict[str, ast.FunctionDef]) -> dict[str, list[str]]:
    """kind -> the root attributes the passes give its builder (the keys of the ``attrs`` they pass), read from
    every call of a builder in the package."""
    found: dict[str, list[str]] = {kind: [] for kind in builders}
    position = {k: [a.arg for a in fn.args.args].index("attrs") for k, fn in builders.items()
                if "attrs" in [a.arg for a in fn.args.args]}  # fmt: skip
    for path in sorted((SRC / "qkdissect").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for fn in (n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)):
            for call in (c for c in ast.walk(fn) if isinstance(c, ast.Call) and isinstance(c.func, ast.Name)):
                kind = call.func.id.removesuffix("_dataset")
                if kind not in position or call.func.id == fn.name:
                    continue
                arg = next((k.value for k in call.keywords if k.arg == "attrs"), None)
                if arg is None and len(call.args) > position[kind]:
                    arg = call.args[position[kind]]
                nodes: list[ast.AST] = [arg] if arg is not None else []
                if isinstance(arg, ast.Name):  # attrs = {...}; attrs["x"] = ...; attrs.update(...) in the function
                    for n in ast.walk(fn):
                        if isinstance(n, (ast.Assign, ast.AnnAssign)):
                            targets = n.targets if isinstance(n, ast.Assign) else [n.target]
                            for t in targets:
                                if isinstance(t, ast.Name) and t.id == arg.id and n.value is not None:
                                    nodes.append(n.value)
                                elif (
                                    isinstance(t, ast.Subscript)
                                    and isinstance(t.value, ast.Name)
                                    and t.value.id == arg.id
                                ):
                                    key = t.slice
                                    if isinstance(key, ast.Constant) and isinstance(key.value, str):
                                        found[kind].append(key.value)
                for node in nodes:
                    found[kind].extend(_dict_keys(node))
    return {kind: list(dict.fromkeys(keys)) for kind, keys in found.items()}


def stores_page() -> str:
    from qkdissect.stores import schema

    tree = ast.parse(Path(schema.__file__).read_text())
    names = {k: v for k, v in vars(schema).items() if isinstance(v, (str, tuple))}
    table = re.search(r"(=+ +=+\n.*?\n=+ +=+)", schema.__doc__ or "", re.S)
    overview = {}
    if table:
        for line in table.group(1).splitlines()[1:-1]:
            kind, _, rest = line.partition(" ")
            if kind.strip():
                last = kind.strip()
                overview[last] = rest.strip()
            else:
                overview[last] += " " + rest.strip()
    out = [NOTE, "# Stores\n"]
    out.append(
        "Every result is a Zarr v3 store that opens as an xarray Dataset (`qk.open_store(path)`, or plain "
        "`xr.open_zarr(path)`). All dims are named; indices (layer, head, mode, image) are 0-based. Every store "
        "has these attributes:\n\n"
        "| attribute | what |\n|---|---|\n"
        "| `qkdissect_schema` | `KIND/vN`: the store's kind and schema version |\n"
        "| `model_id` | the model's name in the run |\n"
        "| `provenance` | what it was made from: inputs and their sha256, config sections, code, parameters, "
        "device, timings ([Provenance](../explanation/provenance.md)) |\n"
        "| `qkdissect_content` | the sha256 of each of its files and root attributes, written last: an edited or "
        "missing chunk is refused ([Audit results](../how-to/audit.md)) |\n"
    )
    out.append(f"Modes stores also carry `conventions`: *{_cell(schema.CONVENTIONS)}*\n")
    builders = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.endswith("_dataset")]
    helpers = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    attributes = store_attributes({fn.name.removesuffix("_dataset"): fn for fn in builders})
    for fn in builders:
        kind = fn.name.removesuffix("_dataset")
        out.append(f"## `{kind}`\n")
        if kind in overview:
            out.append(_cell(re.sub(r"``", "`", overview[kind])) + "\n")
        rows = list(_store_variables(fn, names))
        for call in ast.walk(fn):  # variables added by a helper (e.g. grouped-query angles)
            name = call.func.id if isinstance(call, ast.Call) and isinstance(call.func, ast.Name) else ""
            if name in helpers and not name.endswith("_dataset"):
                rows += list(_store_variables(helpers[name], names))
        if rows:
            out.append("| variable | dims | long name | units | description |\n|---|---|---|---|---|")
            for name, dims, desc in dict.fromkeys(rows):
                long_name, units = schema.VARIABLE_ATTRS.get(name.split("{")[0], ("", ""))
                out.append(f"| `{name}` | {dims} | {_cell(long_name)} | `{units}` | {_cell(desc)} |")
            out.append("")
        else:
            out.append("Its variables are passed in by the pass that writes it (see its module); names below.\n")
        keys = [k for k in attributes.get(kind, []) if k not in ("model_id", "provenance")]
        if keys:
            out.append(
                "Attributes besides the common ones (those the passes name; a store may add more, e.g. its geometry): "
                + ", ".join(f"`{k}`" for k in keys)
                + ".\n"
            )
    out.append("## Every variable and coordinate\n")
    out.append("`long_name` and `units` of every name that occurs in a store (units `1`: dimensionless or a "
               "count; empty: an index, flag or text).\n")  # fmt: skip
    out.append("| name | long name | units |\n|---|---|---|")
    out.extend(f"| `{n}` | {_cell(ln)} | `{u}` |" for n, (ln, u) in sorted(schema.VARIABLE_ATTRS.items()))
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------------------------------------ the errors
FIX_VERBS = (
    "run",
    "give",
    "delete",
    "install",
    "use",
    "pass",
    "set",
    "name",
    "download",
    "restore",
    "accept",
    "remove",
    "check",
    "pick",
    "add",
    "choose",
    "put",
    "copy",
    "free",
    "raise",
    "rename",
    "keep",
    "make",
    "see",
    "edit",
    "move",
    "recompute",
    "drop",
    "get",
    "try",
    "call",
    "start",
    "ask",
    "change",
    "write",
    "select",
    "lower",
    "reduce",
    "split",
    "convert",
    "compute",
    "take",
    "place",
    "point",
    "fetch",
    "load",
    "resolve",
    "omit",
)
#: the fix of an error class whose message says only what is wrong
CLASS_FIXES = {
    "UnsupportedModelError": "use a supported family (`qkdissect models --families`); see Model specs and families",
    "_refuse": "use a supported family (`qkdissect models --families`); see Model specs and families",
    "WeightsUnavailableError": "get the weights where there is internet (the message says from where), or give a "
    "local file",
    "ParquetSourceError": "download the missing files: `hf download ILSVRC/imagenet-1k --repo-type dataset "
    "--include 'data/validation-*'`",
    "MaskDatasetError": "point the dataset at a complete copy, or ask for its first N items with `limit`",
    "ClassRefError": "name the class by its wnid, its index or a name no other class has",
    "EmptyImageSourceError": "point the image set at a folder that holds images",
    "CorpusError": "point the corpus at UTF-8 text (a .txt file or a folder of them), one passage per paragraph",
    "ImageDecodeError": "replace the file, or remove it from the folder",
}
#: exceptions that never reach a user: caught inside the package
INTERNAL = {"_Missing"}
_FIX = re.compile(r"(?i)(?:[:;.,] |\. |, or )((?:" + "|".join(FIX_VERBS) + r")\b.*)$", re.S)


def _raises(path: Path) -> Iterator[tuple[str, int, str, str]]:
    """(function, line, exception, message) of every raise of an exception built with a message."""
    tree = ast.parse(path.read_text())
    parents: dict[ast.AST, ast.AST] = {c: p for p in ast.walk(tree) for c in ast.iter_child_nodes(p)}
    for node in ast.walk(tree):
        call = node.exc if isinstance(node, ast.Raise) else node
        if not isinstance(call, ast.Call) or not call.args:
            continue
        func = call.func
        built = (  # an error class that builds its own message: super().__init__(f"...") in its __init__
            isinstance(func, ast.Attribute) and func.attr == "__init__" and isinstance(func.value, ast.Call)
            and isinstance(func.value.func, ast.Name) and func.value.func.id == "super"
        )  # fmt: skip
        if not (isinstance(node, ast.Raise) or built):
            continue
        message = _text(call.args[0], {})
        if not message or len(message) < 20:
            continue
        scope: ast.AST | None = node
        while scope is not None and not isinstance(scope, (ast.FunctionDef, ast.ClassDef)):
            scope = parents.get(scope)
        if built:  # named by its class
            while scope is not None and not isinstance(scope, ast.ClassDef):
                scope = parents.get(scope)
        name = scope.name if isinstance(scope, (ast.FunctionDef, ast.ClassDef)) else "<module>"
        exc = name if built else ast.unparse(func)
        yield name, getattr(node, "lineno", 0), exc, message


def _placeholders(message: str) -> str:
    """``{expression}`` of an f-string as ``‹expression›``, shortened: what the message fills in."""

    def short(m: re.Match[str]) -> str:
        inner = m.group(1).split("!")[0].split(":")[0].strip()
        inner = re.sub(r"\s+", " ", inner)
        return "‹" + (inner if len(inner) <= 24 else inner[:22] + "…") + "›"

    return re.sub(r"\{([^{}]*)\}", short, message)


def errors_page() -> str:
    pkg = SRC / "qkdissect"
    out = [NOTE, "# Errors\n"]
    out.append(
        "Every error of qkdissect is one line (exit 2 on the command line; `--debug` adds the traceback) that "
        "names the bad input and says what to do. This index lists every such line, by module, from the places "
        "where they are raised: search this page for the words of the line you got. `‹…›` marks what the message "
        "fills in (a path, a name, a number). *Cause* is the part of the message that says what is wrong, *fix* "
        "the part that says what to do (empty where the cause names what to change).\n"
    )
    out.append(
        "Errors that are not about one input: a bad config stops before any job with `Error validating config` "
        "and the key; a batch out of memory is split and retried (recorded in the provenance); `device: cuda` "
        "without a GPU warns and runs on the CPU.\n"
    )
    total = 0
    for path in sorted(pkg.rglob("*.py")):
        rows = sorted(set(_raises(path)), key=lambda r: r[1])
        if not rows:
            continue
        module = ".".join(path.relative_to(SRC).with_suffix("").parts)
        out.append(f"## `{module}`\n")
        out.append("| error | cause | fix | raised in |\n|---|---|---|---|")
        for func, line, exc, message in rows:
            if exc in INTERNAL:
                continue
            text = _placeholders(" ".join(message.split()))
            m = _FIX.search(text)
            cause, fix = (text[: m.start()], m.group(1)) if m else (text, CLASS_FIXES.get(exc, ""))
            out.append(f"| `{_cell(exc)}` | {_cell(cause)} | {_cell(fix)} | `{func}` (line {line}) |")
            total += 1
        out.append("")
    out.insert(3, f"{total} messages in all.\n")
    return "\n".join(out)


# ------------------------------------------------------------------------------------------------ the claims
#: per claim: the figure and configuration that checks it, and what it costs (measured; see the appendix)
CLAIM_CHECKS: dict[str, tuple[str, str, str]] = {
    "1": ("Fig. 3 of `config/paper.yaml` (weights only)", "about 4 min of jobs after the download",
          "up to 12 GB (the I-JEPA checkpoint)"),
    "2": ("as claim 1", "as claim 1", "as claim 1"),
    "3": ("as claim 1", "as claim 1", "as claim 1"),
    "4": ("Fig. S3 of `config/paper.yaml` (weights only)", "as claim 1", "as claim 1"),
    "5a": ("Fig. S4 of `config/paper.yaml`: projections over ImageNet-val", "about 150 h of jobs", "12 GB"),
    "5b": ("as claim 5a", "as claim 5a", "as claim 5a"),
    "6a": ("Fig. 2 of `config/paper.yaml`: attention on O3's 2001 images", "about 5 h of jobs", "12 GB"),
    "6b": ("as claim 6a", "as claim 6a", "as claim 6a"),
    "6c": ("as claim 6a", "as claim 6a", "as claim 6a"),
    "7": ("Fig. 6 of `config/paper.yaml`: same-object pass on ADE20K's 2000 images", "about 5.5 h of jobs", "12 GB"),
    "A1": ("the ablation figure of `make figures` (ours, not the paper's)", "about 30 s of CPU for the ablation job",
           "3 GB"),
}  # fmt: skip


def claims_table() -> str:
    from qkdissect.core.claims import TEXTS

    missing = set(TEXTS) ^ set(CLAIM_CHECKS)
    if missing:
        raise ValueError(f"docs/hooks/reference.py CLAIM_CHECKS and qkdissect.core.claims.TEXTS differ: {missing}")
    rows = ["| claim | figure | the paper says | checked by the rule | run | time (2 CPU cores) | memory |",
            "|---|---|---|---|---|---|---|"]  # fmt: skip
    for cid, (figure, claim, rule) in TEXTS.items():
        run, time, memory = CLAIM_CHECKS[cid]
        rows.append(f"| {cid} | {figure} | {_cell(claim)} | {_cell(rule)} | {run} | {time} | {memory} |")
    return "\n".join(rows)


def families_table() -> str:
    """The families of ``qkdissect models --families`` (qkdissect.families), each with its status."""
    from qkdissect.families import FAMILIES

    rows = ["| family | library | attention | status: what the modes are |", "|---|---|---|---|"]
    rows += [f"| {f.name} | {f.library} | {f.attention} | {f.status}: {_cell(f.what)} |" for f in FAMILIES]
    return "\n".join(rows)


#: placeholders in the hand-written pages, replaced by tables generated from the code
TABLES = {"<!-- claims-table -->": claims_table, "<!-- families-table -->": families_table}


PAGES = {
    "reference/cli.md": cli_page,
    "reference/config.md": config_page,
    "reference/stores.md": stores_page,
    "reference/errors.md": errors_page,
}


# ------------------------------------------------------------------------------------------------ the hooks
def on_files(files: Any, config: Any) -> Any:
    from mkdocs.structure.files import File

    for uri, make in PAGES.items():
        files.append(File.generated(config, uri, content=make()))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    for mark, table in TABLES.items():
        if mark in markdown:
            markdown = markdown.replace(mark, table())
    return markdown


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "generated-reference")
    for uri, make in PAGES.items():
        (target / uri).parent.mkdir(parents=True, exist_ok=True)
        (target / uri).write_text(make())
    print(f"wrote {len(PAGES)} pages under {target}")
