"""The SBC agent: drives the local Docker Engine for a Docker-capable device."""
