"""``python -m fleetlet.server.scheduler``: the scheduler on its own."""

from .main import main

main()
