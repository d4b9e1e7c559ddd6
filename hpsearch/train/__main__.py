import gc
import sys

from hpsearch.train.loop import main

# torch, torchvision and timm leave about a million objects behind their imports; every full collection, and
# the one at interpreter exit, walks them all (about 2 s per process on a small CPU). They live until exit.
gc.freeze()
sys.exit(main(sys.argv[1:]))
