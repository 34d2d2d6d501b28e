"""``geopera archive`` (inspect, sample) and ``geopera data`` (the sample archive, fetch)."""
