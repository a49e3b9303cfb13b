"""``python -m recsys.training``: the same entry point as the image's ``train``."""

import sys

from recsys.training.main import main

sys.exit(main())
