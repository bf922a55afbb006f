"""Soak and fault injection (`eccache chaos`): load held, faults survived, data lost or corrupted (0)."""
