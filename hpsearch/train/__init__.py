"""One trial: `python -m hpsearch.train --key=value ...`, alone or as torchrun DDP workers."""

CHECKPOINT = "checkpoint.pt"  # in output_dir, rewritten every epoch; the agent looks for it to resume a trial
