"""README's CLI reference is generated from the commands' --help and must be current."""

from __future__ import annotations

import importlib.util

from helpers import REPO

FIX = "README.md's CLI reference is stale: run `python tools/gen_cli_reference.py` and commit README.md."


def load_generator():
    spec = importlib.util.spec_from_file_location("gen_cli_reference", REPO / "tools" / "gen_cli_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_cli_reference_is_current():
    gen = load_generator()
    generated = gen.generate()
    up_to_date, changes = gen.check(REPO / "README.md")
    assert up_to_date, f"{FIX}\n{changes}"
    assert gen.current_block(REPO / "README.md") == generated, FIX


def test_reference_covers_every_command_in_order():
    import typer.main

    from imf_cli.main import app

    gen = load_generator()
    progs = [prog for prog, _ in gen.help_texts()]
    expected = ["imf"]
    for name, command in typer.main.get_command(app).commands.items():
        expected.append(f"imf {name}")
        expected += [f"imf {name} {sub}" for sub in getattr(command, "commands", {})]  # a group's commands
    assert progs == expected and "imf entities add" in progs
    text = gen.generate()
    assert "\x1b[" not in text and "╭" not in text  # plain text: no colour codes, no rich boxes
    assert max(len(line) for line in text.splitlines() if not line.startswith("<!--")) <= gen.WIDTH


def test_check_reports_a_stale_block_and_write_touches_only_the_block(tmp_path):
    gen = load_generator()
    readme = tmp_path / "README.md"
    original = f"# Title\n\nbefore\n\n{gen.START}\nold text\n{gen.END}\n\nafter\n"
    readme.write_text(original, encoding="utf-8")

    assert gen.main(["--check", "--readme", str(readme)]) == 1
    assert readme.read_text(encoding="utf-8") == original  # --check never writes
    assert gen.main(["--readme", str(readme)]) == 0
    text = readme.read_text(encoding="utf-8")
    assert text.startswith(f"# Title\n\nbefore\n\n{gen.START}\n") and text.endswith(f"{gen.END}\n\nafter\n")
    assert "old text" not in text and "#### `imf eval --help`" in text
    assert gen.main(["--check", "--readme", str(readme)]) == 0

    readme.write_text("no markers\n", encoding="utf-8")
    assert gen.main(["--check", "--readme", str(readme)]) == 2
