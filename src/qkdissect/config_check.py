"""The figure entries of a workflow config checked against the models before any job runs: every mode
``[layer, head, mode]``, layer range and ``[layer, head]`` within its model's shape, every colour one matplotlib
draws. All bad entries are named at once, each with its valid range. Keys the schema does not know are named
with the closest known ones (:func:`unknown_keys`), before the schema's own check.

A model's shape (layers, heads, d_head: a head has d_head modes) is known without loading it for the models of
the catalogue (:data:`qkdissect.catalogue.KNOWN_MODELS`); the entries of other models (a custom spec) are checked
by the pass that reads them.
"""

from __future__ import annotations

import difflib
import os
import stat
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

Shape = tuple[int, int, int]


#: the largest config file read (the paper's, config/paper.yaml, is 8 kB)
MAX_CONFIG_BYTES = 1 << 20
#: the most YAML nodes a config may stand for once its aliases are expanded (config/paper.yaml: 413)
MAX_CONFIG_NODES = 100_000


def yaml_problem(path: str | Path) -> str | None:
    """None when ``path`` is a YAML (or JSON) mapping; else one line naming the file, the line and the column
    (Snakemake's own message names neither). A config is data: it must be a regular file of at most
    :data:`MAX_CONFIG_BYTES`, not empty, and its aliases may not expand it past :data:`MAX_CONFIG_NODES` nodes
    (a "billion laughs" file of a few kB would otherwise fill the memory of whatever walks it)."""
    import yaml

    if (problem := _not_a_config_file(Path(path))) is not None:
        return f"config file {path}: {problem}"
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        return f"config file {path}: cannot be read ({e.__class__.__name__}: {e})"
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        if node is not None and (size := expanded_size(node)) > MAX_CONFIG_NODES:
            return (
                f"config file {path}: its aliases (*name) expand it to over {MAX_CONFIG_NODES:,} values "
                f"({size:,}): a config is data; write the values out, or use fewer nested aliases"
            )
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark, context = getattr(e, "problem_mark", None), getattr(e, "context_mark", None)
        where = f", {_at(mark)}" if mark is not None else ""
        what = str(getattr(e, "problem", None) or e)
        if context is not None and getattr(e, "context", None):
            what += f" ({e.context} at {_at(context)})"  # type: ignore[attr-defined]
        tabs = " (a tab in the indentation? YAML indents with spaces only)" if "\t" in text else ""
        return f"config file {path}{where}: not valid YAML: {what}{tabs}"
    if data is None:
        return f"config file {path} is empty: give at least the models (models: {{dinov2-vits14-imgfocus: null}})"
    if not isinstance(data, dict):
        return f"config file {path}: holds a {type(data).__name__}, not a mapping of keys (models:, images:, ...)"
    return None


def _not_a_config_file(path: Path) -> str | None:
    """Why ``path`` cannot be a config file (missing, a folder, a device, too large), or None."""
    try:
        st = path.stat()
    except OSError as e:
        return f"cannot be read ({e.strerror})"
    if not stat.S_ISREG(st.st_mode):
        return "is not a regular file (a folder, a device or a pipe): give a YAML file"
    if st.st_size > MAX_CONFIG_BYTES:
        return f"is {st.st_size:,} bytes, over the {MAX_CONFIG_BYTES:,} a config may have: is it the right file?"
    return None


def expanded_size(root: Any) -> int:
    """How many nodes a composed YAML document stands for with every alias expanded, counted without expanding
    (each node once, its size memoised: a shared node counts each time it is used)."""
    import yaml

    sizes: dict[int, int] = {}
    order: list[Any] = []
    stack, seen = [root], set()
    while stack:  # children before parents, without recursion (a deep document is fine)
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        order.append(node)
        if isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
        elif isinstance(node, yaml.MappingNode):
            stack.extend(x for pair in node.value for x in pair)
    for node in reversed(order):
        kids = node.value if isinstance(node, yaml.SequenceNode) else (
            [x for pair in node.value for x in pair] if isinstance(node, yaml.MappingNode) else [])  # fmt: skip
        sizes[id(node)] = min(1 + sum(sizes.get(id(k), 1) for k in kids), 1 << 62)
    return sizes[id(root)]


