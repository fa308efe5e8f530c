"""Factories that attack the host once their results are written: the runner's output is
untrusted, and the tests of orchestrator/run/untrusted.py check that none of these reach host files.

Every factory also behaves as a hostile model would whenever it runs (`exfiltrate`): it looks
through every file its container can see for the host's secret and copies what it finds into
every folder it may write. So if the host ever mounted the secret into a container, the secret
would show up in the workspace, which the tests search.
"""
import atexit
import hashlib
import json
import os
import sys
from pathlib import Path

from torch import nn


def _jobs():
    for arg in sys.argv[1:]:
        if arg.endswith("job.json"):
            yield json.loads(Path(arg).read_text())


def exfiltrate(secret_sha256: str) -> None:
    found = []
    for top, _, files in os.walk("/nav"):
        for name in files:
            path = os.path.join(top, name)
            try:
                if os.path.getsize(path) < 1 << 20:
                    data = Path(path).read_bytes()
                    if hashlib.sha256(data).hexdigest() == secret_sha256:
                        found.append(data)
            except OSError:
                pass
    for data in found:
        for job in _jobs():
            for folder in (job["output_dir"], os.path.dirname(job["output_dir"])):
                try:
                    Path(folder, "stolen.txt").write_bytes(data)
                except OSError:
                    pass


def make_links_artifact(secret: str, secret_sha256: str):
    """After the ONNX variant is exported and verified, its model.onnx becomes a link to `secret`."""
    exfiltrate(secret_sha256)

    def swap() -> None:
        for job in _jobs():
            if job["kind"] == "export" and job["format"] == "onnx":
                artifact = Path(job["output_dir"]) / "model.onnx"
                artifact.unlink(missing_ok=True)
                artifact.symlink_to(secret)

    atexit.register(swap)
    return nn.Linear(4, 2).eval()


def _rewrite_results(change) -> None:
    """Patch the runner's result writer to tamper with what it writes: runners.harness.main's, which
    runs as __main__ in a fresh runner and is imported by a warm one (runners/harness/serve.py)."""
    for main in {id(m): m for m in (sys.modules["__main__"], sys.modules.get("runners.harness.main")) if m}.values():
        if hasattr(main, "write_text_atomic"):
            main.write_text_atomic = _tampering(main.write_text_atomic, change)


def _tampering(write, change):
    def tampered(path, text):
        write(path, change(json.loads(text), text))

    return tampered


def make_escaping_artifact_path(artifact: str, secret_sha256: str):
    """The ONNX export's result names an artifact outside its folder (absolute, or with ..)."""
    exfiltrate(secret_sha256)

    def change(result, text):
        if result["kind"] == "export" and result["job_id"].startswith("export-onnx"):
            result["artifact"] = artifact
            return json.dumps(result)
        return text

    _rewrite_results(change)
    return nn.Linear(4, 2).eval()


def make_huge_result(secret_sha256: str):
    """The ONNX verify job's result.json is 8 MiB (valid JSON, padded)."""
    exfiltrate(secret_sha256)
    _rewrite_results(lambda result, text: text + " " * (8 << 20) if result["job_id"].startswith("verify-onnx")
                     else text)
    return nn.Linear(4, 2).eval()
