"""The README leads with the two commands and shows the replay command the stack test runs."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BLOCK = re.compile(r"<!-- replay-command:.*?-->\n```bash\n(.*?)```", re.S)


def test_readme_first_commands_and_replay_block() -> None:
    readme = (ROOT / "README.md").read_text()
    head = readme.splitlines()[:12]
    assert any(line.startswith("make demo") for line in head)
    assert any(line.startswith("make test") for line in head)
    in_readme = BLOCK.search(readme)
    in_docs = BLOCK.search((ROOT / "docs/replay.md").read_text())
    assert in_readme and in_docs
    assert in_readme.group(1) == in_docs.group(1)  # the block the stack test runs verbatim
    assert in_readme.group(1).startswith('gcloud pubsub topics publish "$KLINES_TOPIC"')
