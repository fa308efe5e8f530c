"""The CLI reference (docs/cli.md), generated from the typer app so that it cannot drift from the code.

    python scripts/cli_reference.py            # the Markdown on stdout
    python scripts/cli_reference.py FILE.md    # written to FILE.md

It is also an MkDocs hook (mkdocs.yml `hooks:`): every `mkdocs build` adds the page `cli.md` made
from the installed code, so no copy of it lies in the repository. Each command and subcommand gets
its usage, its help and its arguments and options (grouped by their help panels where the CLI names
some), written as `--help` writes them, in plain text. Only the command objects' own click API is used
(recent typer releases carry their own copy of click, so no `import click` here).
"""
from __future__ import annotations

import inspect
import sys
import textwrap
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PAGE = "cli.md"
WIDTH = 80  # what a code block of the Material theme shows without scrolling

INTRO = """\
# CLI reference

Every command and option of `nav-orch`, generated from the command line's own definition
(`orchestrator/cli.py`) by `scripts/cli_reference.py` each time this site is built, so it says what
the installed code does. `nav-orch COMMAND --help` prints the same. A default that depends on the
machine (its CPU cores) is shown as the machine that built this page had it.

For what the options mean in a run, see [Concepts](concepts.md); exit codes are listed
[there too](concepts.md#exit-codes).
"""


def typer_command() -> Any:
    """The click command behind `orchestrator.cli.app` (imported here, with the checkout on the path)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import typer

    from orchestrator.cli import app

    return typer.main.get_command(app)


def is_group(command: Any) -> bool:
    return hasattr(command, "list_commands")


def context(command: Any, name: str, parent: Any = None) -> Any:
    return command.context_class(command, info_name=name, parent=parent, terminal_width=WIDTH,
                                 max_content_width=WIDTH)


def help_text(command: Any) -> str:
    return inspect.cleandoc(command.help or command.short_help or "")


def panels(command: Any, ctx: Any) -> dict[str, list[tuple[str, str]]]:
    """The help records of the command's visible parameters, by help panel (typer's `rich_help_panel`),
    in the order the panels first appear; `--help` itself is left out."""
    grouped: dict[str, list[tuple[str, str]]] = {}
    for param in command.get_params(ctx):
        record = param.get_help_record(ctx)
        if record is None or param.name == "help":
            continue
        default = "Arguments" if param.param_type_name == "argument" else "Options"
        grouped.setdefault(getattr(param, "rich_help_panel", None) or default, []).append(record)
    return grouped


def definitions(records: list[tuple[str, str]], indent: str = "  ") -> list[str]:
    """Two columns, as --help lays them out; help wrapped without breaking words or hyphenated values."""
    column = min(max(len(name) for name, _ in records), 30) + 2
    lines = []
    for name, text in records:
        wrapped = textwrap.wrap(" ".join(text.split()), WIDTH - len(indent) - column, break_long_words=False,
                                break_on_hyphens=False) or [""]
        if len(name) + 2 > column:  # a long name: its help starts on the next line
            lines.append(f"{indent}{name}")
            wrapped_lines = wrapped
        else:
            lines.append(f"{indent}{name.ljust(column)}{wrapped[0]}".rstrip())
            wrapped_lines = wrapped[1:]
        lines += [f"{indent}{' ' * column}{line}" for line in wrapped_lines]
    return lines


def command_text(command: Any, ctx: Any) -> str:
    """Usage, help and parameters as plain text."""
    lines = [f"Usage: {ctx.command_path} {' '.join(command.collect_usage_pieces(ctx))}"]
    text = help_text(command)
    if text:
        lines += ["", *textwrap.indent(text, "  ").splitlines()]
    for panel, records in panels(command, ctx).items():
        lines += ["", f"{panel}:", *definitions(records)]
    if is_group(command):
        listed = [(name, help_text(sub).split("\n\n")[0]) for name, sub in sorted_commands(command, ctx)]
        if listed:
            lines += ["", "Commands:", *definitions(listed)]
    return "\n".join(lines)


def sorted_commands(group: Any, ctx: Any) -> list[tuple[str, Any]]:
    """The group's visible subcommands, in the order the CLI lists them."""
    found = [(name, group.get_command(ctx, name)) for name in group.list_commands(ctx)]
    return [(name, command) for name, command in found if command is not None and not command.hidden]


def sections(command: Any, ctx: Any) -> list[str]:
    """A Markdown section per command, this one first, then every subcommand's, depth first."""
    out = [f"## `{ctx.command_path}`", "", "```text", command_text(command, ctx), "```", ""]
    if is_group(command):
        for name, sub in sorted_commands(command, ctx):
            with context(sub, name, ctx) as sub_ctx:
                out += sections(sub, sub_ctx)
    return out


def markdown(command: Any = None, name: str = "nav-orch") -> str:
    command = command or typer_command()
    with context(command, name) as ctx:
        return INTRO + "\n" + "\n".join(sections(command, ctx))


# --- the MkDocs hook -------------------------------------------------------------------------------


def on_files(files: Any, config: Any) -> Any:
    """Add the generated page to the site's files (mkdocs >= 1.6: File.generated)."""
    from mkdocs.structure.files import File

    files.append(File.generated(config, PAGE, content=markdown()))
    return files


def main(argv: list[str]) -> int:
    text = markdown()
    if argv:
        Path(argv[0]).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
