"""The contracts: JSON Schemas for the API, CDDL for the wire, and test vectors."""
