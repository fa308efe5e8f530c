"""Reading the MODEL argument without importing the model (the host has no framework)."""
from __future__ import annotations

import ast
import json
import re
import sys
from pathlib import Path
from typing import Any, Optional

from orchestrator.config import ModelRef
from orchestrator.errors import BadInput

# .keras: a Keras 3 model file (model.save("m.keras")).
SUFFIX_FORMS = {".pt": "torchscript", ".ts": "torchscript", ".pt2": "exported_program", ".onnx": "onnx",
                ".keras": "keras"}
# Files that fix their framework whatever --framework says (others default to torch).
SUFFIX_FRAMEWORKS = {".onnx": "onnx", ".keras": "tensorflow"}
# A folder holding saved_model.pb is a TensorFlow SavedModel (jax2tf writes the same layout).
SAVEDMODEL_FILE = "saved_model.pb"
# Keras 3 runs on the TensorFlow backend in the tensorflow images; flax is JAX underneath.
IMPORT_FRAMEWORKS = {"torch": "torch", "tensorflow": "tensorflow", "keras": "tensorflow", "tf_keras": "tensorflow",
                     "jax": "jax", "flax": "jax"}


def parse_model_args(pairs: list[str]) -> dict[str, Any]:
    """`key=value` pairs; values are JSON where they parse (numbers, lists), else strings."""
    args = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.isidentifier():
            raise BadInput(f"--model-arg {pair!r}: expected key=value with a Python identifier as key")
        try:
            args[key] = json.loads(value)
        except json.JSONDecodeError:
            args[key] = value
    return args


def infer_framework(source: Path) -> Optional[str]:
    """The framework a factory file imports, read from its text."""
    imported = set(re.findall(r"^\s*(?:import|from)\s+([A-Za-z_]\w*)", source.read_text(errors="replace"), re.M))
    found = {IMPORT_FRAMEWORKS[name] for name in imported if name in IMPORT_FRAMEWORKS}
    return found.pop() if len(found) == 1 else None


def parse_model(text: str, model_args: list[str], framework: Optional[str]) -> ModelRef:
    path_text, factory = text, ""
    if ".py:" in text:
        path_text, _, factory = text.partition(".py:")
        path_text += ".py"
        if not factory.isidentifier():
            raise BadInput(f"model {text}: the model argument takes FILE.py:FACTORY: name the factory function, as "
                           f"in model.py:make_model ({factory!r} is not a function name)")
    path = Path(path_text).expanduser()
    if not path.exists():
        raise BadInput(f"model {path_text}: no such file")
    if path.is_dir():
        return parse_savedmodel(path, path_text, model_args, framework)
    if not path.is_file():
        raise BadInput(f"model {path_text}: not a file")
    path = path.resolve()
    if path.suffix == ".py":
        if not factory.isidentifier():
            raise BadInput(f"model {text}: name the factory function, as in {path_text}:make_model")
        check_defines(path, factory, text)
        framework = framework or infer_framework(path)
        if framework is None:
            raise BadInput(f"model {text}: cannot tell its framework from its imports; "
                           "pass --framework (torch, tensorflow or jax)")
        return ModelRef(path=path, form="factory", factory=factory, args=parse_model_args(model_args),
                        framework=framework)
    form = SUFFIX_FORMS.get(path.suffix)
    if form is None:
        raise BadInput(f"model {path_text}: expected file.py:factory, a TorchScript file (.pt, .ts), "
                       "an ExportedProgram (.pt2), an ONNX model (.onnx), a Keras model (.keras) "
                       "or a SavedModel folder")
    if model_args:
        raise BadInput("--model-arg applies only to a file.py:factory model")
    fixed = SUFFIX_FRAMEWORKS.get(path.suffix)
    if fixed and framework not in (None, fixed):
        raise BadInput(f"model {path_text}: a {path.suffix} file is run as framework {fixed}, not {framework}; "
                       "drop --framework")
    return ModelRef(path=path, form=form, framework=fixed or framework or "torch")


