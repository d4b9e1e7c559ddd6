"""A sweep's `program` with known optima, for the tests of searches (hpsearch's trainer contract, like
stub_trainer.py): its flags x and y in [0, 1]; each epoch (of --epochs, --epoch_s seconds each) it records
  score = 100 - 100 * |x - 0.8|   (one optimum, at x = 0.8; y has no effect), reached in full at the last epoch,
  a = 100 * x * y,  b = 100 * (1 - x) * y   (two objectives to maximize: the Pareto front is y = 1),
and prints the last record as its summary.

--hold=PATH holds runs for a test's events, as stub_trainer.py's does: after each epoch, a run waits while PATH
exists and its `a` is under the number PATH holds (empty: every run waits). A run that a pruner must stop then
waits for the stop instead of racing it to its last epoch.
"""

import json
import sys
import time
from pathlib import Path

flags = dict(arg[2:].split("=", 1) for arg in sys.argv[1:] if arg.startswith("--") and "=" in arg)
x, y = float(flags.get("x", 0.5)), float(flags.get("y", 1.0))
epochs, epoch_s = int(flags.get("epochs", 3)), float(flags.get("epoch_s", 0.1))
Path(flags["output_dir"]).mkdir(parents=True, exist_ok=True)


def held(a: float) -> bool:
    try:
        bar = Path(flags["hold"]).read_text().strip()
    except FileNotFoundError:
        return False
    return not bar or a < float(bar)


record = {}
for epoch in range(1, epochs + 1):
    time.sleep(epoch_s)
    share = epoch / epochs
    record = {"epoch": epoch, "score": share * (100 - 100 * abs(x - 0.8)), "a": 100 * x * y, "b": 100 * (1 - x) * y}
    with open(flags["metrics_file"], "a") as fh:
        fh.write(json.dumps(record) + "\n")
    while "hold" in flags and held(record["a"]):
        time.sleep(0.05)
print(json.dumps(record), flush=True)
