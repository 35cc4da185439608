"""What a new user meets first: the version, and a warning for an untested Axolotl."""

import subprocess
import sys

import pytest

import axolotl_curriculum


def test_version_is_the_package_version():
    out = subprocess.run([sys.executable, "-m", "axolotl_curriculum.commands.cli", "--version"],
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == f"axolotl-curriculum {axolotl_curriculum.__version__}"
    from importlib.metadata import version

    assert version("axolotl-curriculum") == axolotl_curriculum.__version__  # pyproject's


@pytest.mark.parametrize("version, warned", [("0.19.0", False), ("0.21.3", False),
                                             ("0.18.2", True), ("0.22.0", True),
                                             ("1.0.0", True), ("0.22.0.dev0", True),
                                             ("main", False)])
def test_an_axolotl_outside_the_tested_range_is_named(version, warned):
    from axolotl_curriculum.integrations.plugin import untested_axolotl

    line = untested_axolotl(version)
    assert (line is not None) == warned
    if warned:
        assert version in line and "0.19-0.21" in line
