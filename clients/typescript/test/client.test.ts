// The clients with an in-memory transport: metadata, typed errors from google.rpc details,
// retries of UNAVAILABLE only where safe, and input refused before any call.
import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { Code, ConnectError, createRouterTransport, type HandlerContext } from "@connectrpc/connect";

import {
  DataLoss,
  EditorClient,
  ExecutorClient,
  InvalidArgument,
  NotFound,
  type JsonObject,
  type JsonValue,
  OpsClient,
  PermissionDenied,
  ResourceExhausted,
  RevisionConflict,
  SecretsError,
  Unavailable,
} from "../src/index.js";
import { BadRequestSchema, ErrorInfoSchema } from "../src/gen/google/rpc/error_details_pb.js";
import { Resolver } from "../src/gen/secrets/v1/resolver_pb.js";
import { SecretStore } from "../src/gen/secrets/v1/secret_store_pb.js";
import { Operations } from "../src/gen/secrets/v1/operations_pb.js";

const fast = { retry: { initialBackoffMs: 1, maxBackoffMs: 2 } };

function failing(error: () => ConnectError) {
  const seen: HandlerContext[] = [];
  const transport = createRouterTransport((router) => {
    router.service(Resolver, {
      resolveInputs(_req, ctx) {
        seen.push(ctx);
        throw error();
      },
    });
    router.service(SecretStore, {
      saveSecrets(_req, ctx) {
        seen.push(ctx);
        throw error();
      },
      importDotenv(_req, ctx) {
        seen.push(ctx);
        throw error();
      },
      listSecrets(_req, ctx) {
        seen.push(ctx);
        throw error();
      },
    });
  });
  return { transport, seen };
}

describe("typed errors", () => {
  it("RevisionConflict carries current_revision from ErrorInfo", async () => {
    const { transport } = failing(
      () =>
        new ConnectError("revision 3 is stale", Code.Aborted, undefined, [
          { desc: ErrorInfoSchema, value: { reason: "REVISION_CONFLICT", domain: "secrets.v1", metadata: { current_revision: "7" } } },
        ]),
    );
    const editor = new EditorClient("", "t", { transport });
    await assert.rejects(editor.save("u", "ws", { expectedRevision: 3, set: { A: "value" } }), (err: unknown) => {
      assert.ok(err instanceof RevisionConflict);
      assert.equal(err.currentRevision, 7n);
      assert.equal(err.code, "ABORTED");
      assert.equal(err.message, "revision 3 is stale");
      return true;
    });
  });

  it("InvalidArgument carries the BadRequest field violations", async () => {
    const { transport } = failing(
      () =>
        new ConnectError("bad key", Code.InvalidArgument, undefined, [
          { desc: BadRequestSchema, value: { fieldViolations: [{ field: "changes[0].key", description: "invalid key" }] } },
        ]),
    );
    const editor = new EditorClient("", "t", { transport });
    await assert.rejects(editor.save("u", "ws", { expectedRevision: 0, set: { "a-b": "value" } }), (err: unknown) => {
      assert.ok(err instanceof InvalidArgument);
      assert.equal(err.local, false);
      assert.deepEqual(err.violations, [{ field: "changes[0].key", description: "invalid key" }]);
      return true;
    });
  });

  for (const [code, cls] of [
    [Code.PermissionDenied, PermissionDenied],
    [Code.NotFound, NotFound],
    [Code.DataLoss, DataLoss],
    [Code.ResourceExhausted, ResourceExhausted],
    [Code.Unavailable, Unavailable],
  ] as const) {
    it(`${Code[code]} becomes ${cls.name}`, async () => {
      const { transport } = failing(() => new ConnectError("nope", code));
      const executor = new ExecutorClient("", "t", { transport, retry: false });
      await assert.rejects(executor.resolve("ws", { b: {} }, { triggeringUserId: "u" }), cls);
    });
  }
});

