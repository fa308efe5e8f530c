import pytest
from typer.testing import CliRunner

from orchestrator.cli import app, parse_tolerances
from orchestrator.docker_engine import gpu_requests
from orchestrator.errors import BadInput, NavOrchError
from orchestrator.model_ref import parse_model, parse_model_args
from orchestrator.samples import load_samples, parse_input_spec, random_samples

EXAMPLES = __import__("pathlib").Path(__file__).resolve().parent.parent / "examples"


def test_factory_model_infers_torch_and_parses_args():
    ref = parse_model(f"{EXAMPLES}/mlp.py:make_mlp", ["hidden=128", "name=wide"], None)
    assert ref.kind == "factory" and ref.factory == "make_mlp" and ref.framework == "torch"
    assert ref.args == {"hidden": 128, "name": "wide"}


@pytest.mark.parametrize("suffix, kind", [(".pt", "torchscript"), (".ts", "torchscript"), (".pt2", "exported_program")])
def test_file_models_by_suffix(tmp_path, suffix, kind):
    path = tmp_path / f"model{suffix}"
    path.write_bytes(b"x")
    assert parse_model(str(path), [], None).kind == kind


@pytest.mark.parametrize("text, message", [
    ("missing.py:make", "no such file"),
    ("{examples}/mlp.py", "name the factory"),
    ("{examples}/mlp.py:1bad", "name the factory"),
])
def test_bad_model_argument_says_what_to_do(text, message):
    with pytest.raises(BadInput, match=message):
        parse_model(text.format(examples=EXAMPLES), [], None)


def test_unknown_suffix_lists_what_is_accepted(tmp_path):
    path = tmp_path / "model.bin"
    path.write_bytes(b"x")
    with pytest.raises(BadInput, match="TorchScript file"):
        parse_model(str(path), [], None)


def test_model_args_need_key_value():
    with pytest.raises(BadInput, match="key=value"):
        parse_model_args(["oops"])


def test_input_spec_and_random_samples_are_seeded():
    spec = parse_input_spec("x:8,64:float32")
    assert spec.shape == [8, 64] and spec.dtype == "float32"
    first, second = random_samples([spec], 7)["x"], random_samples([spec], 7)["x"]
    assert first.shape == (8, 64) and first.dtype.name == "float32"
    assert (first == second).all()


@pytest.mark.parametrize("text", ["x:8,64", "x:8,a:float32", "x:8:notadtype", "x:0,3:float32"])
def test_bad_input_specs(text):
    with pytest.raises(BadInput, match="--input"):
        parse_input_spec(text)


def test_samples_need_a_common_batch(tmp_path):
    import numpy as np

    path = tmp_path / "s.npz"
    np.savez(path, a=np.zeros((2, 3)), b=np.zeros((3, 3)))
    with pytest.raises(BadInput, match="same batch size"):
        load_samples(path)
    (tmp_path / "junk.npz").write_text("not a zip")
    with pytest.raises(BadInput, match="not a readable"):
        load_samples(tmp_path / "junk.npz")


def test_tolerances_global_per_output_and_precision_defaults():
    tolerances = parse_tolerances(["1e-3", "logits=0.5"], ["embedding=0.2"])
    assert tolerances.for_output("logits", "fp32").atol == 0.5
    assert tolerances.for_output("other", "fp32").atol == 1e-3
    assert tolerances.for_output("embedding", "fp32").rtol == 0.2
    assert tolerances.for_output("other", "fp16").rtol == 1e-2
    with pytest.raises(BadInput, match="--atol"):
        parse_tolerances(["abc"], [])


def test_gpu_syntax_maps_to_device_requests():
    assert gpu_requests("none") == []
    assert gpu_requests("all")[0]["Count"] == -1
    assert gpu_requests("2")[0]["Count"] == 2
    assert gpu_requests("device=0,2")[0]["DeviceIDs"] == ["0", "2"]
    with pytest.raises(NavOrchError, match="docker's syntax"):
        gpu_requests("two")


@pytest.mark.parametrize("args, message", [
    (["optimize", "nope.py:make", "--input", "x:1,2:float32"], "no such file"),
    (["optimize", f"{EXAMPLES}/mlp.py:make_mlp", "--formats", "savedmodel"], "not available for torch"),
    (["optimize", f"{EXAMPLES}/mlp.py:make_mlp", "--batch-sizes", "1,x"], "--batch-sizes"),
    (["optimize", f"{EXAMPLES}/mlp.py:make_mlp", "--objective", "speed"], "objective"),
])
def test_cli_bad_input_is_one_line_with_exit_code_2(args, message):
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_default_atol_scales_with_the_output_and_explicit_atol_does_not():
    from orchestrator.models import Tolerances

    assert Tolerances().for_output("logits", "fp16", scale=50.0).atol == pytest.approx(0.5)
    assert Tolerances().for_output("logits", "fp32", scale=2.0).atol == pytest.approx(2e-4)
    assert Tolerances(atol=1e-3).for_output("logits", "fp16", scale=50.0).atol == 1e-3
