"""The zoo's orchestration without Docker or Ray: the zoo file's validation, local placement with a
stand-in for the optimize runs, zoo.json, and archives from other nodes read as untrusted data.
The real runs: test_e2e_zoo.py."""
from __future__ import annotations

import io
import json
import tarfile
import threading
from pathlib import Path
from typing import Optional

import pytest

from orchestrator.errors import BadInput
from orchestrator.zoo.local import run_local
from orchestrator.zoo.outcome import ZooEntry, ZooResults, exit_code, save
from orchestrator.zoo.spec import ZooModel, load_zoo
from orchestrator.zoo.task import pack, unpack

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def zoo_file(tmp_path: Path, text: str) -> Path:
    (tmp_path / "models").mkdir(exist_ok=True)
    (tmp_path / "models" / "mlp.py").write_text((EXAMPLES / "mlp.py").read_text())
    path = tmp_path / "zoo.toml"
    path.write_text(text)
    return path


GOOD = """
[defaults]
images = "cpu"
gpus = "none"
batch_sizes = [1, 4]

[[model]]
name = "mlp-a"
model = "models/mlp.py:make_mlp"
inputs = ["input:4,64:float32"]
formats = ["onnx"]

[[model]]
name = "mlp-b"
model = "models/mlp.py:make_mlp"
inputs = ["input:4,64:float32"]
batch_sizes = [2]
triton = false
"""


def test_a_zoo_file_gives_each_model_optimizes_config_with_the_defaults_and_paths_from_the_file(tmp_path):
    models = load_zoo(zoo_file(tmp_path, GOOD), tmp_path / "out")
    assert [m.name for m in models] == ["mlp-a", "mlp-b"]
    a, b = (m.config for m in models)
    assert a.model.path == (tmp_path / "models" / "mlp.py").resolve() and a.model.framework == "torch"
    assert a.workspace == tmp_path / "out" / "mlp-a" and a.formats == ["onnx"] and a.batch_sizes == [1, 4]
    assert b.batch_sizes == [2] and b.formats is None and not b.triton.enabled and a.triton.enabled
    assert [m.gpus for m in models] == [0, 0]


@pytest.mark.parametrize("entry, message", [
    ('name = "x"\nmodel = "models/mlp.py:make_mlp"\nformats = ["tensorrt-lite"]',
     "zoo model 'x': formats: 'tensorrt-lite' is not a format of torch"),
    ('name = "x"\nmodel = "models/mlp.py:make_mlp"\nbatch_size = [1]',
     "zoo model 'x': batch_size: Extra inputs are not permitted"),
    ('name = "x"\nmodel = "models/none.py:make"', "zoo model 'x': model "),
    ('name = "x y"\nmodel = "models/mlp.py:make_mlp"', "zoo model 'x y': name it with letters"),
    ('model = "models/mlp.py:make_mlp"', "zoo model #1: name it with letters"),
    ('name = "x"\nmodel = "models/mlp.py:make_mlp"\ngpus = "all"', "zoo model 'x': gpus = \"all\" says no count"),
])
def test_a_bad_model_entry_is_one_line_naming_the_model_and_the_field(tmp_path, entry, message):
    with pytest.raises(BadInput) as raised:
        load_zoo(zoo_file(tmp_path, f"[[model]]\n{entry}\n"), tmp_path / "out")
    assert str(raised.value).startswith(message), str(raised.value)


def test_a_name_twice_and_a_file_without_models_are_refused(tmp_path):
    twice = GOOD.replace('name = "mlp-b"', 'name = "mlp-a"')
    with pytest.raises(BadInput, match="model name 'mlp-a' is used twice"):
        load_zoo(zoo_file(tmp_path, twice), tmp_path / "out")
    with pytest.raises(BadInput, match=r"no \[\[model\]\] entries"):
        load_zoo(zoo_file(tmp_path, "[defaults]\nimages = 'cpu'\n"), tmp_path / "out")
    with pytest.raises(BadInput, match="not readable TOML"):
        load_zoo(zoo_file(tmp_path, "[[model]\n"), tmp_path / "out")