def parse_savedmodel(path: Path, path_text: str, model_args: list[str], framework: Optional[str]) -> ModelRef:
    """A folder MODEL: a TensorFlow SavedModel (run as framework tensorflow, whoever wrote it)."""
    if not (path / SAVEDMODEL_FILE).is_file():
        raise BadInput(f"model {path_text}: a folder, but not a TensorFlow SavedModel (no {SAVEDMODEL_FILE} in it)")
    if model_args:
        raise BadInput("--model-arg applies only to a file.py:factory model")
    if framework not in (None, "tensorflow"):
        raise BadInput(f"model {path_text}: a SavedModel is run as framework tensorflow, not {framework}; "
                       "drop --framework")
    return ModelRef(path=path.resolve(), form="savedmodel", framework="tensorflow")


def parse_function(text: str, framework: Optional[str]) -> ModelRef:
    """`file.py:function` for `nav-orch profile`: any callable, run in the torch image unless
    --framework names another (numpy, which the runner feeds it, is in every image)."""
    path_text, sep, name = text.rpartition(":")
    if not sep or not path_text.endswith(".py") or not name.isidentifier():
        raise BadInput(f"{text}: expected file.py:function, as in model.py:predict")
    path = Path(path_text).expanduser()
    if not path.is_file():
        raise BadInput(f"{path_text}: no such file")
    check_defines(path, name, text)
    return ModelRef(path=path.resolve(), form="function", factory=name, framework=framework or "torch")


def check_defines(path: Path, name: str, text: str) -> None:
    """The file parses and binds `name` at its top level, read from its syntax tree: the host never
    imports it (the model's framework lives only in the runner images). A name the tree cannot
    settle (a star import, globals() or exec, a module __getattr__) is left to the runner."""
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except SyntaxError as error:
        where = f"{path}:{error.lineno}" if error.lineno else str(path)
        raise BadInput(f"model {where}: Python {sys.version_info.major}.{sys.version_info.minor} cannot parse it: "
                       f"{error.msg}") from None
    except (OSError, ValueError) as error:
        raise BadInput(f"model {path}: cannot be read as Python source ({error})") from None
    names = top_level_names(tree.body)
    dynamic = any(isinstance(node, ast.Name) and node.id in DYNAMIC_BINDERS for node in ast.walk(tree))
    if name in names or dynamic or names & {"*", "__getattr__"}:
        return
    defined = [node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef))]
    raise BadInput(f"model {text}: {path.name} defines no {name!r} at its top level"
                   + (f" (it defines {', '.join(defined[:8])})" if defined else ""))


# Names through which a module can bind others that its syntax tree does not show.
DYNAMIC_BINDERS = {"globals", "exec", "vars"}


def top_level_names(body: list[ast.stmt]) -> set[str]:
    """The names a module's statements bind at its top level, also inside if/try/with/for blocks;
    "*" for a star import, which may bind any."""
    names: set[str] = set()
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {alias.asname or alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {n.id for target in targets for n in ast.walk(target) if isinstance(n, ast.Name)}
        else:  # a block: what its bodies bind is bound at the top level too
            blocks = [getattr(node, field, []) for field in ("body", "orelse", "finalbody")]
            blocks += [handler.body for handler in getattr(node, "handlers", [])]
            for block in blocks:
                names |= top_level_names(block)
    return names


MISSING_MODULE = re.compile(r"ModuleNotFoundError: No module named '([A-Za-z0-9_.]+)'")


def missing_module(error: str, model_folder: Path, where: str, in_images: bool) -> Optional[str]:
    """What to do when the source model failed for want of a package that is not the model's own
    (not in its folder), as one line; None for any other failure."""
    found = MISSING_MODULE.search(error)
    if found is None:
        return None
    top = found.group(1).split(".")[0]
    if (model_folder / top).is_dir() or (model_folder / f"{top}.py").is_file():
        return None  # the model's own module, which failed for another reason
    if in_images:
        return (f"the source model imports {top}, which {where} does not have: add the package that provides it "
                f"with --requirements FILE (a requirements file, e.g. a line `{top}`)")
    return f"the source model imports {top}, which {where} does not have: pip install it into that Python"
