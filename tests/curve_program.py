"""A sweep's `program` that replays a curve table's curves, epoch by epoch, for a real `hpsearch agent`: the test
that `hpsearch simulate` decides as the agent does runs both on the same table and compares their trials.

The trial's configuration is its flags; its curve, the nearest configuration's in the table HPSEARCH_TEST_TABLE
by the scales of the sweep file HPSEARCH_TEST_SWEEP, as the simulator finds it. Each epoch is written to the
metrics file once the agent has recorded the one before (it reads the trial's row in the sweep's SQLite store,
two folders above --output_dir), so the agent sees one new epoch per round, as the simulator asks after each. A
curve shorter than the trial's planned epochs ends in a failure there.
"""

import json
import os
import sqlite3
import sys
import time
from pathlib import Path

import yaml

from hpsearch.simulate.curves import CurveTable, scales


def value(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


flags = {k: value(v) for k, v in (arg[2:].split("=", 1) for arg in sys.argv[1:] if arg.startswith("--"))}
out = Path(flags["output_dir"])
agent_keys = ("output_dir", "metrics_file", "resume", "wandb")
config = {k: v for k, v in flags.items() if k not in agent_keys}
table = CurveTable.from_jsonl(Path(os.environ["HPSEARCH_TEST_TABLE"]))
curve = table.curve(config, scales(yaml.safe_load(Path(os.environ["HPSEARCH_TEST_SWEEP"]).read_text())))
db = sqlite3.connect(out.parent.parent / "hpsearch.db")

for record in curve.records:
    with open(flags["metrics_file"], "a") as fh:
        fh.write(json.dumps(record) + "\n")
    while db.execute("SELECT epochs FROM trials WHERE id = ?", (out.name,)).fetchone()[0] < record["epoch"]:
        time.sleep(0.02)  # the agent records it, then asks whether to stop (or ends this process)
time.sleep(0.3)  # a trainer ends a moment after its last epoch: the agent asks about that one too
if len(curve.records) < curve.planned:
    print(f"hpsearch train: error: the curve ends after epoch {len(curve.records)}", file=sys.stderr, flush=True)
    sys.exit(1)
print(json.dumps(curve.records[-1]), flush=True)