def _at(mark: Any) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}"


def config_problems(config: dict[str, Any], shape_of: Callable[[str], Shape | None]) -> list[str]:
    """Every bad figure entry and model colour of ``config`` (already completed by the schema), one line each."""
    problems = [
        p
        for where, model, entry in _entries(config)
        if (shape := shape_of(model))
        for p in _check(where, model, entry, shape)
    ]
    problems += _colours(config)
    return problems


def _entries(config: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(where, model, entry) of every figure entry that names modes, layers or heads."""
    fig = config.get("figures") or {}
    for key in ("fig1", "fig4"):
        for i, row in enumerate(fig.get(key) or []):
            yield f"figures.{key}[{i}]", row["model"], row
    for name, rows in (fig.get("galleries") or {}).items():
        for i, row in enumerate(rows):
            yield f"figures.galleries.{name}[{i}]", row["model"], row
    for name, entry in (fig.get("s17") or {}).items():
        yield f"figures.s17.{name}", entry["model"], entry
    if fig.get("fig5"):
        yield "figures.fig5", fig["fig5"]["model"], fig["fig5"]
    text = fig.get("text_modes")
    for i, row in enumerate(text if isinstance(text, list) else []):
        if isinstance(row, dict):
            yield f"figures.text_modes[{i}]", row["model"], row


def _check(where: str, model: str, entry: dict[str, Any], shape: Shape) -> list[str]:
    layers, heads, modes = shape
    size = f"({model}: layers 0-{layers - 1}, heads 0-{heads - 1}, modes 0-{modes - 1})"
    found = []
    for i, m in enumerate(_listed(entry, "modes")):
        bad = _outside(("layer", "head", "mode"), m[:3], (layers, heads, modes))
        if bad:
            found.append(f"{where}.modes[{i}] {list(m)}: {bad} {size}")
    for i, lh in enumerate(_listed(entry, "layer_heads")):
        bad = _outside(("layer", "head"), lh, (layers, heads))
        if bad:
            found.append(f"{where}.layer_heads[{i}] {list(lh)}: {bad} {size}")
    span = entry.get("layers")
    if isinstance(span, list):
        bad = _outside(("first layer", "last layer"), span, (layers, layers))
        if bad or span[0] > span[1]:
            found.append(f"{where}.layers {list(span)}: {bad or 'the first is after the last'} {size}")
    return found


def _listed(entry: dict[str, Any], key: str) -> list[Any]:
    value = entry.get(key)
    return value if isinstance(value, list) else []  # "auto" or absent: chosen by the pass, within range


def _outside(names: tuple[str, ...], values: list[int], sizes: tuple[int, ...]) -> str:
    return ", ".join(f"{n} {v} is not in 0-{s - 1}" for n, v, s in zip(names, values, sizes, strict=False) if v >= s)


def image_problems(images: list[tuple[str, str]], set_name: str, spec: str, limit: int | None) -> list[str]:
    """Every image id of ``images`` ((where, ref) pairs: ``auto`` and ``class:`` references are left to the pass)
    that is not an image of the projected set ``set_name`` (source ``spec``, first ``limit``), one line each with
    the closest ids. The set is listed only when an id is given: listing needs no torch and decodes nothing. A set
    that cannot be listed (its folder gone) is left to the job that reads it: figures redrawn from the stores
    alone need no image."""
    from .data.labels import is_class_ref
    from .data.sources import image_source

    given = [(where, ref) for where, ref in images if ref != "auto" and not is_class_ref(ref)]
    if not given:
        return []
    from .errors import QKDissectError

    try:
        ids = [it.id for it in image_source(spec, limit).items]
    except (QKDissectError, OSError):
        return []
    known = set(ids)
    return [
        f"{where}.image {ref!r} is not an image of the set {set_name!r} ({spec}, {len(ids)} images); "
        + _closest(ref, ids)
        for where, ref in given
        if ref not in known
    ]


#: (where in the config, kind, source spec, the stores made from it) of a data source a run reads
Source = tuple[str, str, str, Iterable[str | Path]]


def source_problems(sources: Iterable[Source]) -> list[str]:
    """Every image set (kind ``images``), mask dataset (``masks``) or text corpus (``texts``) of ``sources`` that
    cannot be read at all (a folder that is not there, a kind no reader knows), one line each, found without
    resolving or loading a model, listing or decoding anything. A source whose stores are all made already is not
    read again (figures redrawn from the stores alone need none of its images) and is not checked."""
    from .data.checks import corpus_problem, image_source_problem, mask_dataset_problem

    check = {"images": image_source_problem, "masks": mask_dataset_problem, "texts": corpus_problem}
    return [
        f"{where} {spec!r}: {problem}"
        for where, kind, spec, stores in sources
        if not all(Path(s).exists() for s in stores) and (problem := check[kind](spec))
    ]


def _closest(ref: str, ids: list[str]) -> str:
    prefix = os.path.commonprefix(ids)  # noqa: RUF071 (characters, not path parts: "skimage:")
    common = prefix if ref.startswith(prefix) else ""  # compared without it, "cell" is not close to "chelsae"
    names = {i[len(common) :]: i for i in ids}
    close = [names[c] for c in difflib.get_close_matches(ref[len(common) :], list(names), n=3, cutoff=0.75)]
    if close:
        return f"did you mean {' or '.join(repr(c) for c in close)}?"
    return f"its ids look like {', '.join(repr(i) for i in ids[:3])}"


def _colours(config: dict[str, Any]) -> list[str]:
    from matplotlib.colors import is_color_like

    return [
        f"models.{name}.color {entry['color']!r} is not a colour matplotlib knows (e.g. 'tab:blue', 'C3', '#1f77b4')"
        for name, entry in (config.get("models") or {}).items()
        if entry and "color" in entry and not is_color_like(entry["color"])
    ]


def unknown_keys(config: Any, schema: dict[str, Any]) -> list[str]:
    """Every key of ``config`` that its schema does not allow (an object with ``additionalProperties: false``),
    one line each with the closest allowed names: what a typo gets instead of the whole schema."""
    return list(_unknown(config, schema, schema, "config"))


def _unknown(value: Any, node: dict[str, Any], root: dict[str, Any], where: str) -> Iterator[str]:
    node = _resolve(node, root)
    if isinstance(value, list) and isinstance(node.get("items"), dict):
        for i, v in enumerate(value):
            yield from _unknown(v, node["items"], root, f"{where}[{i}]")
    if not isinstance(value, dict):
        return
    known = node.get("properties") or {}
    extra = node.get("additionalProperties", True)
    for key, v in value.items():
        if key in known:
            yield from _unknown(v, known[key], root, f"{where}.{key}")
        elif isinstance(extra, dict):
            yield from _unknown(v, extra, root, f"{where}.{key}")
        elif extra is False:
            close = difflib.get_close_matches(str(key), list(known), n=3, cutoff=0.6)
            hint = f"did you mean {' or '.join(close)}?" if close else f"allowed: {', '.join(known)}"
            yield f"{where}: unknown key {key!r}; {hint}"


def _resolve(node: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    """``node`` with its ``$ref`` followed, and of ``oneOf``/``anyOf`` the alternative that is an object."""
    while "$ref" in node:
        node = root["$defs"][node["$ref"].rpartition("/")[2]]
    for alt in node.get("oneOf") or node.get("anyOf") or []:
        alt = _resolve(alt, root)
        if "properties" in alt or isinstance(alt.get("items"), dict):
            return alt
    return node
