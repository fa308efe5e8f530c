"""What pip installs into a runner image, for images/derived/Dockerfile (standard library only).

    python installed.py constraints          every installed package as NAME==VERSION (pip's -c file)
    python installed.py snapshot FILE        the files in the install folders now, into FILE
    python installed.py stage FILE DEST      each file added since FILE, copied to DEST at its path
"""
import importlib.metadata
import os
import shutil
import site
import sys
import sysconfig


def install_folders():
    """Where pip puts packages and scripts for this Python (a venv's, or the system's site-packages)."""
    paths = sysconfig.get_paths()
    folders = {paths["purelib"], paths["platlib"], paths["scripts"], *site.getsitepackages()}
    if sys.prefix == sys.base_prefix:  # a system Python: pip may use /usr/local (Debian's scheme)
        folders.add("/usr/local/bin")
    return sorted(folder for folder in folders if os.path.isdir(folder))


def files():
    for folder in install_folders():
        for root, _dirs, names in os.walk(folder):
            for name in names:
                yield os.path.join(root, name)


def main(argv):
    if argv[:1] == ["constraints"]:
        versions = {dist.metadata["Name"].lower(): dist.version for dist in importlib.metadata.distributions()
                    if dist.metadata["Name"]}
        print("\n".join(f"{name}=={version}" for name, version in sorted(versions.items())))
    elif argv[:1] == ["snapshot"] and len(argv) == 2:
        with open(argv[1], "w") as out:
            out.write("\n".join(files()))
    elif argv[:1] == ["stage"] and len(argv) == 3:
        with open(argv[1]) as before:
            known = set(before.read().splitlines())
        os.makedirs(argv[2], exist_ok=True)
        for path in files():
            if path not in known:
                target = argv[2] + path
                os.makedirs(os.path.dirname(target), exist_ok=True)
                shutil.copy2(path, target, follow_symlinks=False)
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
