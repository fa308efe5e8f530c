import os
import re
from pathlib import Path

import pytest
from conftest import nav_orch
from pydantic import ValidationError
from typer.testing import CliRunner

from orchestrator import cli
from orchestrator.api import ExecutorName
from orchestrator.cli import app, parse_accuracy, parse_tolerances, triton_settings
from orchestrator.config import Accuracy, OptimizeConfig, TritonSettings
from orchestrator.containers.engine import gpu_requests
from orchestrator.errors import BadInput, NavOrchError
from orchestrator.model_ref import parse_model, parse_model_args
from orchestrator.samples import load_samples, parse_input_spec, random_samples
from runners.contract.protocol import AccuracyBudget

EXAMPLES = __import__("pathlib").Path(__file__).resolve().parent.parent / "examples"


def test_factory_model_infers_torch_and_parses_args():
    ref = parse_model(f"{EXAMPLES}/mlp.py:make_mlp", ["hidden=128", "name=wide"], None)
    assert ref.form == "factory" and ref.factory == "make_mlp" and ref.framework == "torch"
    assert ref.args == {"hidden": 128, "name": "wide"}


@pytest.mark.parametrize("suffix, form", [(".pt", "torchscript"), (".ts", "torchscript"), (".pt2", "exported_program")])
def test_file_models_by_suffix(tmp_path, suffix, form):
    path = tmp_path / f"model{suffix}"
    path.write_bytes(b"x")
    assert parse_model(str(path), [], None).form == form


@pytest.mark.parametrize("text, message", [
    ("missing.py:make", "no such file"),
    ("{examples}/mlp.py", "name the factory"),
    ("{examples}/mlp.py:1bad", "name the factory"),
])
def test_bad_model_argument_says_what_to_do(text, message):
    with pytest.raises(BadInput, match=message):
        parse_model(text.format(examples=EXAMPLES), [], None)


@pytest.mark.parametrize("source", [
    "def make():\n    pass\n",
    "import torch\nif torch:\n    def make(): pass\nelse:\n    make = None\n",
    "try:\n    from lib import build as make\nexcept ImportError:\n    pass\n",
    "from functools import partial\nmake, other = partial(print), 1\n",
    "class make:\n    pass\n",
    "from lib import *\n",  # may bind it: left to the runner
    "globals()['make'] = print\n",
    "def __getattr__(name):\n    return print\n",
])
def test_a_factory_bound_at_the_top_level_is_found_without_importing(tmp_path, source):
    (tmp_path / "model.py").write_text("import torch\n" + source)
    assert parse_model(f"{tmp_path}/model.py:make", [], None).factory == "make"


@pytest.mark.parametrize("source, message", [
    ("def build():\n    def make(): pass\n", "defines no 'make' at its top level (it defines build)"),
    ("import torch\nmake =\n", "model.py:2: Python 3."),
])
def test_a_factory_missing_or_a_syntax_error_is_found_on_the_host(tmp_path, source, message):
    (tmp_path / "model.py").write_text(source)
    with pytest.raises(BadInput, match=re.escape(message)):
        parse_model(f"{tmp_path}/model.py:make", [], None)


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
    with pytest.raises(BadInput, match="not an .npz file"):
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
    (["optimize", f"{EXAMPLES}/mlp.py:make_mlp", "--formats", "savedmodel"], "not a format of torch"),
    (["optimize", f"{EXAMPLES}/mlp.py:make_mlp", "--batch-sizes", "1,x"], "--batch-sizes"),
    (["optimize", f"{EXAMPLES}/mlp.py:make_mlp", "--objective", "speed"], "objective"),
])
def test_cli_bad_input_is_one_line_with_exit_code_2(args, message):
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_default_atol_scales_with_the_output_and_explicit_atol_does_not():
    from orchestrator.config import Tolerances

    assert Tolerances().for_output("logits", "fp16", scale=50.0).atol == pytest.approx(0.5)
    assert Tolerances().for_output("logits", "fp32", scale=2.0).atol == pytest.approx(2e-4)
    assert Tolerances(atol=1e-3).for_output("logits", "fp16", scale=50.0).atol == 1e-3


# --- one validation for the CLI and the Python API (OptimizeConfig) ----------------------------

