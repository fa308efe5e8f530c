"""What `--requirements` costs on this host (issue 28): the first run, which builds the derived image,
against a second run with the same requirements, which finds it.

    python benchmarks/requirements_cost.py --out cost.json

Runs `nav-orch optimize` on the tiny Hugging Face BERT of tests/models/hf_bert (transformers from
its requirements.txt) with the CPU images, --formats exported-program and no Triton stage, twice in
fresh workspaces, after removing any derived image of those requirements. Prints each run's wall time,
the build's own time (from nav-orch's note) and the derived image's size; writes the record to --out.
Needs Docker and the CPU images (`make setup`).
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "tests" / "models" / "hf_bert"


def optimize(workspace: Path, samples: Path) -> tuple[float, str]:
    started = time.monotonic()
    run = subprocess.run([sys.executable, "-m", "orchestrator.cli", "optimize", f"{MODEL}/model.py:make_bert",
                          "--samples", str(samples), "--requirements", str(MODEL / "requirements.txt"),
                          "--images", "cpu", "--gpus", "none", "--formats", "exported-program", "--batch-sizes", "1,4",
                          "--no-triton", "--progress", "plain", "--workspace", str(workspace)],
                         capture_output=True, text=True, cwd=ROOT)
    if run.returncode != 0:
        raise SystemExit(f"optimize failed: {run.stderr[-2000:]}")
    return time.monotonic() - started, run.stderr


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    images = subprocess.run(["docker", "images", "--filter", "label=org.nav-orch.derived-from", "--format",
                             "{{.Repository}}:{{.Tag}}"], capture_output=True, text=True, check=True).stdout.split()
    for tag in images:  # every derived image, so that the first run builds its own
        subprocess.run(["docker", "rmi", tag], capture_output=True, check=False)
    folder = Path(tempfile.mkdtemp(prefix="requirements-cost-"))
    mask = np.ones((2, 12), dtype=np.int64)
    np.savez(folder / "samples.npz", input_ids=np.arange(24, dtype=np.int64).reshape(2, 12) % 64, attention_mask=mask)
    record: dict = {"command": " ".join(sys.argv), "runs": []}
    for label in ("first (builds)", "second (finds it)"):
        wall, log = optimize(folder / label.split()[0], folder / "samples.npz")
        built = re.search(r"requirements: built (\S+) with .* in (\d+) s", log)
        found = re.search(r"requirements: (\S+) \(built before\)", log)
        record["runs"].append({"run": label, "wall_s": round(wall, 1), "build_s": int(built.group(2)) if built else 0,
                               "image": (built or found).group(1) if (built or found) else None})
    tag = record["runs"][0]["image"]
    size = subprocess.run(["docker", "image", "inspect", "--format", "{{.Size}}", tag], capture_output=True,
                          text=True, check=True).stdout.strip()
    base = subprocess.run(["docker", "image", "inspect", "--format", "{{.Size}}", "nav-orch/pytorch:cpu"],
                          capture_output=True, text=True, check=True).stdout.strip()
    record["derived_image"] = {"tag": tag, "size_gb": int(size) / 1e9, "added_gb": (int(size) - int(base)) / 1e9}
    args.out.write_text(json.dumps(record, indent=2))
    print(f"{'run':20} {'wall s':>8} {'build s':>8}")
    for run in record["runs"]:
        print(f"{run['run']:20} {run['wall_s']:8.1f} {run['build_s']:8d}")
    print(f"{tag}: {record['derived_image']['size_gb']:.2f} GB, {record['derived_image']['added_gb'] * 1000:.0f} MB "
          "over nav-orch/pytorch:cpu")
    return 0


if __name__ == "__main__":
    sys.exit(main())
