"""uptake package."""
