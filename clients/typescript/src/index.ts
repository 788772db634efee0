/**
 * Client library for the workflow secrets service (secrets.v1).
 *
 *   const executor = new ExecutorClient("127.0.0.1:50051", token);
 *   const resolution = await executor.resolve("ws1", { http: { auth: "Bearer {{API_TOKEN}}" } },
 *                                             { trigger: "manual", triggeringUserId: "u1" });
 *   const redactor = resolution.redactor();      // mask the values in anything you log
 */
export {
  DirectoryClient,
  EditorClient,
  ExecutorClient,
  OpsClient,
  type CallOptions,
  type ClientOptions,
  type DetailsOptions,
  type ExplainOptions,
  type ImportOptions,
  type JsonObject,
  type JsonValue,
  type PageOptions,
  type PermissionName,
  type ResolveOptions,
  type RetryOptions,
  type SaveOptions,
  type ScopeOption,
  type SecretRoleName,
  type TlsOptions,
  type TriggerName,
} from "./client.js";
export {
  AlreadyExists,
  DataLoss,
  DeadlineExceeded,
  FailedPrecondition,
  InvalidArgument,
  NotFound,
  PermissionDenied,
  ResourceExhausted,
  RevisionConflict,
  SecretsError,
  Unauthenticated,
  Unavailable,
  fromConnectError,
  statusName,
  type FieldViolation,
  type StatusName,
} from "./errors.js";
export { MASK, MIN_MASKED_LENGTH, Redactor, maskedForms } from "./redact.js";
export { redactConsole, redactingWrite } from "./logging.js";
export {
  Resolution,
  resolutionFromResponse,
  type BlockError,
  type Reference,
  type ResolvedBlock,
  type ScopeName,
} from "./resolution.js";
/** The generated messages and service descriptors (protoc-gen-es), for anything not wrapped here. */
export * as secretsV1 from "./proto.js";