def mlp_config(**values) -> OptimizeConfig:
    return OptimizeConfig(model=parse_model(f"{EXAMPLES}/mlp.py:make_mlp", [], None), workspace="ws", **values)


@pytest.mark.parametrize("values, where, message", [
    ({"formats": ["onxx"]}, "formats", "'onxx' is not a format of torch; choose from torchscript-trace, "
                                       "torchscript-script, onnx,"),
    ({"formats": ["savedmodel"]}, "formats", "'savedmodel' is not a format of torch"),
    ({"precisions": ["fp32", "int4"]}, "precisions",
     "'int4' is not a precision; choose from fp32, fp16, bf16, int8, fp8"),
    ({"executor": "Docker"}, "executor", "'Docker' is not an executor; choose from docker, local"),
    ({"objective": "speed"}, "objective", "'speed' is not an objective; choose from throughput, latency"),
    ({"batch_sizes": [1, 0]}, "batch_sizes", "0 is not a batch size; give positive integers"),
    ({"batch_sizes": []}, "batch_sizes", "no batch size given"),
    ({"latency_budget_ms": 0}, "latency_budget_ms", "greater than 0"),
    ({"tolerances": {"atol": -1e-3}}, "tolerances.atol", "greater than or equal to 0"),
    ({"tolerances": {"output_rtol": {"logits": -1}}}, "tolerances.output_rtol.logits", "greater than or equal to 0"),
    ({"python": "/usr/bin/python3"}, "python", "executor local only"),
])
def test_config_rejects_bad_values_naming_the_valid_ones(values, where, message):
    with pytest.raises(ValidationError) as raised:
        mlp_config(**values)
    first = raised.value.errors()[0]
    assert ".".join(map(str, first["loc"])) == where
    assert message in first["msg"] and not first["msg"].startswith("Value error")


@pytest.mark.parametrize("values, message", [
    ({"images": "cuda"}, "'cuda' is not an image release; use auto, cpu or an NGC release YY.MM"),
    ({"images": "auto"}, "auto is resolved on the host a run starts on"),
    ({"samples": "s.npz", "inputs": [{"name": "x", "shape": [2], "dtype": "float32"}]},
     "`samples` and `inputs` exclude each other"),
    ({"inputs": [{"name": "x", "shape": [2], "dtype": "float32"}, {"name": "y", "shape": [3], "dtype": "float32"}]},
     "every one of `inputs` needs the same batch size (axis 0); got x: 2, y: 3"),
    ({"triton": {"enabled": False, "all_variants": True}}, "`all_variants` and `enabled=False` exclude each other"),
])
def test_config_refuses_what_it_would_otherwise_ignore_or_misread(values, message):
    with pytest.raises(ValidationError, match=re.escape(message)):
        mlp_config(**values)
    assert mlp_config(images="25.10").images == "25.10"


def test_exhaustive_times_every_variant_point_in_full():
    assert mlp_config().variant_profiling().prune_margin == 0.2
    config = mlp_config(exhaustive=True)
    assert config.variant_profiling().prune_margin is None and config.profiling.prune_margin == 0.2


def test_config_takes_the_executor_as_enum_and_checks_assignments():
    config = mlp_config(executor="local", python="/usr/bin/python3", formats=["onnx"], precisions=["fp16"])
    assert config.executor is ExecutorName.local and config.python == "/usr/bin/python3"
    assert mlp_config().executor is ExecutorName.docker
    with pytest.raises(ValidationError, match="not an executor"):
        config.executor = "Docker"
    with pytest.raises(ValidationError, match="not a format of torch"):
        config.formats = ["onxx"]


@pytest.mark.parametrize("command, option, message", [
    ("optimize", ["--formats", "onxx"], "--formats: 'onxx' is not a format of torch; choose from "),
    ("optimize", ["--precisions", "int4"], "--precisions: 'int4' is not a precision"),
    ("optimize", ["--executor", "Docker"], "--executor: 'Docker' is not an executor; choose from docker, local"),
    ("optimize", ["--batch-sizes", "0"], "--batch-sizes: 0 is not a batch size"),
    ("optimize", ["--python", "/usr/bin/python3"], "--python /usr/bin/python3: a Python is for executor local only"),
    ("profile", ["--executor", "Docker"], "--executor: 'Docker' is not an executor"),
])
def test_cli_bad_option_values_are_one_line_with_exit_code_2(command, option, message):
    """The real CLI in a subprocess: nothing but the one line reaches the user."""
    result = nav_orch(command, f"{EXAMPLES}/mlp.py:make_mlp", "--input", "x:2,64:float32", "--images", "cpu",
                      "--gpus", "none", *option)
    assert result.returncode == 2
    assert result.stdout == "" and result.stderr.startswith(f"nav-orch: {message}")
    assert len(result.stderr.splitlines()) == 1


