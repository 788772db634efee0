/**
 * Clients for the four kinds of caller: executors, editors, the platform's membership sync and
 * operators. Each hides the metadata (bearer token, x-user-id), applies a default deadline,
 * retries UNAVAILABLE with backoff where a call is safe to repeat, and throws the typed errors
 * of ./errors.ts instead of transport errors. Input that cannot be sent is refused before any
 * call (InvalidArgument with `local` true).
 *
 * Transport: @connectrpc/connect-node's gRPC protocol over Node's own http2 module (TLS and
 * mutual TLS through its options), driven by the service descriptors protoc-gen-es generates.
 */
import { randomUUID } from "node:crypto";

import type { DescService, JsonObject, JsonValue } from "@bufbuild/protobuf";
import { timestampFromDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import { createClient, type CallOptions as ConnectCallOptions, type Client, type Transport } from "@connectrpc/connect";
import { Http2SessionManager, createGrpcTransport } from "@connectrpc/connect-node";

import { InvalidArgument, Unavailable, fromConnectError } from "./errors.js";
import { Resolution, resolutionFromResponse } from "./resolution.js";
import { Scope, SecretRole, Trigger, WorkspacePermission } from "./gen/secrets/v1/common_pb.js";
import type { BlockInputs, SecretSummary } from "./gen/secrets/v1/common_pb.js";
import {
  Directory,
  type ListWorkspaceMembersResponse,
  type PutWorkspaceMemberResponse,
  type RemoveWorkspaceMemberResponse,
  type WorkspaceMember,
} from "./gen/secrets/v1/directory_pb.js";
import {
  Operations,
  type AuditEvent,
  type GetKeyStatusResponse,
  type ListAuditEventsResponse,
  type RotateKeysResponse,
} from "./gen/secrets/v1/operations_pb.js";
import { Resolver } from "./gen/secrets/v1/resolver_pb.js";
import {
  SecretStore,
  type ExplainReferencesResponse,
  type ImportDotenvResponse,
  type ListDeletedSecretsResponse,
  type ListReferenceableResponse,
  type ListSecretsResponse,
  type RestoreDeletedSecretResponse,
  type SaveSecretsResponse,
  type SecretDetails,
} from "./gen/secrets/v1/secret_store_pb.js";

export type TriggerName = "manual" | "api" | "webhook" | "schedule";
export type ScopeOption = "workspace" | "personal";
export type SecretRoleName = "admin" | "member";
export type PermissionName = "read" | "write" | "admin";

const TRIGGERS: Record<TriggerName, Trigger> = {
  manual: Trigger.MANUAL,
  api: Trigger.API,
  webhook: Trigger.WEBHOOK,
  schedule: Trigger.SCHEDULE,
};
const SCOPES: Record<ScopeOption, Scope> = { workspace: Scope.WORKSPACE, personal: Scope.PERSONAL };
const ROLES: Record<SecretRoleName, SecretRole> = { admin: SecretRole.ADMIN, member: SecretRole.MEMBER };
const PERMISSIONS: Record<PermissionName, WorkspacePermission> = {
  read: WorkspacePermission.READ,
  write: WorkspacePermission.WRITE,
  admin: WorkspacePermission.ADMIN,
};

/** PEM text or bytes; a CA to trust, and for mutual TLS the client's certificate and key. */
export interface TlsOptions {
  /** CA certificate(s) to trust instead of the system roots. */
  ca?: string | Buffer;
  /** Client certificate chain (mutual TLS). */
  cert?: string | Buffer;
  /** Client private key (mutual TLS). */
  key?: string | Buffer;
  /** Server name to verify, when the address is not the certificate's name. */
  servername?: string;
}

export interface RetryOptions {
  /** Attempts in all, the first included (1 turns retries off). Default 3. */
  maxAttempts: number;
  /** Backoff before the second attempt; doubles each time, with jitter. Default 100 ms. */
  initialBackoffMs: number;
  /** Largest backoff. Default 2000 ms. */
  maxBackoffMs: number;
}

export interface ClientOptions {
  /** true: TLS with the system roots; an object: TLS with these roots and client certificate. */
  tls?: boolean | TlsOptions;
  /** Default deadline of every call, retries included. Default 10 s. */
  timeoutMs?: number;
  /** Retries of UNAVAILABLE for calls that are safe to repeat; false turns them off. */
  retry?: Partial<RetryOptions> | false;
  /** A transport of your own (tests, interceptors); address and tls are then not used. */
  transport?: Transport;
}

/** Per call: a deadline other than the client's default, and a signal to cancel. */
export interface CallOptions {
  timeoutMs?: number;
  signal?: AbortSignal;
}

const DEFAULT_RETRY: RetryOptions = { maxAttempts: 3, initialBackoffMs: 100, maxBackoffMs: 2000 };

// ---- fail-fast checks of the caller's input -------------------------------------------------

function bad(field: string, description: string): InvalidArgument {
  return new InvalidArgument(`${field}: ${description}`, [{ field, description }], { local: true });
}

function requireId(field: string, value: unknown): string {
  if (typeof value !== "string" || value.length === 0) throw bad(field, "must be a non-empty string");
  return value;
}

function optionalId(field: string, value: unknown): string {
  if (value === undefined) return "";
  if (typeof value !== "string") throw bad(field, "must be a string");
  return value;
}

/** Paging of the list calls: 100 per page by default, at most 1,000; `pageToken` is a previous page's `nextPageToken`. */
export interface PageOptions {
  pageSize?: number;
  pageToken?: string;
}

function pageRequest(options: PageOptions | undefined): { pageSize: number; pageToken: string } {
  const pageSize = options?.pageSize ?? 0;
  if (!Number.isSafeInteger(pageSize) || pageSize < 0) throw bad("pageSize", "must be a non-negative integer");
  return { pageSize, pageToken: optionalId("pageToken", options?.pageToken) };
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (value === null || typeof value !== "object" || Array.isArray(value)) return false;
  const proto: unknown = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}

function pick<K extends string, V>(field: string, table: Record<K, V>, value: unknown): V {
  if (typeof value !== "string" || !Object.hasOwn(table, value)) {
    throw bad(field, `must be one of ${Object.keys(table).map((k) => JSON.stringify(k)).join(", ")}`);
  }
  return table[value as K];
}

function revision(field: string, value: unknown): bigint {
  if (typeof value === "bigint" && value >= 0n) return value;
  if (typeof value === "number" && Number.isSafeInteger(value) && value >= 0) return BigInt(value);
  throw bad(field, "must be a non-negative integer (number or bigint)");
}

/** A deleted secret's id (ListDeletedSecrets' deletedId): a positive int64. */
function deletedId(value: unknown): bigint {
  if (typeof value === "bigint" && value > 0n && value < 2n ** 63n) return value;
  if (typeof value === "number" && Number.isSafeInteger(value) && value > 0) return BigInt(value);
  throw bad("deletedId", "must be a positive integer (number or bigint): a deletedId from listDeletedSecrets");
}

// google.protobuf.Timestamp's range: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999Z (in ms).
const FIRST_TIME_MS = -62_135_596_800_000;
const LAST_TIME_MS = 253_402_300_799_999;

/**
 * Checks that `inputs` is a JSON object (strings, finite numbers, booleans, null, arrays, plain
 * objects) and holds no cycle (an object or array inside itself). One object in two places is
 * fine: it is sent twice.
 */
function jsonObject(field: string, inputs: unknown): JsonObject {
  if (!isPlainObject(inputs)) throw bad(field, "must be a plain object of JSON values");
  // Depth first; `done` marks where a container's children end, so `open` holds exactly the
  // containers above the value at hand.
  const open = new Set<object>();
  const stack: Array<[unknown, string] | { done: object }> = [[inputs, field]];
  while (stack.length) {
    const top = stack.pop() as [unknown, string] | { done: object };
    if (!Array.isArray(top)) {
      open.delete(top.done);
      continue;
    }
    const [value, path] = top;
    if (typeof value === "string" || typeof value === "boolean" || value === null) continue;
    if (typeof value === "number") {
      if (!Number.isFinite(value)) throw bad(path, "must be a finite number");
      continue;
    }
    if (typeof value === "object" && open.has(value)) throw bad(path, "is a cycle: an object or array inside itself");
    if (Array.isArray(value)) {
      open.add(value);
      stack.push({ done: value });
      value.forEach((item, i) => stack.push([item, `${path}[${i}]`]));
    } else if (isPlainObject(value)) {
      open.add(value);
      stack.push({ done: value });
      for (const [name, item] of Object.entries(value)) stack.push([item, `${path}.${name}`]);
    } else {
      throw bad(path, `is ${typeof value === "object" ? "an object that is not plain JSON" : `a ${typeof value}`}, not a JSON value`);
    }
  }
  return inputs as JsonObject;
}

/** Block id -> inputs, as BlockInputs messages. */
function blockInputs(blocks: unknown): Array<Pick<BlockInputs, "blockId" | "inputs">> {
  if (!isPlainObject(blocks)) throw bad("blocks", "must be a plain object of block id -> inputs object");
  return Object.entries(blocks).map(([blockId, inputs]) => ({
    blockId: requireId("blocks (a block id)", blockId),
    inputs: jsonObject(`blocks[${JSON.stringify(blockId)}]`, inputs),
  }));
}

function runUser(trigger: TriggerName, triggeringUserId: string, workflowOwnerId: string): void {
  if (trigger === "manual" && !triggeringUserId) throw bad("triggeringUserId", "a manual run needs the user who clicked Run");
  if (trigger !== "manual" && !workflowOwnerId) throw bad("workflowOwnerId", `an automated (${trigger}) run needs the workflow owner`);
}

function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

// ---- the common part ---------------------------------------------------------------------------

abstract class BaseClient {
  readonly #token: string;
  readonly #transport: Transport;
  readonly #sessions: Http2SessionManager | undefined;
  readonly #retry: RetryOptions;
  /** The default deadline of each call, in milliseconds. */
  readonly timeoutMs: number;

  /**
   * @param address `host:port` of the service (or a full `http://` / `https://` URL).
   * @param token the principal's bearer token.
   */
  constructor(address: string, token: string, options: ClientOptions = {}) {
    requireId("token", token);
    this.#token = token;
    this.timeoutMs = options.timeoutMs ?? 10_000;
    if (!(this.timeoutMs > 0)) throw bad("timeoutMs", "must be a positive number of milliseconds");
    this.#retry = options.retry === false ? { ...DEFAULT_RETRY, maxAttempts: 1 } : { ...DEFAULT_RETRY, ...options.retry };
    if (options.transport) {
      this.#transport = options.transport;
      return;
    }
    requireId("address", address);
    const tls = options.tls ?? false;
    const baseUrl = /^https?:\/\//.test(address) ? address : `${tls ? "https" : "http"}://${address}`;
    const nodeOptions = typeof tls === "object" ? { ...tls } : {};
    this.#sessions = new Http2SessionManager(baseUrl, {}, nodeOptions);
    this.#transport = createGrpcTransport({ baseUrl, sessionManager: this.#sessions, nodeOptions });
  }

  protected service<T extends DescService>(service: T): Client<T> {
    return createClient(service, this.#transport);
  }

  /** One call with metadata, deadline, typed errors, and retries when `safe`. */
  protected async call<R>(
    fn: (options: ConnectCallOptions) => Promise<R>,
    { userId, safe, call }: { userId?: string; safe: boolean; call?: CallOptions | undefined },
  ): Promise<R> {
    const headers: Record<string, string> = { authorization: `Bearer ${this.#token}` };
    if (userId !== undefined) headers["x-user-id"] = userId;
    const timeoutMs = call?.timeoutMs ?? this.timeoutMs;
    if (!(timeoutMs > 0)) throw bad("timeoutMs", "must be a positive number of milliseconds");
    const deadline = Date.now() + timeoutMs;
    const attempts = safe ? Math.max(1, this.#retry.maxAttempts) : 1;
    for (let attempt = 1; ; attempt++) {
      try {
        const options: ConnectCallOptions = { headers, timeoutMs: Math.max(1, deadline - Date.now()) };
        if (call?.signal) options.signal = call.signal;
        return await fn(options);
      } catch (reason) {
        let err = fromConnectError(reason);
        if (err.code === "CANCELLED" && !call?.signal?.aborted) {
          // Not the caller's cancel: the connection was closed before an answer (a TLS peer
          // that refused our certificate, a plaintext client on a TLS port, a server going
          // away). gRPC's own clients call that UNAVAILABLE, and so does this one.
          err = new Unavailable(`connection closed before an answer (${err.message})`, { cause: reason });
        }
        if (!(err instanceof Unavailable) || attempt >= attempts) throw err;
        const backoff =
          Math.min(this.#retry.maxBackoffMs, this.#retry.initialBackoffMs * 2 ** (attempt - 1)) * (0.5 + Math.random() / 2);
        if (Date.now() + backoff >= deadline) throw err;
        await sleep(backoff, call?.signal);
      }
    }
  }

  /** Closes the connection this client opened (not a transport passed in). */
  close(): void {
    this.#sessions?.abort();
  }

  toString(): string {
    return `${this.constructor.name}(<token hidden>)`;
  }

  [Symbol.for("nodejs.util.inspect.custom")](): string {
    return this.toString();
  }
}

// ---- executors ------------------------------------------------------------------------------------

export interface ResolveOptions extends CallOptions {
  /** What started the run. Default "manual". */
  trigger?: TriggerName;
  /** The user who clicked Run (manual runs). */
  triggeringUserId?: string;
  /** The workflow owner (automated runs: api, webhook, schedule). */
  workflowOwnerId?: string;
  workflowId?: string;
  /** Default: a random id. */
  executionId?: string;
}

/** For workflow executors (role "executor"). */
export class ExecutorClient extends BaseClient {
  /** Resolves `{{KEY}}` references in each block's inputs (block id -> JSON object). Retried on UNAVAILABLE. */
  async resolve(workspaceId: string, blocks: Record<string, JsonObject>, options: ResolveOptions = {}): Promise<Resolution> {
    const trigger = options.trigger ?? "manual";
    const request = {
      workspaceId: requireId("workspaceId", workspaceId),
      workflowId: optionalId("workflowId", options.workflowId),
      executionId: optionalId("executionId", options.executionId) || randomUUID().replace(/-/g, ""),
      trigger: pick("trigger", TRIGGERS, trigger),
      triggeringUserId: optionalId("triggeringUserId", options.triggeringUserId),
      workflowOwnerId: optionalId("workflowOwnerId", options.workflowOwnerId),
      blocks: blockInputs(blocks),
    };
    runUser(trigger, request.triggeringUserId, request.workflowOwnerId);
    const resolver = this.service(Resolver);
    const reply = await this.call((o) => resolver.resolveInputs(request, o), { safe: true, call: options });
    return resolutionFromResponse(reply);
  }
}

// ---- editors --------------------------------------------------------------------------------------

export interface SaveOptions extends CallOptions {
  scope?: ScopeOption;
  /** The revision the editor last saw (ListSecrets' workspaceRevision or personalRevision). */
  expectedRevision: number | bigint;
  /** Key -> new value. */
  set?: Record<string, string>;
  delete?: readonly string[];
  /** Old key -> new key. */
  rename?: Record<string, string>;
  /** Delete or rename secrets that workflows used lately anyway (the in-use guard's FailedPrecondition otherwise). */
  acknowledgeInUse?: boolean;
}

export interface ImportOptions extends CallOptions {
  scope?: ScopeOption;
  expectedRevision?: number | bigint;
  /** Report what would happen and change nothing. */
  dryRun?: boolean;
  overwriteExisting?: boolean;
}

export interface DetailsOptions extends CallOptions {
  scope?: ScopeOption;
  displayName?: string;
  description?: string;
  restricted?: boolean;
  /**
   * When the secret expires (runs that use it fail SECRET_EXPIRED from then on; a past time expires
   * it at once); `null` removes the expiry; undefined leaves it as it is.
   */
  expiresAt?: Date | null;
}

function expiry(value: unknown): { expiresAt?: Timestamp; clearExpiresAt?: boolean } {
  if (value === undefined) return {};
  if (value === null) return { clearExpiresAt: true };
  if (!(value instanceof Date)) throw bad("expiresAt", "must be a Date, or null to remove the expiry");
  const ms = value.getTime();
  if (!(ms >= FIRST_TIME_MS && ms <= LAST_TIME_MS)) throw bad("expiresAt", "must be a valid time between the years 1 and 9999");
  return { expiresAt: timestampFromDate(value) };
}

export interface ExplainOptions extends CallOptions {
  trigger?: TriggerName;
  triggeringUserId?: string;
  workflowOwnerId?: string;
}

function stringMap(field: string, value: unknown): Array<[string, string]> {
  if (value === undefined) return [];
  if (!isPlainObject(value)) throw bad(field, "must be a plain object of key -> string");
  return Object.entries(value).map(([k, v]) => {
    if (typeof v !== "string") throw bad(`${field}.${k}`, "must be a string");
    return [k, v];
  });
}

/** For the platform's editor backend (role "editor"); every call acts for `userId`. */
export class EditorClient extends BaseClient {
  #store(): Client<typeof SecretStore> {
    return this.service(SecretStore);
  }

  /**
   * One page of both scopes' summaries (never a value) and their revisions: the workspace's secrets by key,
   * then the user's personal ones; 100 by default, `pageSize` up to 1,000. `nextPageToken` continues it
   * (pass it as `pageToken`); `secrets()` iterates every page.
   */
  async listSecrets(userId: string, workspaceId: string, call?: CallOptions & PageOptions): Promise<ListSecretsResponse> {
    const request = { workspaceId: requireId("workspaceId", workspaceId), ...pageRequest(call) };
    const store = this.#store();
    return this.call((o) => store.listSecrets(request, o), { userId: requireId("userId", userId), safe: true, call });
  }

  /** Every secret of the listing (workspace secrets first), fetched page by page as you iterate. */
  async *secrets(userId: string, workspaceId: string, call?: CallOptions & { pageSize?: number }): AsyncGenerator<SecretSummary, void, undefined> {
    let pageToken = "";
    do {
      const page = await this.listSecrets(userId, workspaceId, { pageSize: 1000, ...call, pageToken });
      yield* page.workspaceSecrets;
      yield* page.personalSecrets;
      pageToken = page.nextPageToken;
    } while (pageToken);
  }

  /** Applies set/delete/rename atomically; RevisionConflict if someone saved since expectedRevision. Never retried. */
  async save(userId: string, workspaceId: string, options: SaveOptions): Promise<SaveSecretsResponse> {
    if (!isPlainObject(options)) throw bad("options", "must say expectedRevision and the changes");
    const deletions = options.delete ?? [];
    if (!Array.isArray(deletions) || deletions.some((k) => typeof k !== "string")) throw bad("delete", "must be an array of keys");
    const changes = [
      ...stringMap("set", options.set).map(([key, value]) => ({ key, change: { case: "value" as const, value } })),
      ...deletions.map((key: string) => ({ key, change: { case: "delete" as const, value: true } })),
      ...stringMap("rename", options.rename).map(([key, value]) => ({ key, change: { case: "renameTo" as const, value } })),
    ];
    if (options.acknowledgeInUse !== undefined && typeof options.acknowledgeInUse !== "boolean") {
      throw bad("acknowledgeInUse", "must be true or false");
    }
    const request = {
      workspaceId: requireId("workspaceId", workspaceId),
      scope: pick("scope", SCOPES, options.scope ?? "workspace"),
      expectedRevision: revision("expectedRevision", options.expectedRevision),
      changes,
      acknowledgeInUse: options.acknowledgeInUse === true,
    };
    const store = this.#store();
    return this.call((o) => store.saveSecrets(request, o), { userId: requireId("userId", userId), safe: false, call: options });
  }

  /** Imports .env text; a dry run reports and changes nothing (and only a dry run is retried). */
  async importDotenv(userId: string, workspaceId: string, content: string, options: ImportOptions = {}): Promise<ImportDotenvResponse> {
    if (typeof content !== "string") throw bad("content", "must be the .env text");
    const request = {
      workspaceId: requireId("workspaceId", workspaceId),
      scope: pick("scope", SCOPES, options.scope ?? "workspace"),
      content,
      dryRun: options.dryRun ?? false,
      overwriteExisting: options.overwriteExisting ?? false,
      expectedRevision: revision("expectedRevision", options.expectedRevision ?? 0),
    };
    const store = this.#store();
    return this.call((o) => store.importDotenv(request, o), {
      userId: requireId("userId", userId),
      safe: request.dryRun,
      call: options,
    });
  }

  async getSecret(
    userId: string,
    workspaceId: string,
    key: string,
    options: CallOptions & { scope?: ScopeOption } = {},
  ): Promise<SecretDetails | undefined> {
    const request = {
      workspaceId: requireId("workspaceId", workspaceId),
      scope: pick("scope", SCOPES, options.scope ?? "workspace"),
      key: requireId("key", key),
    };
    const store = this.#store();
    const reply = await this.call((o) => store.getSecret(request, o), { userId: requireId("userId", userId), safe: true, call: options });
    return reply.secret;
  }

  /** Changes display name, description, restricted or the expiry; fields left undefined are not changed. */
  async updateDetails(userId: string, workspaceId: string, key: string, options: DetailsOptions = {}): Promise<SecretDetails | undefined> {
    const request = {
      workspaceId: requireId("workspaceId", workspaceId),
      scope: pick("scope", SCOPES, options.scope ?? "workspace"),
      key: requireId("key", key),
      ...(options.displayName !== undefined && { displayName: options.displayName }),
      ...(options.description !== undefined && { description: options.description }),
      ...(options.restricted !== undefined && { restricted: options.restricted }),
      ...expiry(options.expiresAt),
    };
    const store = this.#store();
    const reply = await this.call((o) => store.updateSecretDetails(request, o), {
      userId: requireId("userId", userId),
      safe: false,
      call: options,
    });
    return reply.secret;
  }

  async setMember(
    userId: string,
    workspaceId: string,
    key: string,
    email: string,
    role: SecretRoleName = "member",
    call?: CallOptions,
  ): Promise<SecretDetails | undefined> {
    const request = {
      workspaceId: requireId("workspaceId", workspaceId),
      key: requireId("key", key),
      email: requireId("email", email),
      role: pick("role", ROLES, role),
    };
    const store = this.#store();
    const reply = await this.call((o) => store.setSecretMember(request, o), { userId: requireId("userId", userId), safe: false, call });
    return reply.secret;
  }

  async removeMember(userId: string, workspaceId: string, key: string, email: string, call?: CallOptions): Promise<SecretDetails | undefined> {
    const request = {
      workspaceId: requireId("workspaceId", workspaceId),
      key: requireId("key", key),
      email: requireId("email", email),
    };
    const store = this.#store();
    const reply = await this.call((o) => store.removeSecretMember(request, o), { userId: requireId("userId", userId), safe: false, call });
    return reply.secret;
  }

  /** Makes an older kept version current again, without the editor ever seeing it. */
  async restoreVersion(
    userId: string,
    workspaceId: string,
    key: string,
    version: number | bigint,
    options: CallOptions & { scope?: ScopeOption } = {},
  ): Promise<SecretDetails | undefined> {
    const request = {
      workspaceId: requireId("workspaceId", workspaceId),
      scope: pick("scope", SCOPES, options.scope ?? "workspace"),
      key: requireId("key", key),
      version: revision("version", version),
    };
    const store = this.#store();
    const reply = await this.call((o) => store.restoreSecretVersion(request, o), {
      userId: requireId("userId", userId),
      safe: false,
      call: options,
    });
    return reply.secret;
  }

  /**
   * The trash: the workspace's deleted secrets (for its members) and the user's own deleted personal
   * ones, most recently deleted first; metadata only. Each `deletedId` names it to restore or purge.
   */
  async listDeletedSecrets(userId: string, workspaceId: string, call?: CallOptions): Promise<ListDeletedSecretsResponse> {
    const request = { workspaceId: requireId("workspaceId", workspaceId) };
    const store = this.#store();
    return this.call((o) => store.listDeletedSecrets(request, o), { userId: requireId("userId", userId), safe: true, call });
  }

  /**
   * Restores a deleted secret whole (key, details, members still in the workspace, every kept
   * version); AlreadyExists when a secret of the same key was created since. Never retried.
   */
  async restoreDeletedSecret(
    userId: string,
    workspaceId: string,
    id: number | bigint,
    options: CallOptions & { scope?: ScopeOption } = {},
  ): Promise<RestoreDeletedSecretResponse> {
    const request = {
      workspaceId: requireId("workspaceId", workspaceId),
      scope: pick("scope", SCOPES, options.scope ?? "workspace"),
      deletedId: deletedId(id),
    };
    const store = this.#store();
    return this.call((o) => store.restoreDeletedSecret(request, o), {
      userId: requireId("userId", userId),
      safe: false,
      call: options,
    });
  }

  /** Deletes a deleted secret for good, at once (workspace ADMIN; the owner for a personal one). Never retried. */
  async purgeDeletedSecret(
    userId: string,
    workspaceId: string,
    id: number | bigint,
    options: CallOptions & { scope?: ScopeOption } = {},
  ): Promise<void> {
    const request = {
      workspaceId: requireId("workspaceId", workspaceId),
      scope: pick("scope", SCOPES, options.scope ?? "workspace"),
      deletedId: deletedId(id),
    };
    const store = this.#store();
    await this.call((o) => store.purgeDeletedSecret(request, o), { userId: requireId("userId", userId), safe: false, call: options });
  }

  /** Keys the user can reference, workspace group first (shadowed personal keys say so). */
  /** One page of the keys the user can reference (`pageSize`, `pageToken` as in listSecrets). */
  async listReferenceable(
    userId: string,
    workspaceId: string,
    prefix = "",
    call?: CallOptions & PageOptions,
  ): Promise<ListReferenceableResponse> {
    if (typeof prefix !== "string") throw bad("prefix", "must be a string");
    const request = { workspaceId: requireId("workspaceId", workspaceId), prefix, ...pageRequest(call) };
    const store = this.#store();
    return this.call((o) => store.listReferenceable(request, o), { userId: requireId("userId", userId), safe: true, call });
  }

  /** Which references in these inputs would resolve for a run, and which would not; never a value. */
  async explain(
    userId: string,
    workspaceId: string,
    blocks: Record<string, JsonObject>,
    options: ExplainOptions = {},
  ): Promise<ExplainReferencesResponse> {
    const trigger = options.trigger ?? "manual";
    const request = {
      workspaceId: requireId("workspaceId", workspaceId),
      trigger: pick("trigger", TRIGGERS, trigger),
      triggeringUserId: optionalId("triggeringUserId", options.triggeringUserId),
      workflowOwnerId: optionalId("workflowOwnerId", options.workflowOwnerId),
      blocks: blockInputs(blocks),
    };
    const store = this.#store();
    return this.call((o) => store.explainReferences(request, o), { userId: requireId("userId", userId), safe: true, call: options });
  }
}

// ---- membership sync ------------------------------------------------------------------------------

/** For the platform's membership sync (role "directory"). */
export class DirectoryClient extends BaseClient {
  async putMember(
    workspaceId: string,
    userId: string,
    email: string,
    permission: PermissionName = "read",
    options: CallOptions & { external?: boolean } = {},
  ): Promise<PutWorkspaceMemberResponse> {
    const request = {
      workspaceId: requireId("workspaceId", workspaceId),
      userId: requireId("userId", userId),
      email: requireId("email", email),
      permission: pick("permission", PERMISSIONS, permission),
      external: options.external ?? false,
    };
    const directory = this.service(Directory);
    return this.call((o) => directory.putWorkspaceMember(request, o), { safe: false, call: options });
  }

  async removeMember(workspaceId: string, userId: string, call?: CallOptions): Promise<RemoveWorkspaceMemberResponse> {
    const request = { workspaceId: requireId("workspaceId", workspaceId), userId: requireId("userId", userId) };
    const directory = this.service(Directory);
    return this.call((o) => directory.removeWorkspaceMember(request, o), { safe: false, call });
  }

  /** Every member of the workspace, by user id, fetched page by page. */
  async listMembers(workspaceId: string, call?: CallOptions): Promise<WorkspaceMember[]> {
    const id = requireId("workspaceId", workspaceId);
    const directory = this.service(Directory);
    const members: WorkspaceMember[] = [];
    let pageToken = "";
    do {
      const request = { workspaceId: id, pageSize: 1000, pageToken };
      const reply: ListWorkspaceMembersResponse = await this.call((o) => directory.listWorkspaceMembers(request, o), { safe: true, call });
      members.push(...reply.members);
      pageToken = reply.nextPageToken;
    } while (pageToken);
    return members;
  }
}

// ---- operators ------------------------------------------------------------------------------------

/** For operators (role "ops"). */
export class OpsClient extends BaseClient {
  async keyStatus(call?: CallOptions): Promise<GetKeyStatusResponse> {
    const ops = this.service(Operations);
    return this.call((o) => ops.getKeyStatus({}, o), { safe: true, call });
  }

  /** Re-wraps every data key under the primary master key (online). Default deadline 5 minutes; never retried. */
  async rotateKeys(call: CallOptions = {}): Promise<RotateKeysResponse> {
    const ops = this.service(Operations);
    return this.call((o) => ops.rotateKeys({}, o), { safe: false, call: { ...call, timeoutMs: call.timeoutMs ?? 300_000 } });
  }

  /** One page of the audit log, newest first. */
  async listAuditEvents(
    options: CallOptions & { workspaceId?: string; pageSize?: number; pageToken?: string } = {},
  ): Promise<ListAuditEventsResponse> {
    const pageSize = options.pageSize ?? 100;
    if (!Number.isSafeInteger(pageSize) || pageSize < 0) throw bad("pageSize", "must be a non-negative integer");
    const request = {
      workspaceId: optionalId("workspaceId", options.workspaceId),
      pageSize,
      pageToken: optionalId("pageToken", options.pageToken),
    };
    const ops = this.service(Operations);
    return this.call((o) => ops.listAuditEvents(request, o), { safe: true, call: options });
  }

  /** Every audit event (of one workspace, or all), newest first, fetched page by page as you iterate. */
  async *auditEvents(options: CallOptions & { workspaceId?: string; pageSize?: number } = {}): AsyncGenerator<AuditEvent, void, undefined> {
    let pageToken = "";
    do {
      const page = await this.listAuditEvents({ ...options, pageToken });
      yield* page.events;
      pageToken = page.nextPageToken;
    } while (pageToken);
  }
}

export type { JsonObject, JsonValue };
