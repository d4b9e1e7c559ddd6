"""A sweep's `program` that replays a curve table's curves for real `hpsearch agent`s: the tests that `hpsearch
simulate` decides as the agent does run both on the same table and compare their trials.

The trial's configuration is its flags; its curve, the nearest configuration's in the table HPSEARCH_TEST_TABLE
by the scales of the sweep file HPSEARCH_TEST_SWEEP, as the simulator finds it. A promoted trial goes on from the
epochs the store holds for it (its checkpoint, written before each record, is what lets the agent promote it).
A curve shorter than the trial's planned epochs ends in a failure there.

Real processes are not in lockstep, so the programs of a sweep release their records in the simulator's order,
through a gate (the folder HPSEARCH_TEST_GATE) on the simulated clock: each program keeps there the time its next
record is due (its start, the time of the latest record released, plus the `epoch_time` of each record), and the
program whose record is due first releases it only once the agent has caught up with everything before: every
released record is in the store, every trial ended is recorded so, and as many trials have started as had in the
simulation before that time (HPSEARCH_TEST_STARTS, the simulator's start times). The store is the sweep's SQLite
store, two folders above --output_dir. Nothing waits on the wall clock.
"""

import json
import os
import signal
import sqlite3
import sys
import time
from pathlib import Path

import yaml

from hpsearch.simulate.backend import epoch_time
from hpsearch.simulate.curves import CurveTable, scales
from hpsearch.train import CHECKPOINT


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
db = sqlite3.connect(out.parent.parent / "hpsearch.db", timeout=60)
gate, starts = Path(os.environ["HPSEARCH_TEST_GATE"]), json.loads(os.environ["HPSEARCH_TEST_STARTS"])
mine, clock = gate / f"{out.name}.json", gate / "clock"


def write(path: Path, text: str) -> None:
    (tmp := path.with_suffix(".tmp")).write_text(text)
    tmp.replace(path)  # (the others never read half a file)


def leave(*_) -> None:
    mine.unlink(missing_ok=True)
    os._exit(0)


def caught_up(due: float) -> bool:
    """Whether the agent has recorded every record released, every trial ended and every start due before `due`."""
    programs = {}
    for path in gate.glob("*.json"):
        try:
            programs[path.stem] = json.loads(path.read_text())
        except FileNotFoundError:  # (a program that just left)
            return False
    rows = db.execute("SELECT id, epochs FROM trials WHERE sweep_id = ? AND state = 'running'", (out.parent.name,))
    running = dict(rows.fetchall())
    if running.keys() != programs.keys() or any(running[t] != p["released"] for t, p in programs.items()):
        return False
    started = len((gate / "starts").read_text())
    return started >= sum(t < due for t in starts) and min(p["next"] for p in programs.values()) == due


signal.signal(signal.SIGTERM, leave)  # paused or stopped: gone from the gate
done = db.execute("SELECT epochs FROM trials WHERE id = ?", (out.name,)).fetchone()[0]
now = float(clock.read_text()) if clock.exists() else 0.0
due = now + epoch_time(curve.records[done])
write(mine, json.dumps({"next": due, "released": done}))
with open(gate / "starts", "a") as fh:
    fh.write(".")  # one character a start
for i in range(done, len(curve.records)):
    while not caught_up(due):
        time.sleep(0.02)
    record, at = curve.records[i], due
    due = at + epoch_time(curve.records[i + 1]) if i + 1 < len(curve.records) else float("inf")
    write(clock, repr(at))
    write(mine, json.dumps({"next": due, "released": i + 1}))
    write(out / CHECKPOINT, str(i + 1))  # as a trainer keeps it: before the record (a promotion needs to see it)
    with open(flags["metrics_file"], "a") as fh:
        fh.write(json.dumps(record) + "\n")
mine.unlink()
if len(curve.records) < curve.planned:  # a failure ends the process with its last epoch
    print(f"hpsearch train: error: the curve ends after epoch {len(curve.records)}", file=sys.stderr, flush=True)
    sys.exit(1)
while db.execute("SELECT epochs FROM trials WHERE id = ?", (out.name,)).fetchone()[0] < len(curve.records):
    time.sleep(0.02)  # a trainer ends a moment after its last epoch: the agent reads that one while it runs
print(json.dumps(curve.records[-1]), flush=True)