@pytest.mark.parametrize("command, model", [("optimize", "mlp.py:make_mlp"), ("profile", "numpy_function.py:predict")])
def test_the_cli_defaults_are_the_configs(monkeypatch, command, model):
    """Options left out give an API caller's config, but for the CLI's own values (its workspace
    folder, and --jobs: this host's cores) and --images/--gpus auto, named here to keep the host out."""
    built: list[OptimizeConfig] = []

    def run(config, *args):
        built.append(config)
        raise BadInput("stop")

    monkeypatch.setattr(cli.api, command, run)
    result = CliRunner().invoke(app, [command, f"{EXAMPLES}/{model}", "--input", "x:2,64:float32", "--images", "cpu",
                                      "--gpus", "none"])
    assert result.exit_code == 2 and "stop" in result.output
    (config,) = built
    assert config.workspace.name == "nav-workspace" and config.jobs == (1 if command == "profile" else os.cpu_count())
    assert config == OptimizeConfig(model=config.model, inputs=config.inputs, workspace=config.workspace,
                                    jobs=config.jobs)


def test_no_triton_only_turns_the_stage_off():
    assert triton_settings(False, False, "1,2,4") == TritonSettings()
    assert triton_settings(True, False, "2") == TritonSettings(enabled=False, concurrency=[2])
    with pytest.raises(ValidationError, match="`all_variants` and `enabled=False` exclude each other"):
        triton_settings(True, True, "2")


def test_accuracy_budgets_from_the_cli_every_output_first_then_each_output():
    accuracy = parse_accuracy(["logits=top1:0.99", "cosine:0.995,max_abs:0.5", "mask=top1:none"])
    assert accuracy.for_output("other") == AccuracyBudget(min_cosine=0.995, min_top1=0.9, max_abs=0.5)
    # An output's own items change the every-output budget, whatever their order on the command line.
    assert accuracy.for_output("logits") == AccuracyBudget(min_cosine=0.995, min_top1=0.99, max_abs=0.5)
    assert accuracy.for_output("mask").min_top1 is None
    assert parse_accuracy([]).for_output("y") == AccuracyBudget()  # the documented defaults: 0.99, 0.9


@pytest.mark.parametrize("item, message", [
    ("cos:0.9", "unknown key 'cos'; use cosine, top1 or max_abs"),
    ("cosine:none", "cosine needs a number, not 'none'"),
    ("y=top1:high", "top1 needs a number or none, not 'high'"),
])
def test_a_bad_accuracy_item_is_one_clear_line(item, message):
    with pytest.raises(BadInput, match=message):
        parse_accuracy([item])


def test_an_accuracy_budget_out_of_range_names_the_field():
    with pytest.raises(ValidationError) as raised:
        Accuracy(default={"min_cosine": 1.5})
    assert raised.value.errors()[0]["loc"] == ("default", "min_cosine")


def test_a_tritonserver_is_for_the_local_executor_only():
    with pytest.raises(ValidationError, match=re.escape(
            "`triton_tritonserver` and `executor` exclude each other: a tritonserver of this machine serves for "
            "the local executor, and docker brings its own")):
        mlp_config(triton={"tritonserver": "/opt/tritonserver/bin/tritonserver"})
    config = mlp_config(executor="local", triton={"tritonserver": "/opt/tritonserver/bin/tritonserver"})
    assert config.triton.tritonserver == Path("/opt/tritonserver/bin/tritonserver")
    assert mlp_config().triton.tritonserver is None and mlp_config(executor="local").triton.tritonserver is None


def test_triton_settings_carry_the_tritonserver():
    path = Path("/usr/local/bin/tritonserver")
    assert triton_settings(False, False, "1,2", path) == TritonSettings(concurrency=[1, 2], tritonserver=path)
