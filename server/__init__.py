"""fleetlet control plane: store, api, auth, scheduler, controllers, and the client/CLI."""
