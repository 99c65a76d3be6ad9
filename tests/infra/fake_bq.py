#!/usr/bin/env python3
"""A stateful stand-in for the `bq` commands infra/bigquery.sh uses (state in $FAKE_BQ_STATE).

`show` answers "Not found" (as bq does) or the stored table JSON in the shape `bq show
--format=json` prints (view.query, externalDataConfiguration, schema.fields); `mk` and `update`
store what they were given. It lets tests run the script's real path twice and see what a re-run
does; the flags themselves are checked against the real bq in the offline request recorder.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    state_path = Path(os.environ["FAKE_BQ_STATE"])
    with Path(f"{state_path}.log").open("a") as log:
        log.write(json.dumps(argv) + "\n")
    state: dict[str, dict[str, object]] = (
        json.loads(state_path.read_text()) if state_path.exists() else {}
    )
    flags = {a[2:].partition("=")[0]: a[2:].partition("=")[2] for a in argv if a.startswith("--")}
    verb, ref = [a for a in argv if not a.startswith("--")][:2]
    if verb == "show":
        if ref not in state:
            print(f"BigQuery error in show operation: Not found: {ref}", file=sys.stderr)
            return 2
        if flags.get("format") == "json":
            print(json.dumps(state[ref]))
        return 0
    if verb not in ("mk", "update") or (verb == "mk" and ref in state):
        print(f"fake bq: cannot {verb} {ref}", file=sys.stderr)
        return 1
    table: dict[str, object] = state.get(ref, {}) if verb == "update" else {}
    if "view" in flags:
        table["view"] = {"query": flags["view"], "useLegacySql": flags["use_legacy_sql"] != "false"}
    if "external_table_definition" in flags:
        schema, _, rest = flags["external_table_definition"].partition("@")
        fmt, _, uri = rest.partition("=")
        table["schema"] = {"fields": json.loads(Path(schema).read_text())}
        table["externalDataConfiguration"] = {"sourceUris": [uri], "sourceFormat": fmt}
    state[ref] = table
    state_path.write_text(json.dumps(state))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
