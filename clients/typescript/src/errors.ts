/** Typed errors for every status the service returns; one mapping from Connect/gRPC errors. */
import { Code, ConnectError } from "@connectrpc/connect";

import { BadRequestSchema, ErrorInfoSchema } from "./gen/google/rpc/error_details_pb.js";

/** gRPC status names, as grpcurl and the Python client's grpc.StatusCode print them. */
export type StatusName =
  | "OK"
  | "CANCELLED"
  | "UNKNOWN"
  | "INVALID_ARGUMENT"
  | "DEADLINE_EXCEEDED"
  | "NOT_FOUND"
  | "ALREADY_EXISTS"
  | "PERMISSION_DENIED"
  | "RESOURCE_EXHAUSTED"
  | "FAILED_PRECONDITION"
  | "ABORTED"
  | "OUT_OF_RANGE"
  | "UNIMPLEMENTED"
  | "INTERNAL"
  | "UNAVAILABLE"
  | "DATA_LOSS"
  | "UNAUTHENTICATED";

const NAMES: readonly StatusName[] = [
  "OK",
  "CANCELLED",
  "UNKNOWN",
  "INVALID_ARGUMENT",
  "DEADLINE_EXCEEDED",
  "NOT_FOUND",
  "ALREADY_EXISTS",
  "PERMISSION_DENIED",
  "RESOURCE_EXHAUSTED",
  "FAILED_PRECONDITION",
  "ABORTED",
  "OUT_OF_RANGE",
  "UNIMPLEMENTED",
  "INTERNAL",
  "UNAVAILABLE",
  "DATA_LOSS",
  "UNAUTHENTICATED",
];

export function statusName(code: number): StatusName {
  return NAMES[code] ?? "UNKNOWN";
}

/**
 * A call to the secrets service failed. `code` is the gRPC status name; `message` is the
 * service's explanation (it never contains a secret value).
 */
export class SecretsError extends Error {
  readonly code: StatusName;

  constructor(message: string, code: StatusName = "UNKNOWN", options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}

export class Unauthenticated extends SecretsError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, "UNAUTHENTICATED", options);
  }
}

export class PermissionDenied extends SecretsError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, "PERMISSION_DENIED", options);
  }
}

/** One google.rpc.BadRequest field violation, e.g. `{ field: "changes[2].key", description: "..." }`. */
export interface FieldViolation {
  field: string;
  description: string;
}

/**
 * INVALID_ARGUMENT, from the service (with its BadRequest field violations) or raised by this
 * client before any call when the caller's input cannot be sent (`local` is then true).
 */
export class InvalidArgument extends SecretsError {
  readonly violations: FieldViolation[];
  readonly local: boolean;

  constructor(message: string, violations: FieldViolation[] = [], options?: { cause?: unknown; local?: boolean }) {
    super(message, "INVALID_ARGUMENT", options);
    this.violations = violations;
    this.local = options?.local ?? false;
  }
}

export class NotFound extends SecretsError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, "NOT_FOUND", options);
  }
}

export class AlreadyExists extends SecretsError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, "ALREADY_EXISTS", options);
  }
}

/** ABORTED: someone saved since the revision you sent. Reload, reapply, save again. */
export class RevisionConflict extends SecretsError {
  /** The scope's revision now (ErrorInfo metadata `current_revision`), when the service said. */
  readonly currentRevision: bigint | undefined;

  constructor(message: string, currentRevision?: bigint, options?: { cause?: unknown }) {
    super(message, "ABORTED", options);
    this.currentRevision = currentRevision;
  }
}

export class FailedPrecondition extends SecretsError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, "FAILED_PRECONDITION", options);
  }
}

export class ResourceExhausted extends SecretsError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, "RESOURCE_EXHAUSTED", options);
  }
}

/** The service or its database is unavailable; retrying later is safe. */
export class Unavailable extends SecretsError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, "UNAVAILABLE", options);
  }
}

export class DeadlineExceeded extends SecretsError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, "DEADLINE_EXCEEDED", options);
  }
}

/** A sealed value failed authentication on the server: it was altered or moved. */
export class DataLoss extends SecretsError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, "DATA_LOSS", options);
  }
}

const BY_CODE: Partial<Record<Code, new (message: string, options?: { cause?: unknown }) => SecretsError>> = {
  [Code.Unauthenticated]: Unauthenticated,
  [Code.PermissionDenied]: PermissionDenied,
  [Code.NotFound]: NotFound,
  [Code.AlreadyExists]: AlreadyExists,
  [Code.FailedPrecondition]: FailedPrecondition,
  [Code.ResourceExhausted]: ResourceExhausted,
  [Code.Unavailable]: Unavailable,
  [Code.DeadlineExceeded]: DeadlineExceeded,
  [Code.DataLoss]: DataLoss,
};

/** The typed error for anything a call threw (a ConnectError, or anything else as UNKNOWN). */
export function fromConnectError(reason: unknown): SecretsError {
  if (reason instanceof SecretsError) return reason;
  const err = ConnectError.from(reason);
  const message = err.rawMessage || statusName(err.code);
  const options = { cause: reason };
  if (err.code === Code.InvalidArgument) {
    const violations = err
      .findDetails(BadRequestSchema)
      .flatMap((bad) => bad.fieldViolations.map((v) => ({ field: v.field, description: v.description })));
    return new InvalidArgument(message, violations, options);
  }
  if (err.code === Code.Aborted) {
    let current: bigint | undefined;
    for (const info of err.findDetails(ErrorInfoSchema)) {
      const value = info.metadata["current_revision"];
      if (value !== undefined && /^-?\d+$/.test(value)) current = BigInt(value);
    }
    return new RevisionConflict(message, current, options);
  }
  const cls = BY_CODE[err.code];
  return cls ? new cls(message, options) : new SecretsError(message, statusName(err.code), options);
}
