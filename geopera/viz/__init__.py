"""Pictures for docs and run previews (matplotlib, Agg backend)."""
