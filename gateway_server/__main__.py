import sys

from gateway_server.cli import main

sys.exit(main())
