"""Names that reach a shell or a path: a config name never runs a command or writes outside results/ (every hostile
name refused by the workflow's schema, and Snakemake's own dry run stopped before any rule), every named section
has the safe name pattern, and config keys reach the shell quoted."""

from __future__ import annotations

from pathlib import Path

import pytest
from snakemake.exceptions import WorkflowError

from tests.helpers.workflow import prepared, snakemake, write_config

HOSTILE_NAMES = ["x';touch PWNED;'", "../../../../escaped", "a b", "$(touch PWNED)", ".hidden", "a/b"]
#: the name the dry runs below give Snakemake itself: it would run a command if it reached a shell unquoted
SHELL_NAME = HOSTILE_NAMES[0]
MODEL = "dinov2-vits14-imgfocus"


def _figure_config(section: str, name: str) -> dict:
    entry = [{"model": MODEL}] if section == "galleries" else {"model": MODEL}
    return {"models": {MODEL: None}, "figures": {section: {name: entry}}}


def _section_config(section: str, name: str) -> dict:
    cfg: dict = {"models": {MODEL: None}}
    cfg[section] = {**cfg.get(section, {}), name: {"source": "skimage"} if section != "models" else None}
    return cfg


def _refused_by_the_schema(config: dict) -> None:
    """The workflow's own schema, as the Snakefile validates the config before any rule (Snakemake's validate)."""
    with pytest.raises(WorkflowError, match="does not match"):
        prepared(config)


def _refused_before_any_rule(tmp_path: Path, config: dict) -> None:
    """Snakemake's dry run of the repository's workflow stops at the config, and nothing ran or was written."""
    work = tmp_path / "run"
    r = snakemake(work, "-n", config=write_config(tmp_path, config), check=False)
    out = r.stdout + r.stderr
    assert r.returncode != 0 and "Error validating config" in out and "does not match" in out, out[-2000:]
    assert not list(tmp_path.rglob("PWNED")) and not (work / "PWNED").exists()


@pytest.mark.parametrize("section", ["galleries", "s17"])
def test_figure_names_that_would_reach_a_shell_or_leave_results_are_refused(tmp_path: Path, section: str) -> None:
    """Every hostile name is refused by the schema; through Snakemake itself, the one a shell would run stops the
    dry run before any rule."""
    for name in HOSTILE_NAMES:
        _refused_by_the_schema(_figure_config(section, name))
    _refused_before_any_rule(tmp_path, _figure_config(section, SHELL_NAME))


@pytest.mark.parametrize("section", ["models", "images", "mask_datasets", "texts"])
def test_every_named_section_has_the_safe_name_pattern(tmp_path: Path, section: str) -> None:
    for name in HOSTILE_NAMES:
        _refused_by_the_schema(_section_config(section, name))
    if section == "models":  # the others go through the same schema pattern, checked above
        _refused_before_any_rule(tmp_path, _section_config(section, SHELL_NAME))


def test_config_keys_reach_the_shell_quoted_and_the_config_path_does_not(tmp_path: Path) -> None:
    """The rules' commands carry their config sections as one quoted word, and not the config file's path: the
    same config at another path is the same job (the path reaches the jobs through the environment)."""
    import shlex

    cfg = write_config(tmp_path, {"models": {"dinov2-vits14-imgfocus": None}, "figures": {"s1": [], "s2": []}})
    r = snakemake(tmp_path / "run", "-n", "-p", config=cfg)
    commands = [ln.split("Shell command: ", 1)[1] for ln in r.stdout.splitlines() if ln.startswith("Shell command: ")]
    commands = [c for c in commands if c != "None"]  # the target rules run no command
    assert len(commands) >= 6  # weights, modes, scores, two Fig. 3, the crate
    for cmd in commands:
        assert str(cfg) not in cmd
        words = shlex.split(cmd)
        keys = [w for w in words if w.startswith("QKDISSECT_CONFIG_KEYS=")]
        assert len(keys) == 1 and keys[0].split("=", 1)[1].startswith("[")
