"""The ``geopera`` command line."""
