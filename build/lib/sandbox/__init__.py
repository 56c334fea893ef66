"""A local, in-memory Plausible Sites API that follows the behaviour reference exactly."""
