"""The application layer: the `fgrpo` command, the local stack, reports, credentials, processes.

Nothing imports this package except bench/ and tests/ (a test checks the layers)."""
