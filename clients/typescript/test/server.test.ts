// Against a real server: tests/typescript/test_typescript_client.py starts it and sets
// SECRETS_ADDRESS and SECRETS_TOKENS ({"editor": ..., "executor": ..., "directory": ..., "ops": ...}).
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, describe, it } from "node:test";

import { timestampDate } from "@bufbuild/protobuf/wkt";

import {
  DirectoryClient,
  EditorClient,
  ExecutorClient,
  ImportAction,
  InvalidArgument,
  MASK,
  NotFound,
  OpsClient,
  PermissionDenied,
  RevisionConflict,
  SaveAction,
  Unauthenticated,
  redactConsole,
  secretsV1,
} from "./support.js";
import { document } from "./vectors.js";

const address = process.env["SECRETS_ADDRESS"];
const tokens = JSON.parse(process.env["SECRETS_TOKENS"] ?? "{}") as Record<string, string>;
const uid = (prefix: string): string => `${prefix}-${randomUUID().slice(0, 8)}`;

describe("against the real server", { skip: address ? false : "SECRETS_ADDRESS is not set" }, () => {
  let executor: ExecutorClient;
  let editor: EditorClient;
  let directory: DirectoryClient;
  let ops: OpsClient;

  before(() => {
    executor = new ExecutorClient(address ?? "", tokens["executor"] ?? "");
    editor = new EditorClient(address ?? "", tokens["editor"] ?? "");
    directory = new DirectoryClient(address ?? "", tokens["directory"] ?? "");
    ops = new OpsClient(address ?? "", tokens["ops"] ?? "");
  });
  after(() => {
    for (const c of [executor, editor, directory, ops]) c.close();
  });

  async function workspace(permission: "read" | "write" | "admin" = "admin"): Promise<{ ws: string; user: string }> {
    const ws = uid("ws");
    const user = uid("user");
    await directory.putMember(ws, user, `${user}@example.com`, permission);
    return { ws, user };
  }

  it("resolves nested inputs, reports failing blocks, and redacts what it got", async () => {
    const { ws, user } = await workspace();
    const pem = "-----BEGIN-----\nline-one-of-key\nline-two-of-key\n-----END-----";
    await editor.save(user, ws, { expectedRevision: 0, set: { TOKEN: "tok-abcdef123", PEM: pem } });
    await editor.save(user, ws, { scope: "personal", expectedRevision: 0, set: { MINE: "personal-987" } });

    const resolution = await executor.resolve(
      ws,
      {
        http: { headers: { Authorization: "Bearer {{TOKEN}}" }, body: "{{PEM}}", n: 2, list: [{ deep: ["{{ TOKEN }}"] }, true, null] },
        two: { joined: "{{MINE}}:{{TOKEN}}" },
        broken: { x: { y: "{{NOPE}}" } },
      },
      { trigger: "manual", triggeringUserId: user, workflowId: "wf-1" },
    );

    assert.equal(resolution.runUserId, user);
    const { http, two, broken } = resolution.blocks;
    assert.ok(http?.ok && two?.ok && broken && !broken.ok);
    assert.deepEqual(http.inputs, {
      headers: { Authorization: "Bearer tok-abcdef123" },
      body: pem,
      n: 2,
      list: [{ deep: ["tok-abcdef123"] }, true, null],
    });
    assert.deepEqual(
      http.references.map((r) => [r.fieldPath, r.key, r.scope, r.version, r.start, r.end]),
      [
        ["body", "PEM", "workspace", 1n, 0, [...pem].length],
        ["headers.Authorization", "TOKEN", "workspace", 1n, 7, 20],
        ["list[0].deep[0]", "TOKEN", "workspace", 1n, 0, 13],
      ],
    );
    assert.deepEqual(two.inputs, { joined: "personal-987:tok-abcdef123" });
    assert.deepEqual(two.references.map((r) => [r.key, r.scope]), [["MINE", "personal"], ["TOKEN", "workspace"]]);
    assert.equal(broken.error.code, "SECRET_NOT_FOUND");
    assert.equal(broken.error.key, "NOPE");
    assert.equal(broken.error.fieldPath, "x.y");
    assert.match(broken.error.message, /broken/);

    // The executor's logger, with the redactor installed.
    const lines: string[] = [];
    const push = (...args: unknown[]): void => void lines.push(args.map(String).join(" "));
    const log = { log: push, info: push, warn: push, error: push, debug: push, trace: push };
    const restore = redactConsole(resolution.redactor(), log);
    log.info("request %j", http.inputs);
    log.info("joined=%s", two.inputs["joined"]);
    log.warn("second line only: line-two-of-key");
    restore();
    const out = lines.join("\n");
    for (const secret of ["tok-abcdef123", "personal-987", "line-one-of-key", "line-two-of-key"]) assert.ok(!out.includes(secret), out);
    assert.ok(out.split(MASK).length - 1 >= 4, out);
  });

  it("automated runs resolve for the workflow owner", async () => {
    const { ws, user } = await workspace();
    await editor.save(user, ws, { scope: "personal", expectedRevision: 0, set: { OWNER_KEY: "owner-value-1" } });
    const resolution = await executor.resolve(ws, { b: { k: "{{OWNER_KEY}}" } }, { trigger: "schedule", workflowOwnerId: user });
    const b = resolution.blocks["b"];
    assert.ok(b?.ok);
    assert.deepEqual(b.inputs, { k: "owner-value-1" });
  });

  it("editor: list, save with expectedRevision, and the revision conflict", async () => {
    const { ws, user } = await workspace();
    const empty = await editor.listSecrets(user, ws);
    assert.equal(empty.workspaceRevision, 0n);
    const saved = await editor.save(user, ws, { expectedRevision: empty.workspaceRevision, set: { A: "value-a" } });
    assert.equal(saved.revision, 1n);
    assert.deepEqual(saved.saved.map((s) => [s.key, s.action]), [["A", SaveAction.CREATED]]);

    await assert.rejects(editor.save(user, ws, { expectedRevision: 0, set: { B: "value-b" } }), (err: unknown) => {
      assert.ok(err instanceof RevisionConflict);
      assert.equal(err.currentRevision, 1n);
      return true;
    });
    // Reload, reapply, save again.
    const listing = await editor.listSecrets(user, ws);
    const again = await editor.save(user, ws, { expectedRevision: listing.workspaceRevision, set: { B: "value-b" }, rename: { A: "A2" } });
    assert.equal(again.revision, 2n);
    const keys = (await editor.listSecrets(user, ws)).workspaceSecrets.map((s) => s.key).sort();
    assert.deepEqual(keys, ["A2", "B"]);
    const third = await editor.save(user, ws, { expectedRevision: 2n, delete: ["B"] });
    assert.equal(third.saved[0]?.action, SaveAction.DELETED);
  });

  it("paging: one page by default, every page through secrets() and listMembers()", async () => {
    const { ws, user } = await workspace();
    const set: Record<string, string> = {};
    for (let i = 0; i < 150; i++) set[`P${String(i).padStart(3, "0")}`] = `value-${i}`;
    await editor.save(user, ws, { expectedRevision: 0, set });
    const first = await editor.listSecrets(user, ws);
    assert.equal(first.workspaceSecrets.length, 100);
    assert.ok(first.nextPageToken);
    const rest = await editor.listSecrets(user, ws, { pageToken: first.nextPageToken });
    assert.equal(rest.workspaceSecrets.length, 50);
    assert.equal(rest.nextPageToken, "");
    const keys: string[] = [];
    for await (const s of editor.secrets(user, ws, { pageSize: 40 })) keys.push(s.key);
    assert.deepEqual(keys, Object.keys(set));
    const refs = await editor.listReferenceable(user, ws, "P1", { pageSize: 3 });
    assert.deepEqual(refs.workspace.map((k) => k.key), ["P100", "P101", "P102"]);
    await assert.rejects(editor.listSecrets(user, ws, { pageSize: -1 }), InvalidArgument);
    await assert.rejects(editor.listSecrets(user, ws, { pageToken: "nonsense" }), InvalidArgument);
    assert.deepEqual((await directory.listMembers(ws)).map((m) => m.userId), [user]);
  });

  it("typed errors: invalid argument with violations, not found, permission denied, unauthenticated", async () => {
    const { ws, user } = await workspace();
    await assert.rejects(editor.save(user, ws, { expectedRevision: 0, set: { "bad key": "v", OK: "" } }), (err: unknown) => {
      assert.ok(err instanceof InvalidArgument);
      assert.equal(err.local, false);
      assert.deepEqual(err.violations.map((v) => v.field), ["changes[0].key", "changes[1].value"]);
      return true;
    });
    await assert.rejects(editor.getSecret(user, ws, "MISSING"), NotFound);

    const wrongRole = new ExecutorClient(address ?? "", tokens["editor"] ?? "");
    await assert.rejects(wrongRole.resolve(ws, {}, { triggeringUserId: user }), PermissionDenied);
    wrongRole.close();

    const reader = uid("reader");
    await directory.putMember(ws, reader, `${reader}@example.com`, "read");
    await assert.rejects(editor.save(reader, ws, { expectedRevision: 0, set: { NEW_KEY: "value-x" } }), PermissionDenied);

    const nobody = new ExecutorClient(address ?? "", "not-a-token");
    await assert.rejects(nobody.resolve(ws, {}, { triggeringUserId: user }), Unauthenticated);
    assert.ok(!String(nobody).includes("not-a-token"));
    nobody.close();
  });

  it("import with dry run reports and changes nothing, then imports", async () => {
    const { ws, user } = await workspace();
    await editor.save(user, ws, { expectedRevision: 0, set: { EXISTING: "old-value" } });
    const content = "NEW_ONE=first\nexport NEW_TWO = 'second'\nnot a line\nEXISTING=new-value\n";
    const dry = await editor.importDotenv(user, ws, content, { dryRun: true, expectedRevision: 1 });
    assert.equal(dry.dryRun, true);
    assert.equal(dry.revision, 1n);
    assert.deepEqual(
      dry.entries.map((e) => [e.key, e.line]),
      [["NEW_ONE", 1], ["NEW_TWO", 2], ["EXISTING", 4]],
    );
    assert.equal(dry.entries[0]?.action, ImportAction.CREATED);
    assert.equal(dry.problems.length, 1);
    assert.equal(dry.problems[0]?.line, 3);
    assert.ok(!JSON.stringify(dry, (_k, v: unknown) => (typeof v === "bigint" ? String(v) : v)).includes("first"));
    assert.equal((await editor.listSecrets(user, ws)).workspaceRevision, 1n);

    const real = await editor.importDotenv(user, ws, content, { expectedRevision: 1 });
    assert.equal(real.revision, 2n);
    const keys = (await editor.listSecrets(user, ws)).workspaceSecrets.map((s) => s.key).sort();
    assert.deepEqual(keys, ["EXISTING", "NEW_ONE", "NEW_TWO"]);
  });

  it("every other SecretStore RPC, the directory and the key status", async () => {
    const { ws, user } = await workspace();
    const colleague = uid("colleague");
    await directory.putMember(ws, colleague, `${colleague}@example.com`, "write", { external: true });
    const members = await directory.listMembers(ws);
    assert.deepEqual(members.map((m) => m.userId).sort(), [colleague, user].sort());

    await editor.save(user, ws, { expectedRevision: 0, set: { API_KEY: "value-one" } });
    await editor.save(user, ws, { expectedRevision: 1, set: { API_KEY: "value-two" } });
    let details = await editor.getSecret(user, ws, "API_KEY");
    assert.equal(details?.summary?.version, 2n);
    details = await editor.updateDetails(user, ws, "API_KEY", { displayName: "The API key", restricted: true });
    assert.equal(details?.summary?.displayName, "The API key");
    assert.equal(details?.summary?.restricted, true);
    details = await editor.setMember(user, ws, "API_KEY", `${colleague}@example.com`, "member");
    assert.ok(details?.members.some((m) => m.userId === colleague && m.role === secretsV1.SecretRole.MEMBER));
    details = await editor.removeMember(user, ws, "API_KEY", `${colleague}@example.com`);
    assert.ok(!details?.members.some((m) => m.userId === colleague));
    details = await editor.restoreVersion(user, ws, "API_KEY", 1);
    assert.equal(details?.summary?.version, 3n);

    const referenceable = await editor.listReferenceable(user, ws, "API");
    assert.deepEqual(referenceable.workspace.map((k) => k.key), ["API_KEY"]);
    const explained = await editor.explain(user, ws, { b: { h: "{{API_KEY}} {{GONE}}" } }, { triggeringUserId: user });
    assert.deepEqual(explained.references.map((r) => [r.key, r.problem]), [
      ["API_KEY", secretsV1.BlockErrorCode.UNSPECIFIED],
      ["GONE", secretsV1.BlockErrorCode.SECRET_NOT_FOUND],
    ]);
    // The restored version resolves.
    const resolution = await executor.resolve(ws, { b: { k: "{{API_KEY}}" } }, { triggeringUserId: user });
    assert.deepEqual(resolution.blocks["b"]?.ok && resolution.blocks["b"].inputs, { k: "value-one" });

    const removed = await directory.removeMember(ws, colleague);
    assert.equal(removed.removed, true);
    const status = await ops.keyStatus();
    assert.equal(status.primaryKeyId, "k1");
  });

  it("the trash: list, restore whole, purge; and expiresAt on updateDetails", async () => {
    const { ws, user } = await workspace();
    await editor.save(user, ws, { expectedRevision: 0, set: { OLD: "old-value-one", DOOMED: "doomed-value" } });
    await editor.save(user, ws, { expectedRevision: 1, set: { OLD: "old-value-two" } });
    await editor.updateDetails(user, ws, "OLD", { displayName: "The old one" });
    const before = (await editor.listSecrets(user, ws)).workspaceRevision;
    await editor.save(user, ws, { expectedRevision: before, delete: ["OLD", "DOOMED"] });

    const trash = await editor.listDeletedSecrets(user, ws);
    const text = JSON.stringify(trash, (_k, v: unknown) => (typeof v === "bigint" ? String(v) : v));
    for (const value of ["old-value-one", "old-value-two", "doomed-value"]) assert.ok(!text.includes(value), text);
    assert.deepEqual(trash.workspaceSecrets.map((d) => d.summary?.key).sort(), ["DOOMED", "OLD"]);
    assert.deepEqual(trash.personalSecrets, []);
    const old = trash.workspaceSecrets.find((d) => d.summary?.key === "OLD");
    const doomed = trash.workspaceSecrets.find((d) => d.summary?.key === "DOOMED");
    assert.ok(old && doomed && old.deletedId > 0n);
    assert.equal(old.keptVersions, 2);
    assert.equal(old.summary?.displayName, "The old one");
    assert.ok(old.deletedAt && old.purgeAt && timestampDate(old.purgeAt) > timestampDate(old.deletedAt));

    // Restored whole: its details and both versions, on a new revision.
    const restored = await editor.restoreDeletedSecret(user, ws, old.deletedId);
    assert.equal(restored.revision, before + 2n);
    assert.equal(restored.secret?.summary?.key, "OLD");
    assert.equal(restored.secret?.summary?.displayName, "The old one");
    let resolution = await executor.resolve(ws, { b: { k: "{{OLD}}" } }, { triggeringUserId: user });
    assert.deepEqual(resolution.blocks["b"]?.ok && resolution.blocks["b"].inputs, { k: "old-value-two" });
    await editor.restoreVersion(user, ws, "OLD", 1);
    resolution = await executor.resolve(ws, { b: { k: "{{OLD}}" } }, { triggeringUserId: user });
    assert.deepEqual(resolution.blocks["b"]?.ok && resolution.blocks["b"].inputs, { k: "old-value-one" });

    // Purged for good: gone from the trash, and neither call finds it again.
    await editor.purgeDeletedSecret(user, ws, doomed.deletedId);
    assert.deepEqual((await editor.listDeletedSecrets(user, ws)).workspaceSecrets, []);
    await assert.rejects(editor.purgeDeletedSecret(user, ws, doomed.deletedId), NotFound);
    await assert.rejects(editor.restoreDeletedSecret(user, ws, old.deletedId), NotFound);
    // Another member's personal trash holds nothing of it.
    const reader = uid("reader");
    await directory.putMember(ws, reader, `${reader}@example.com`, "read");
    await assert.rejects(editor.purgeDeletedSecret(reader, ws, old.deletedId, { scope: "personal" }), NotFound);

    // The expiry: a past time expires it at once and the run fails; null removes it.
    const past = new Date(Date.now() - 60_000);
    let details = await editor.updateDetails(user, ws, "OLD", { expiresAt: past });
    assert.ok(details?.summary?.expiresAt);
    assert.equal(timestampDate(details.summary.expiresAt).getTime(), past.getTime());
    assert.equal(details.summary.expired, true);
    resolution = await executor.resolve(ws, { b: { k: "{{OLD}}" } }, { triggeringUserId: user });
    const failed = resolution.blocks["b"];
    assert.ok(failed && !failed.ok);
    assert.equal(failed.error.code, "SECRET_EXPIRED");
    const future = new Date(Date.UTC(2999, 0, 1));
    details = await editor.updateDetails(user, ws, "OLD", { expiresAt: future });
    assert.equal(details?.summary?.expired, false);
    assert.equal(details?.summary?.expiresAt && timestampDate(details.summary.expiresAt).getTime(), future.getTime());
    details = await editor.updateDetails(user, ws, "OLD", { expiresAt: null, description: "kept" });
    assert.equal(details?.summary?.expiresAt, undefined);
    assert.equal(details?.summary?.description, "kept");
    resolution = await executor.resolve(ws, { b: { k: "{{OLD}}" } }, { triggeringUserId: user });
    assert.ok(resolution.blocks["b"]?.ok);
  });

  it("pages the audit log as an async iterator", async () => {
    const { ws, user } = await workspace();
    for (let revision = 0; revision < 5; revision++) {
      await editor.save(user, ws, { expectedRevision: revision, set: { K: `value-${revision}` } });
    }
    const first = await ops.listAuditEvents({ workspaceId: ws, pageSize: 2 });
    assert.equal(first.events.length, 2);
    assert.notEqual(first.nextPageToken, "");
    const actions: string[] = [];
    for await (const event of ops.auditEvents({ workspaceId: ws, pageSize: 2 })) actions.push(event.action);
    assert.deepEqual(actions, [...Array(5).fill("secrets.save"), "member.put"]);
  });

  describe("shared redaction vectors end to end", () => {
    for (const c of document.cases) {
      it(c.name, async () => {
        const { ws, user } = await workspace();
        await editor.save(user, ws, { expectedRevision: 0, set: c.values });
        const resolution = await executor.resolve(ws, { b: c.inputs }, { triggeringUserId: user });
        const block = resolution.blocks["b"];
        assert.ok(block?.ok);
        assert.deepEqual(block.inputs, c.resolved);
        assert.deepEqual(
          block.references.map((r) => ({ field_path: r.fieldPath, key: r.key, start: r.start, end: r.end })),
          c.references,
        );
        const redactor = resolution.redactor();
        for (const item of c.redact) assert.equal(redactor.redact(item.text), item.expected, item.text);
      });
    }
  });
});
