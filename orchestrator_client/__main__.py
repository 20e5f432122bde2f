"""``python -m orchestrator_client`` runs the ``gatewayctl`` command line."""

import sys

from orchestrator_client.cli import main

if __name__ == "__main__":
    sys.exit(main())
