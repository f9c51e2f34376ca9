import sys

from posture_monitor.cli import main

sys.exit(main())
