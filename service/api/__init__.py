"""gRPC servicers: protobuf <-> domain objects and status codes, nothing else."""
