// The generated secrets.v1 messages, enums and service descriptors, in one module.
export * from "./gen/secrets/v1/common_pb.js";
export * from "./gen/secrets/v1/directory_pb.js";
export * from "./gen/secrets/v1/operations_pb.js";
export * from "./gen/secrets/v1/resolver_pb.js";
export * from "./gen/secrets/v1/secret_store_pb.js";
