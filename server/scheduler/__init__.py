"""The scheduler: a queue, a snapshot cache, filter and score plugins, and binding through the API."""
