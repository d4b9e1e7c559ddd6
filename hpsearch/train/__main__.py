import gc
import sys

from hpsearch.params import ParamError, parse_args
from hpsearch.train.metrics import error

try:
    parse_args(sys.argv[1:])  # a mistyped flag is answered at once, not after seconds of imports
except ParamError as e:
    error(str(e))
    sys.exit(2)

from hpsearch.train.loop import main  # noqa: E402

# torch, torchvision and timm leave about a million objects behind their imports; every full collection, and
# the one at interpreter exit, walks them all (about 2 s per process on a small CPU). They live until exit.
gc.freeze()
sys.exit(main(sys.argv[1:]))