describe("metadata and retries", () => {
  it("sends the token and x-user-id", async () => {
    const { transport, seen } = failing(() => new ConnectError("x", Code.NotFound));
    const editor = new EditorClient("", "s3cr3t-token-value", { transport });
    await assert.rejects(editor.listSecrets("user-1", "ws"), NotFound);
    assert.equal(seen[0]?.requestHeader.get("authorization"), "Bearer s3cr3t-token-value");
    assert.equal(seen[0]?.requestHeader.get("x-user-id"), "user-1");
    assert.ok(!String(editor).includes("s3cr3t"));
  });

  it("retries UNAVAILABLE for resolve, then succeeds", async () => {
    let calls = 0;
    const transport = createRouterTransport((router) =>
      router.service(Resolver, {
        resolveInputs() {
          calls += 1;
          if (calls < 3) throw new ConnectError("database down", Code.Unavailable);
          return { runUserId: "u", blocks: [{ blockId: "b", inputs: { a: 1 } }] };
        },
      }),
    );
    const executor = new ExecutorClient("", "t", { transport, ...fast });
    const resolution = await executor.resolve("ws", { b: { a: 1 } }, { triggeringUserId: "u" });
    assert.equal(calls, 3);
    assert.equal(resolution.runUserId, "u");
  });

  it("gives up after maxAttempts", async () => {
    const { transport, seen } = failing(() => new ConnectError("down", Code.Unavailable));
    const executor = new ExecutorClient("", "t", { transport, retry: { maxAttempts: 4, initialBackoffMs: 1, maxBackoffMs: 1 } });
    await assert.rejects(executor.resolve("ws", { b: {} }, { triggeringUserId: "u" }), Unavailable);
    assert.equal(seen.length, 4);
  });

  it("never retries a save or a real import, but does a dry run", async () => {
    const { transport, seen } = failing(() => new ConnectError("down", Code.Unavailable));
    const editor = new EditorClient("", "t", { transport, ...fast });
    await assert.rejects(editor.save("u", "ws", { expectedRevision: 0, set: { A: "value" } }), Unavailable);
    assert.equal(seen.length, 1);
    await assert.rejects(editor.importDotenv("u", "ws", "A=1"), Unavailable);
    assert.equal(seen.length, 2);
    await assert.rejects(editor.importDotenv("u", "ws", "A=1", { dryRun: true }), Unavailable);
    assert.equal(seen.length, 5);
  });

  it("does not retry other errors", async () => {
    const { transport, seen } = failing(() => new ConnectError("no", Code.PermissionDenied));
    const executor = new ExecutorClient("", "t", { transport, ...fast });
    await assert.rejects(executor.resolve("ws", { b: {} }, { triggeringUserId: "u" }), PermissionDenied);
    assert.equal(seen.length, 1);
  });

  it("pages the audit log as an async iterator", async () => {
    const tokens: string[] = [];
    const transport = createRouterTransport((router) =>
      router.service(Operations, {
        listAuditEvents(req) {
          tokens.push(req.pageToken);
          const page = Number(req.pageToken || "0");
          return {
            events: [{ id: BigInt(page * 2 + 1) }, { id: BigInt(page * 2 + 2) }],
            nextPageToken: page < 2 ? String(page + 1) : "",
          };
        },
      }),
    );
    const ops = new OpsClient("", "t", { transport });
    const ids: bigint[] = [];
    for await (const event of ops.auditEvents({ pageSize: 2 })) ids.push(event.id);
    assert.deepEqual(ids, [1n, 2n, 3n, 4n, 5n, 6n]);
    assert.deepEqual(tokens, ["", "1", "2"]);
  });
});

function cyclic(): JsonObject {
  const a: Record<string, unknown> = { x: "{{A}}" };
  a["self"] = a;
  return { a } as never;
}

function cyclicList(): JsonValue[] {
  const list: unknown[] = ["{{A}}"];
  list.push(list);
  return list as never;
}

