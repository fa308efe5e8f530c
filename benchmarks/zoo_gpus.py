"""A zoo of 2N small models on one GPU against N GPUs of this host, in one run (issue "Several
GPUs, measured").

    python benchmarks/zoo_gpus.py --models 4 --python python3 --workspace /tmp/zoo-gpus [--out zoo-gpus.json]

The zoo: `--models` copies of the bundled MLP (examples/mlp.py, input 8x64), each asking for one GPU,
optimized with the local executor (`--python`: the runners' Python; for GPU hosts without
Docker) in TorchScript and ExportedProgram at batch sizes 1 and 8, without the Triton stage. It
runs twice into fresh folders: `nav-orch zoo --gpus 1`, then `--gpus all` (or the two `--runs`); the local zoo gives
each GPU model a GPU of its own (orchestrator/zoo/local.py). Prints both wall times and each
model's; `--out` gets one JSON record.
"""
from __future__ import annotations

import argparse
import datetime
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def zoo_text(models: int, python: str) -> str:
    head = f"""[defaults]
gpus = "1"
batch_sizes = [1, 8]
triton = false
executor = "local"
python = "{python}"
formats = ["torchscript-trace", "exported-program"]
precisions = ["fp32", "fp16"]
memory_formats = ["contiguous"]
"""
    return head + "".join(f'\n[[model]]\nname = "mlp-{i}"\nmodel = "{ROOT}/examples/mlp.py:make_mlp"\n'
                          'inputs = ["input:8,64:float32"]\n' for i in range(models))


def run(folder: Path, gpus: str) -> dict:
    shutil.rmtree(folder / "out", ignore_errors=True)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "orchestrator.cli", "zoo", str(folder / "zoo.toml"), "--workspace",
                           str(folder / "out"), "--gpus", gpus], cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if not (folder / "out" / "zoo.json").is_file():
        raise SystemExit(f"nav-orch zoo --gpus {gpus} wrote no zoo.json: {done.stderr.strip()[-500:]}")
    zoo = json.loads((folder / "out" / "zoo.json").read_text())
    placed = {}
    for model in zoo["models"]:
        results = json.loads((folder / "out" / model["workspace"] / "results.json").read_text())
        placed[model["name"]] = sorted({t["placement"] for t in results["timeline"] if t["placement"] != "CPU"})
    return {"gpus": gpus, "wall_s": wall, "exit_code": done.returncode, "gpus_used": placed,
            "models": [{k: m[k] for k in ("name", "status", "best", "wall_s", "error")} for m in zoo["models"]]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=int, default=4)
    parser.add_argument("--python", default="python3", help="the runners' Python (with torch)")
    parser.add_argument("--workspace", type=Path, default=Path("/tmp/zoo-gpus"))
    parser.add_argument("--runs", nargs=2, default=["1", "all"], metavar=("ONE", "MANY"),
                        help="the zoo's --gpus for the two runs (default: 1 and all; device=2 device=2,3 leaves the "
                        "host's other GPUs to other work)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    args.workspace.mkdir(parents=True, exist_ok=True)
    (args.workspace / "zoo.toml").write_text(zoo_text(args.models, args.python))
    record = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "command": " ".join([sys.executable, *sys.argv]), "runs": []}
    for gpus in args.runs:
        entry = run(args.workspace, gpus)
        record["runs"].append(entry)
        used = sorted({gpu for gpus in entry["gpus_used"].values() for gpu in gpus})
        print(f"--gpus {entry['gpus']:4}: {entry['wall_s']:6.1f} s over {', '.join(used) or 'no GPU'} "
              f"(exit {entry['exit_code']}); " + ", ".join(f"{m['name']} {m['status']} {m['wall_s']:.1f} s"
                                                          for m in entry["models"]), flush=True)
        if args.out:  # after each run: a run cut short keeps the first
            args.out.write_text(json.dumps(record, indent=2))
    runs = record["runs"]
    print(f"speed-up: {runs[0]['wall_s'] / runs[1]['wall_s']:.2f}x")


if __name__ == "__main__":
    main()
