"""What nav-orch ships besides its code: the image matrix (docker-bake.hcl) and the images' build
contexts (images/). In a checkout this package holds links to the top-level files; a wheel holds
copies (pyproject.toml, package-data). Either way importlib.resources finds them here.

A data package mapped onto the checkout's root with `package-dir` would need no links, but
setuptools' editable installs make such a package a namespace whose path importlib.resources
cannot read.
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path

from orchestrator.errors import EnvironmentProblem


def shipped(name: str) -> Path:
    """The shipped file or folder `name` (`docker-bake.hcl`, `images`) as a path on disk."""
    found = resources.files(__name__).joinpath(name)
    if not isinstance(found, Path):  # e.g. imported from a zip: Docker builds need real folders
        raise EnvironmentProblem(f"nav-orch's {name} is not a file on disk ({found}): "
                                 "install nav-orch with pip, which unpacks it")
    return found.resolve()
