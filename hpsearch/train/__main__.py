import sys

from hpsearch.train.loop import main

sys.exit(main(sys.argv[1:]))
