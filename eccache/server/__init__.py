"""The cache server: domain node, thin gRPC servicer, interceptors, and the app that wires them."""
