"""``python -m gateway.cli``: how ``satupintu run`` starts its children."""

import sys
import threading

from . import main

threading.current_thread().name = "main"
sys.exit(main())
