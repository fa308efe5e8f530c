"""The host's handling of runner output (orchestrator/run/untrusted.py): links are never followed,
only plain files and folders within limits pass, and nothing hangs on a FIFO."""
import os

import pytest

from orchestrator.run import untrusted
from orchestrator.run.untrusted import UntrustedOutput


@pytest.fixture
def root(tmp_path):
    (tmp_path / "secret.txt").write_text("host secret")
    workspace = tmp_path / "ws"
    (workspace / "variants" / "v").mkdir(parents=True)
    return workspace


def test_plain_files_are_read(root):
    (root / "variants" / "v" / "result.json").write_text("{}")
    assert untrusted.read_bytes(root, root / "variants" / "v" / "result.json", 100) == b"{}"


@pytest.mark.parametrize("make, message", [
    (lambda v, secret: (v / "f").symlink_to(secret), "variants/v/f is a symbolic link"),
    (lambda v, secret: os.link(secret, v / "f"), "variants/v/f is a hard link (2 names for one file)"),
    (lambda v, secret: os.mkfifo(v / "f"), "variants/v/f is a FIFO"),
    (lambda v, secret: (v / "f").write_bytes(b"x" * 2048), "variants/v/f is 0.0 MiB (limit 0.0 MiB)"),
])
def test_anything_but_a_plain_file_is_refused_unread(root, make, message):
    variant = root / "variants" / "v"
    make(variant, root.parent / "secret.txt")
    with pytest.raises(UntrustedOutput, match=message.replace("(", r"\(").replace(")", r"\)")):
        untrusted.read_bytes(root, variant / "f", 1024)
    with pytest.raises(UntrustedOutput):
        untrusted.check_tree(root, variant / "f", 1024)


def test_a_linked_folder_on_the_way_is_refused(root, tmp_path):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "model.onnx").write_text("host data")
    (root / "variants" / "w").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(UntrustedOutput, match="w is a symbolic link"):
        untrusted.read_bytes(root, root / "variants" / "w" / "model.onnx", 1024)
    with pytest.raises(UntrustedOutput, match="variants/w is a symbolic link, not a folder"):
        untrusted.check_tree(root, root / "variants" / "w" / "model.onnx")


def test_a_link_deep_inside_an_artifact_tree_is_found(root):
    saved = root / "variants" / "v" / "savedmodel"
    (saved / "variables").mkdir(parents=True)
    (saved / "saved_model.pb").write_bytes(b"pb")
    assert untrusted.check_tree(root, saved) == 2
    (saved / "variables" / "extra").symlink_to(root.parent / "secret.txt")
    with pytest.raises(UntrustedOutput, match="savedmodel/variables/extra is a symbolic link"):
        untrusted.check_tree(root, saved)
    with pytest.raises(UntrustedOutput):
        untrusted.copy_tree(root, saved, root.parent / "copy")
    assert not (root.parent / "copy").exists()


@pytest.mark.parametrize("path", ["/etc/passwd", "../x", "a/../../x", "", "a//b", "a\\..\\b"])
def test_artifact_paths_must_stay_inside(path):
    with pytest.raises(UntrustedOutput, match="not a plain relative path"):
        untrusted.relative_inside(path)


def test_sweep_removes_what_is_not_data_without_reading_it(root):
    variant = root / "variants" / "v"
    (variant / "model.onnx").write_bytes(b"onnx")
    (variant / "sub").mkdir()
    (variant / "sub" / "link").symlink_to(root.parent / "secret.txt")
    os.mkfifo(variant / "pipe")
    problems = untrusted.sweep(root, variant)
    assert sorted(problems) == ["variants/v/pipe is a FIFO (removed)",
                                "variants/v/sub/link is a symbolic link (removed)"]
    assert sorted(p.name for p in variant.rglob("*")) == ["model.onnx", "sub"]
    assert (root.parent / "secret.txt").read_text() == "host secret"


def test_host_writes_never_go_through_a_planted_link(root):
    key = root / "variants" / "v" / "key"
    key.symlink_to(root.parent / "secret.txt")
    untrusted.write_text(key, "abc")
    assert key.read_text() == "abc" and not key.is_symlink()
    assert (root.parent / "secret.txt").read_text() == "host secret"


def test_copy_tree_copies_plain_artifacts(root, tmp_path):
    saved = root / "variants" / "v" / "savedmodel"
    (saved / "variables").mkdir(parents=True)
    (saved / "variables" / "data").write_bytes(b"weights")
    untrusted.copy_tree(root, saved, tmp_path / "copy")
    assert (tmp_path / "copy" / "variables" / "data").read_bytes() == b"weights"
    assert os.stat(saved / "variables" / "data").st_nlink == 1


@pytest.mark.skipif(os.getuid() != 0, reason="only root runs into folders an older nav-orch gave to uid 65534")
def test_a_workspace_of_an_older_nav_orch_is_given_back_to_root(tmp_path):
    from orchestrator.run.workspace import Workspace

    workspace = Workspace(tmp_path / "ws").create()
    job = workspace.job_dir("export-onnx-fp32")
    (job / "result.json").write_text("{}")
    outside = tmp_path / "outside.txt"
    outside.write_text("not the workspace's")
    (job / "link").symlink_to(outside)
    for path in (workspace.cache, job, job / "result.json", outside):
        os.chown(path, 65534, 65534)
    os.lchown(job / "link", 65534, 65534)
    Workspace(tmp_path / "ws").create()
    assert {os.lstat(p).st_uid for p in (workspace.cache, job, job / "result.json", job / "link")} == {0}
    assert outside.stat().st_uid == 65534  # the link was changed, not followed
