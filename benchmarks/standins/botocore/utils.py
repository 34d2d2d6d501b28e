"""``botocore.utils`` of the stand-in: the name LitData imports."""

from botocore import Missing


class InstanceMetadataFetcher(Missing):
    """Stand-in: making one says botocore is missing."""
