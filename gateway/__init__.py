"""fleetlet gateway: one virtual node per site, serving devices over CoAP."""