def test_locally_gpu_models_get_a_gpu_each_and_a_failure_stops_no_other(tmp_path):
    models = load_zoo(zoo_file(tmp_path, GOOD + '\n[[model]]\nname = "gpu-one"\nmodel = "models/mlp.py:make_mlp"\n'
                                              'inputs = ["input:4,64:float32"]\ngpus = "1"\n'), tmp_path / "out")
    placed: dict[str, Optional[str]] = {}
    lock = threading.Lock()

    def fake_run(model: ZooModel, gpu: Optional[str], log: Path, started) -> int:
        with lock:
            placed[model.name] = gpu
        workspace = model.config.workspace
        workspace.mkdir(parents=True)
        if model.name == "mlp-a":  # fails as optimize does: its one line last in the log
            log.write_text("[  0.1s] queued\nnav-orch: the source model failed on the samples: boom\n")
            return 2
        (workspace / "results.json").write_text(json.dumps({"best": "onnx-fp32", "environment": {
            "nav_orch": "0", "host_python": "3.11"}}))
        log.write_text("ok\n")
        return 0

    results = ZooResults(backend="local")
    done: list[ZooEntry] = []
    (tmp_path / "out").mkdir()
    run_local(models, tmp_path / "out", results, ["0", "1"], 1, done.append, fake_run)
    assert placed["gpu-one"] in ("0", "1") and placed["mlp-a"] is None and placed["mlp-b"] is None
    entries = {e.name: e for e in results.models}
    assert entries["mlp-a"].status == "failed"
    assert entries["mlp-a"].error == "the source model failed on the samples: boom"
    assert entries["mlp-b"].status == entries["gpu-one"].status == "ok" and entries["mlp-b"].best == "onnx-fp32"
    assert len(done) == 3 and all(e.node == "local" and e.attempts == 1 for e in done)
    save(results, tmp_path / "out")
    written = json.loads((tmp_path / "out" / "zoo.json").read_text())
    assert {m["name"]: m["status"] for m in written["models"]} == {"mlp-a": "failed", "mlp-b": "ok", "gpu-one": "ok"}
    assert set(written["models"][0]) >= {"name", "status", "best", "workspace", "node", "attempts", "error"}
    assert "mlp-b" in (tmp_path / "out" / "index.html").read_text()


def test_an_archive_from_another_node_brings_files_and_folders_only_and_only_inside(tmp_path):
    source = tmp_path / "ws"
    (source / "variants").mkdir(parents=True)
    (source / "results.json").write_text("{}")
    (source / "variants" / "model.onnx").write_bytes(b"onnx")
    (source / "escape").symlink_to("/etc/passwd")
    archive = pack(source)
    unpack(archive, tmp_path / "back")
    assert (tmp_path / "back" / "variants" / "model.onnx").read_bytes() == b"onnx"
    assert not (tmp_path / "back" / "escape").exists() and not (tmp_path / "back" / "escape").is_symlink()
    # A crafted archive: a link and a path out of the target are left out or refused, never followed.
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        link = tarfile.TarInfo("link")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc"
        tar.addfile(link)
        outside = tarfile.TarInfo("../outside.txt")
        outside.size = 1
        tar.addfile(outside, io.BytesIO(b"x"))
    with pytest.raises(tarfile.OutsideDestinationError):
        unpack(buffer.getvalue(), tmp_path / "crafted")
    assert not (tmp_path / "outside.txt").exists() and not (tmp_path / "crafted" / "link").is_symlink()


@pytest.mark.parametrize("codes, expected", [([0, 0], 0), ([3, 3], 3), ([3, 1], 1), ([3, 0], 1), ([None, 3], 1)])
def test_a_zoo_exits_with_the_environments_code_only_when_every_model_failed_for_it(codes, expected):
    entries = [ZooEntry(name=f"m{i}", status="ok" if code == 0 else "failed", workspace=f"m{i}", exit_code=code)
               for i, code in enumerate(codes)]
    assert exit_code(ZooResults(backend="local", models=entries)) == expected
