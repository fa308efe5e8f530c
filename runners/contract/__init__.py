"""What the host and the runners share: the job protocol, the format registry, the array files
and nvidia-smi's parser. Standard library and numpy only; the only part of runners/ that the
host (orchestrator/) imports."""
