
from pathlib import Path

# Where the runner code lies on the host: mounted read-only into every runner container.
RUNNERS_DIR = Path(__file__).resolve().parent
