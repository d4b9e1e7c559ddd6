"""One trial: `python -m hpsearch.train --key=value ...`, alone or as torchrun DDP workers."""
