"""Print the README's Quickstart commands, one per line; fail unless there are exactly two.

The Quickstart is the first ```bash block after the "## Quickstart" heading; blank lines and comments
do not count. Used by .ci/run (which runs them) and tests/test_packaging.py (which checks the rule).
"""

import re
import sys
from pathlib import Path


def quickstart(readme: str) -> list[str]:
    m = re.search(r"^## Quickstart\s*$(.*?)^```bash\n(.*?)^```", readme, re.S | re.M)
    if not m:
        raise SystemExit("README.md: no ```bash block under '## Quickstart'")
    return [line.strip() for line in m.group(2).splitlines() if line.strip() and not line.strip().startswith("#")]


if __name__ == "__main__":
    cmds = quickstart(Path(sys.argv[1] if len(sys.argv) > 1 else "README.md").read_text())
    if len(cmds) != 2:
        raise SystemExit(f"README.md: the Quickstart must hold exactly two commands (install+run, test); it holds {len(cmds)}")
    print("\n".join(cmds))
