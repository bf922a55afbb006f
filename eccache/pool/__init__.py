"""Memory pools: the allocator (pure) and the pool that owns bytes, slots and eviction."""
