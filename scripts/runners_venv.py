"""Make a Python environment for `--executor local` with the CPU runner image's pins.

    python scripts/runners_venv.py DIR     # then: nav-orch optimize ... --executor local --python DIR/bin/python

The versions come from docker-bake.hcl, so a local run uses the same toolchain as the
nav-orch/pytorch:cpu image (the torch CPU wheel comes from wherever pip finds it).
"""
from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from orchestrator.containers.bake import load_bake_file  # noqa: E402

PINS = {"torch": "TORCH_CPU_VERSION", "onnx": "ONNX_VERSION", "onnxruntime": "ONNXRUNTIME_VERSION",
        "onnxscript": "ONNXSCRIPT_VERSION", "numpy": "NUMPY_VERSION"}


def main(target: Path) -> int:
    variables = load_bake_file(ROOT / "docker-bake.hcl").resolve_variables()
    requirements = [f"{package}=={variables[name]}" for package, name in PINS.items()]
    python = target / "bin" / "python"
    if not python.exists():
        venv.create(target, with_pip=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *requirements],
                   check=True)
    print(python)
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.exit(main(Path(sys.argv[1])))
