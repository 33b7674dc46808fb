"""Write the README's setting table (what `simpo train objective=simpo model=<setting>` composes),
generated from the configs: python scripts/recipe_table.py. tests/unit/config/test_recipes.py
fails when the README's copy is stale."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from simpo_cli.config.recipes import settings_table

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(r"(<!-- recipes:start -->\n).*?(<!-- recipes:end -->)", re.S)


def main() -> int:
    text = README.read_text()
    if not BLOCK.search(text):
        print(f"{README}: no <!-- recipes:start --> ... <!-- recipes:end --> block", file=sys.stderr)
        return 1
    README.write_text(BLOCK.sub(lambda m: m.group(1) + settings_table() + "\n" + m.group(2), text))
    print(f"updated {README}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
