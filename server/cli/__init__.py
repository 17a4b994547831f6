"""The ``fleetlet`` command line: kubectl for fleets of edge devices."""
