"""The ``hfdistac`` command line: parses, dispatches to one library call per command, formats errors."""
