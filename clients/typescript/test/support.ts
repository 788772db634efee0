// What the tests import: the package's public surface, plus generated enums they compare with.
export * from "../src/index.js";
export { ImportAction, SaveAction } from "../src/gen/secrets/v1/secret_store_pb.js";
