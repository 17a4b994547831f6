"""``python -m fleetlet.agent``: run the SBC agent."""

from .main import main

raise SystemExit(main())
