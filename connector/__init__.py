"""ECCacheConnector: vLLM's EC connector over eccache (load it with module path `connector.eccache_connector`).

Modules: `eccache_connector` (the facade vLLM loads), `scheduler` and `worker` (the two sides),
`config`, `namespace`, `state`, `tensors` (pure parts), `client_pool`, `handoff`, `metadata`, `prom`,
`compat` (which optional vLLM hooks exist),
and `bench` (load time vs vLLM's ECExampleConnector).
"""
