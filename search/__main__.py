import sys

from .cli import main

# a pipe (tee, a log file) gets each line when it is printed, in order with the progress bars on stderr,
# not in blocks at the end of a long stage
sys.stdout.reconfigure(line_buffering=True)
sys.exit(main())
