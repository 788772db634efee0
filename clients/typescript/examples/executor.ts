// How a workflow executor uses the client: resolve a run's blocks, check each block before it
// runs, and mask the resolved values in everything it logs (console or pino).
//
//   SECRETS_ADDRESS=127.0.0.1:50051 SECRETS_TOKEN=... node dist/examples/executor.js ws1 u1
import { pino } from "pino";

import { ExecutorClient, redactConsole, redactingWrite } from "../src/index.js";

async function main(): Promise<void> {
  const [workspaceId = "ws1", userId = "u1"] = process.argv.slice(2);
  const executor = new ExecutorClient(process.env["SECRETS_ADDRESS"] ?? "127.0.0.1:50051", process.env["SECRETS_TOKEN"] ?? "");
  try {
    const resolution = await executor.resolve(
      workspaceId,
      { http: { headers: { Authorization: "Bearer {{API_TOKEN}}" }, url: "https://api.example.com" } },
      { trigger: "manual", triggeringUserId: userId },
    );
    const redactor = resolution.redactor();
    // console: every console.log/info/warn/error/debug/trace from here on is masked.
    const restoreConsole = redactConsole(redactor);
    // pino: every line it writes is masked (JSON-escaped forms included).
    const log = pino({ hooks: { streamWrite: redactingWrite(redactor) } });

    for (const block of Object.values(resolution.blocks)) {
      if (!block.ok) {
        // SECRET_NOT_FOUND / SECRET_NOT_PERMITTED: the run fails when it reaches this block.
        log.error({ block: block.blockId, code: block.error.code }, block.error.message);
        continue;
      }
      log.info({ block: block.blockId, inputs: block.inputs }, "running block"); // values masked
      console.log("inputs of %s: %j", block.blockId, block.inputs); // masked too
    }
    restoreConsole();
  } finally {
    executor.close();
  }
}

await main();
