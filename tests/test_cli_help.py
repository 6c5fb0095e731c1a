"""--help of every app: what it does, the config groups it reads (not every group of conf/), one
example and tab completion; `weightsim-zoo verify --help` prints its usage."""

from __future__ import annotations

import string

import pytest

from tests.conftest import run_cli
from weightsim.config import APPS, choices, help_text, program
from weightsim.stages import register_configs

register_configs()  # the structured configs' choices (zoo=default, ...), as the CLI stores them before --help


@pytest.mark.parametrize("app", sorted(APPS))
def test_help_page_names_the_apps_groups_and_an_example(app):
    _, groups, example = APPS[app]
    # Hydra fills the page as a string.Template: it must substitute cleanly ($$ -> $)
    page = string.Template(help_text(app)).substitute(FLAGS_HELP="", HYDRA_CONFIG_GROUPS="", APP_CONFIG_GROUPS="",
                                                      CONFIG="")
    assert page.startswith(f"{program(app)}: ")
    listed = [line.split()[0] for line in page.split("(group=choice):\n")[1].split("\n\n")[0].splitlines()]
    assert listed == list(groups)
    for g in groups:
        assert f"  {', '.join(choices(g))}" in page
    assert "_paper" not in page and "powered by Hydra" not in page
    assert f"Example:\n  {example}\n" in page
    assert f'eval "$({program(app)} -sc install=bash)"' in page


def test_run_help_is_the_apps_page():
    res = run_cli("run", "--help")
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.startswith("weightsim-run: train a zoo, then test it"), res.stdout[:500]
    groups = [line.split()[0] for line in res.stdout.split("(group=choice):\n")[1].split("\n\n")[0].splitlines()]
    assert groups == list(APPS["run"][1])  # no teacher, size or compare: weightsim-run does not read them
    assert "weightsim-run zoo.seeds=50" in res.stdout


def test_zoo_import_help_is_its_page():
    res = run_cli("zoo", "import", "--help")
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.startswith("weightsim-zoo import: nets trained elsewhere as an ordinary zoo"), res.stdout[:500]


def test_zoo_verify_help_prints_usage():
    res = run_cli("zoo", "verify", "--help")
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.startswith("usage: weightsim-zoo verify zoo_dir=DIR") and "no such directory" not in res.stdout
