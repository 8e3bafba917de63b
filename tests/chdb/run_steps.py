"""Runs SQL steps in chdb (ClickHouse in-process) for tests/chdb_schema.rs.

Input (JSON file named by argv[1]):
    {"database": "alphapt",
     "steps": [{"label": "005_ohlc_1m.sql #2", "sql": "...", "capture": false}, ...]}
Steps run in order in one chdb Session, in `database` (created first). A step with
"capture": true has its rows kept. Output on stdout, one JSON object:
    {"engine": "<version>", "captures": {"<label>": [row, ...]}}
The first failing step prints its label and the server's message on stderr and
exits 1, so the Rust test fails with the reason.
"""
import json
import sys

from chdb import session


def rows(result):
    text = result.bytes().decode() if hasattr(result, "bytes") else str(result)
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def main():
    with open(sys.argv[1]) as f:
        job = json.load(f)
    s = session.Session()
    database = job["database"]
    s.query(f"CREATE DATABASE IF NOT EXISTS {database}")
    s.query(f"USE {database}")
    captures = {}
    for step in job["steps"]:
        try:
            if step.get("capture"):
                captures[step["label"]] = rows(s.query(step["sql"], "JSONEachRow"))
            else:
                s.query(step["sql"])
        except Exception as error:  # chdb raises its own exception types
            print(f"{step['label']}: {error}", file=sys.stderr)
            return 1
    version = rows(s.query("SELECT version() AS v", "JSONEachRow"))[0]["v"]
    json.dump({"engine": version, "captures": captures}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
