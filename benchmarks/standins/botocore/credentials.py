"""``botocore.credentials`` of the stand-in: the name LitData imports."""

from botocore import Missing


class InstanceMetadataProvider(Missing):
    """Stand-in: making one says botocore is missing."""
