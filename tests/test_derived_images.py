"""Derived images and requirement lines, without Docker: tags and digests, the conflict check
against an image's packages, pip's failure as one line, and the hint for a missing import."""
from pathlib import Path

import pytest
from pydantic import ValidationError

from orchestrator.config import ModelRef, OptimizeConfig, read_requirements
from orchestrator.containers.derived_images import (
    conflicts,
    derived_tag,
    parse_installed,
    pip_failure,
    requirements_digest,
)
from orchestrator.errors import BadInput
from orchestrator.model_ref import missing_module
from runners.contract.structure import output_leaves

IMAGE = {"torch": "2.13.0+cpu", "numpy": "2.3.5", "onnxruntime": "1.23.2"}


def test_a_derived_tag_keeps_the_repository_and_names_its_digest():
    digest = requirements_digest("sha256:aa", ["transformers==5.24.0"], [])
    assert derived_tag("nav-orch/pytorch:cpu", digest) == f"nav-orch/pytorch:cpu-req-{digest[:12]}"
    assert digest == requirements_digest("sha256:aa", ["transformers==5.24.0"], [])
    assert digest != requirements_digest("sha256:bb", ["transformers==5.24.0"], [])  # the base was rebuilt
    assert digest != requirements_digest("sha256:aa", ["transformers==5.23.0"], [])
    assert digest != requirements_digest("sha256:aa", ["transformers==5.24.0"], ["x-1.0-py3-none-any.whl"])


def test_the_config_normalizes_requirements_so_equal_sets_share_an_image(tmp_path):
    model = ModelRef(path=Path("/m/model.py"), form="factory", factory="make")
    one = OptimizeConfig(model=model, workspace=tmp_path, requirements=["timm>=1.0", "transformers == 5.24.0"])
    two = OptimizeConfig(model=model, workspace=tmp_path, requirements=["transformers==5.24.0", "timm >= 1.0",
                                                                        "timm>=1.0"])
    assert one.requirements == two.requirements == ["timm>=1.0", "transformers==5.24.0"]
    with pytest.raises(ValidationError, match="names a URL"):
        OptimizeConfig(model=model, workspace=tmp_path, requirements=["pkg @ https://example.com/pkg.whl"])


def test_a_requirements_file_is_read_line_by_line_and_a_bad_line_is_named(tmp_path):
    path = tmp_path / "requirements.txt"
    path.write_text("# the model's libraries\ntransformers==5.24.0  # pinned\n\ntimm\n")
    assert read_requirements(path) == ["transformers==5.24.0", "timm"]
    path.write_text("timm\n-r other.txt\n")
    with pytest.raises(BadInput, match=r"requirements.txt:2: '-r other.txt' is not a requirement line"):
        read_requirements(path)
    with pytest.raises(BadInput, match="no such file"):
        read_requirements(tmp_path / "missing.txt")


@pytest.mark.parametrize(("requirement", "problem"), [
    ("transformers==5.24.0", None),  # not in the image: added
    ("numpy>=1.24", None),  # the image's version satisfies it
    ("torch>=2.0", None),
    ("torch==2.13.0", None),  # a local version (+cpu) matches its public one
    ("torch==2.0.0", "--requirements: torch==2.0.0 conflicts with torch 2.13.0+cpu in nav-orch/pytorch:cpu"),
    ("NumPy<2", "--requirements: NumPy<2 conflicts with NumPy 2.3.5 in nav-orch/pytorch:cpu"),
])
def test_a_requirement_may_add_packages_but_never_replace_the_images_own(requirement, problem):
    found = conflicts([requirement], IMAGE, "nav-orch/pytorch:cpu")
    assert (found is None) if problem is None else found.startswith(problem)
    assert problem is None or "cannot be replaced" in found


def test_the_images_packages_are_read_by_their_canonical_names():
    assert parse_installed("Torch==2.13.0+cpu\nonnx_script==0.5.0\n\nnot a line\n") == {
        "torch": "2.13.0+cpu", "onnx-script": "0.5.0"}


def test_pips_reason_for_a_failed_install_is_one_line():
    conflict = ["Collecting tokenizers", "ERROR: Cannot install -r /tmp/extras/requirements.txt (line 1) and "
                "torch==2.13.0+cpu because these package versions have conflicting dependencies.", "",
                "The conflict is caused by:", "    The user requested torch<2", "    The user requested (constraint) "
                "torch==2.13.0+cpu", "", "To fix this you could try to:"]
    assert pip_failure(conflict) == (
        "Cannot install -r /tmp/extras/requirements.txt (line 1) and torch==2.13.0+cpu because these package "
        "versions have conflicting dependencies. (The user requested torch<2; The user requested (constraint) "
        "torch==2.13.0+cpu)")
    missing = ["ERROR: Could not find a version that satisfies the requirement no-such-pkg (from versions: none)",
               "ERROR: No matching distribution found for no-such-pkg"]
    assert pip_failure(missing) == "No matching distribution found for no-such-pkg"
    assert pip_failure(["Step 3/4 : RUN false", "The command returned a non-zero code: 1"]) is None


def test_a_missing_import_says_which_package_and_how_to_add_it(tmp_path):
    (tmp_path / "mylib").mkdir()
    error = "ModuleNotFoundError: No module named 'transformers.models' (log: /ws/jobs/reference/runner.log)"
    assert missing_module(error, tmp_path, "nav-orch/pytorch:cpu", in_images=True) == (
        "the source model imports transformers, which nav-orch/pytorch:cpu does not have: add the package that "
        "provides it with --requirements FILE (a requirements file, e.g. a line `transformers`)")
    assert "pip install it into that Python" in missing_module(error, tmp_path, "the runners' Python", in_images=False)
    # The model's own package, failing for another reason, or another error: no such hint.
    assert missing_module("ModuleNotFoundError: No module named 'mylib.x'", tmp_path, "i", True) is None
    assert missing_module("ValueError: bad input", tmp_path, "i", True) is None


def test_outputs_are_named_alike_whatever_nests_them():
    from dataclasses import dataclass
    from typing import Optional

    @dataclass
    class Output:  # as a ModelOutput is: a dataclass whose unused fields are None
        last_hidden_state: int
        pooler_output: Optional[int] = None
        past_key_values: object = None

    def is_leaf(value):
        return isinstance(value, int)

    assert list(output_leaves(7, is_leaf)[0]) == ["output"]
    assert list(output_leaves((1, 2), is_leaf)[0]) == ["output_0", "output_1"]
    assert output_leaves(Output(1, None, ((2, 3), (4, 5))), is_leaf)[0] == {
        "last_hidden_state": 1, "past_key_values.0.0": 2, "past_key_values.0.1": 3, "past_key_values.1.0": 4,
        "past_key_values.1.1": 5}
    leaves, structure = output_leaves({"logits": 1, "hidden": [2, 3]}, is_leaf)
    assert list(leaves) == ["logits", "hidden.0", "hidden.1"]
    assert [child.name for child in structure.children] == ["logits", None]
    with pytest.raises(TypeError, match="returned str"):
        output_leaves("text", is_leaf)
