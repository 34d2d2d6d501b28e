"""``geopera evaluate``: judge backbones on labelled data with frozen-feature probes."""
