import json

import pytest

from orchestrator.run.runner_output import JOB_RESULT
from runners.contract.protocol import (
    AxisRange,
    IOSpec,
    Job,
    JobInputs,
    JobResult,
    LatencyStats,
    ModelSource,
    OutputError,
    ProfileEntry,
    ProtocolError,
    TensorSpec,
    Tolerance,
    Verification,
    from_dict,
    read_job,
    to_json,
)


def sample_job() -> Job:
    io = IOSpec(inputs=[TensorSpec("x", "float32", [None, 4])], outputs=[TensorSpec("output", "float32", [None, 2])])
    return Job(id="verify-onnx-fp32", kind="verify", runner="onnx", output_dir="/out",
               inputs=JobInputs(artifact="/in/model.onnx"), needs=["export-onnx-fp32"],
               model=ModelSource(form="factory", file="m.py", factory="make", args={"n": 3}),
               format="onnx", io=io, tolerances={"output": Tolerance(1e-4, 1e-3)})


def test_job_round_trips_through_json(tmp_path):
    job = sample_job()
    path = tmp_path / "job.json"
    path.write_text(to_json(job))
    assert read_job(path) == job


def decoder_io() -> IOSpec:
    """A decoder called with 1 to 64 tokens and no batch axis."""
    tokens = AxisRange(axis=1, min=1, typical=8, max=64)
    return IOSpec(inputs=[TensorSpec("ids", "int64", [1, None], [tokens]),
                          TensorSpec("mask", "bool", [1, None], [tokens])],
                  outputs=[TensorSpec("logits", "float32", [1, None, 32000], [tokens])], batch_axis=None)


def test_a_compare_job_carries_its_candidates_and_its_key_ignores_where_they_lie(tmp_path):
    from dataclasses import replace

    from orchestrator.run.cache import job_key

    candidate = replace(sample_job(), id="profile-onnx-fp32", kind="profile", batch_sizes=[4])
    job = Job(id="compare", kind="compare", runner="onnx", output_dir="/out", batch_sizes=[4],
              compared=[candidate, replace(candidate, id="profile-onnx-fp16", variant="onnx-fp16")])
    path = tmp_path / "job.json"
    path.write_text(to_json(job))
    assert read_job(path) == job and read_job(path).compared[1].variant == "onnx-fp16"
    moved = replace(job, compared=[replace(each, inputs=JobInputs(artifact="/elsewhere/model.onnx"),
                                           output_dir="/else") for each in job.compared])
    assert job_key(moved, "base", []) == job_key(job, "base", [])
    assert job_key(replace(job, compared=job.compared[:1]), "base", []) != job_key(job, "base", [])
    result = JOB_RESULT.validate_json(to_json(JobResult("compare", "compare", "ok", rounds={"a": [1.0, 2.0]})))
    assert result.rounds == {"a": [1.0, 2.0]}


def test_dynamic_axes_without_a_batch_axis_round_trip_through_json(tmp_path):
    job = Job(id="reference", kind="reference", runner="torch", output_dir="/out", io=decoder_io())
    path = tmp_path / "job.json"
    path.write_text(to_json(job))
    read = read_job(path)
    assert read == job
    assert read.io is not None and read.io.batch_axis is None
    assert read.io.inputs[0].ranges == [AxisRange(1, 1, 8, 64)] and isinstance(read.io.inputs[0].ranges[0], AxisRange)


def test_an_io_of_protocol_2_reads_as_batch_axis_0_without_ranges():
    data = json.loads(to_json(sample_job()))
    for spec in [*data["io"]["inputs"], *data["io"]["outputs"]]:
        del spec["ranges"]
    del data["io"]["batch_axis"]
    io = from_dict(Job, data).io
    assert io.batch_axis == 0 and all(spec.ranges == [] for spec in io.inputs)


def test_the_host_reads_dynamic_axes_in_results():
    result = JobResult("reference", "reference", "ok", io=decoder_io(), fingerprint="f")
    assert JOB_RESULT.validate_json(to_json(result)) == result


def test_the_host_reads_the_batch_sizes_a_verification_ran_at():
    result = JobResult("verify-torch-compile-fp32", "verify", "ok", verification=Verification(
        True, {"output": OutputError(0.0, 0.0, 1e-4, 1e-3, True)}, batch_sizes=[1, 64]))
    assert JOB_RESULT.validate_json(to_json(result)) == result
    older = json.loads(to_json(result))
    del older["verification"]["batch_sizes"]  # a result written before the field: the samples as they were
    assert JOB_RESULT.validate_python(older).verification.batch_sizes == []


def test_unknown_job_field_is_rejected():
    data = json.loads(to_json(sample_job()))
    data["surprise"] = 1
    with pytest.raises(ProtocolError, match="surprise"):
        from_dict(Job, data)


def test_newer_protocol_is_refused(tmp_path):
    data = json.loads(to_json(sample_job()))
    data["protocol"] = 99
    path = tmp_path / "job.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ProtocolError, match="protocol 99"):
        read_job(path)


def test_fields_a_job_kind_needs_are_read_through_accessors():
    job = sample_job()
    assert (job.source(), job.format_name(), job.io_spec()) == (job.model, "onnx", job.io)
    bare = Job(id="export-onnx-fp32", kind="export", runner="torch", output_dir="/out")
    for read, missing in ((bare.source, "source model"), (bare.format_name, "format"), (bare.io_spec, "io")):
        with pytest.raises(ProtocolError, match=f"export job export-onnx-fp32 has no {missing}"):
            read()


def test_host_validates_runner_results_with_pydantic():
    result = JobResult("profile-onnx-fp32", "profile", "ok", profile=[
        ProfileEntry(8, LatencyStats(1.0, 2.0, 3.0, 4.0, 1.5), 5333.3, 3, True)])
    parsed = JOB_RESULT.validate_json(to_json(result))
    assert parsed == result
    broken = json.loads(to_json(result))
    broken["status"] = "great"
    with pytest.raises(Exception, match="status"):
        JOB_RESULT.validate_python(broken)