describe("bad input fails fast, before any call", () => {
  const { transport, seen } = failing(() => new ConnectError("should not be called", Code.Internal));
  const executor = new ExecutorClient("", "t", { transport });
  const editor = new EditorClient("", "t", { transport });
  const cases: Array<[string, () => Promise<unknown>, string]> = [
    ["empty workspace id", () => executor.resolve("", { b: {} }, { triggeringUserId: "u" }), "workspaceId"],
    ["blocks not an object", () => executor.resolve("ws", [] as never, { triggeringUserId: "u" }), "blocks"],
    ["inputs not an object", () => executor.resolve("ws", { b: "x" as never }, { triggeringUserId: "u" }), 'blocks["b"]'],
    ["inputs null", () => executor.resolve("ws", { b: null as never }, { triggeringUserId: "u" }), 'blocks["b"]'],
    ["a function in inputs", () => executor.resolve("ws", { b: { f: (() => 1) as never } }, { triggeringUserId: "u" }), 'blocks["b"].f'],
    ["a Date in inputs", () => executor.resolve("ws", { b: { d: new Date() as never } }, { triggeringUserId: "u" }), 'blocks["b"].d'],
    ["NaN in inputs", () => executor.resolve("ws", { b: { n: [Number.NaN] } }, { triggeringUserId: "u" }), 'blocks["b"].n[0]'],
    ["unknown trigger", () => executor.resolve("ws", { b: {} }, { trigger: "cron" as never }), "trigger"],
    ["manual run without its user", () => executor.resolve("ws", { b: {} }), "triggeringUserId"],
    ["automated run without its owner", () => executor.resolve("ws", { b: {} }, { trigger: "api" }), "workflowOwnerId"],
    ["editor without user", () => editor.listSecrets("", "ws"), "userId"],
    ["save without revision", () => editor.save("u", "ws", { set: { A: "v" } } as never), "expectedRevision"],
    ["negative revision", () => editor.save("u", "ws", { expectedRevision: -1 }), "expectedRevision"],
    ["non-string value", () => editor.save("u", "ws", { expectedRevision: 0, set: { A: 1 as never } }), "set.A"],
    ["import without text", () => editor.importDotenv("u", "ws", undefined as never), "content"],
    ["unknown scope", () => editor.importDotenv("u", "ws", "A=1", { scope: "team" as never }), "scope"],
    ["a cycle in inputs", () => executor.resolve("ws", { b: cyclic() }, { triggeringUserId: "u" }), 'blocks["b"].a.self'],
    ["a cycle through a list", () => executor.resolve("ws", { b: { l: cyclicList() } }, { triggeringUserId: "u" }), 'blocks["b"].l[1]'],
    ["a NaN deadline", () => executor.resolve("ws", { b: {} }, { triggeringUserId: "u", timeoutMs: Number.NaN }), "timeoutMs"],
    ["a negative deadline", () => editor.listSecrets("u", "ws", { timeoutMs: -5 }), "timeoutMs"],
    ["trash without a workspace", () => editor.listDeletedSecrets("u", ""), "workspaceId"],
    ["restore deletedId 0", () => editor.restoreDeletedSecret("u", "ws", 0), "deletedId"],
    ["restore deletedId -1n", () => editor.restoreDeletedSecret("u", "ws", -1n), "deletedId"],
    ["restore deletedId 2**63", () => editor.restoreDeletedSecret("u", "ws", 2n ** 63n), "deletedId"],
    ["purge deletedId 1.5", () => editor.purgeDeletedSecret("u", "ws", 1.5), "deletedId"],
    ["purge deletedId a string", () => editor.purgeDeletedSecret("u", "ws", "7" as never), "deletedId"],
    ["purge in an unknown scope", () => editor.purgeDeletedSecret("u", "ws", 7, { scope: "team" as never }), "scope"],
    ["expiresAt an invalid Date", () => editor.updateDetails("u", "ws", "K", { expiresAt: new Date(Number.NaN) }), "expiresAt"],
    ["expiresAt past 9999", () => editor.updateDetails("u", "ws", "K", { expiresAt: new Date(Date.UTC(10000, 0, 1)) }), "expiresAt"],
    ["expiresAt a string", () => editor.updateDetails("u", "ws", "K", { expiresAt: "2030-01-01" as never }), "expiresAt"],
  ];
  for (const [name, call, field] of cases) {
    it(name, async () => {
      await assert.rejects(call(), (err: unknown) => {
        assert.ok(err instanceof InvalidArgument, String(err));
        assert.equal(err.local, true);
        assert.equal(err.violations[0]?.field, field);
        return true;
      });
    });
  }
  it("made no call at all", () => assert.equal(seen.length, 0));
  it("refuses a client without a token", () => {
    assert.throws(() => new ExecutorClient("127.0.0.1:1", ""), InvalidArgument);
  });
});

describe("input that is not a cycle", () => {
  it("sends one object shared by two fields (a DAG, not a cycle)", async () => {
    const { transport, seen } = failing(() => new ConnectError("called", Code.Internal));
    const executor = new ExecutorClient("", "t", { transport });
    const shared = { token: "{{A}}" };
    await assert.rejects(
      executor.resolve("ws", { b: { one: shared, two: [shared, shared] } }, { triggeringUserId: "u" }),
      (err: unknown) => err instanceof SecretsError && err.code === "INTERNAL",
    );
    assert.equal(seen.length, 1);
  });
});

describe("deadlines", () => {
  it("rotateKeys keeps its 5-minute default when the call options leave timeoutMs undefined", async () => {
    const deadlines: Array<number | undefined> = [];
    const transport = createRouterTransport((router) =>
      router.service(Operations, {
        rotateKeys(_req, ctx) {
          deadlines.push(ctx.timeoutMs());
          return {};
        },
      }),
    );
    const ops = new OpsClient("", "t", { transport });
    await ops.rotateKeys({ timeoutMs: undefined });
    assert.ok((deadlines[0] ?? 0) > 60_000, String(deadlines[0]));
  });
});
