// Generates src/gen from ../../protos (secrets.v1) and the google.rpc status and error-detail
// protos shipped in the google-proto-files npm package (no network at run time).
//
//   node scripts/gen.mjs          writes src/gen
//   node scripts/gen.mjs --check  exits 1 when the committed src/gen differs from a fresh run
import { spawnSync } from "node:child_process";
import { cpSync, mkdtempSync, readdirSync, readFileSync, rmSync, mkdirSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const protos = resolve(here, "../../protos");
const googleapis = join(here, "node_modules/google-proto-files");
const target = join(here, "src/gen");
const check = process.argv.includes("--check");

function files(root) {
  const out = new Map();
  const walk = (dir) => {
    for (const name of readdirSync(dir)) {
      const path = join(dir, name);
      if (statSync(path).isDirectory()) walk(path);
      else out.set(relative(root, path), readFileSync(path, "utf8"));
    }
  };
  try {
    walk(root);
  } catch (err) {
    if (err.code !== "ENOENT") throw err;
  }
  return out;
}

const tmp = mkdtempSync(join(tmpdir(), "secrets-ts-gen-"));
try {
  const input = join(tmp, "in");
  cpSync(join(protos, "secrets"), join(input, "secrets"), { recursive: true, filter: (p) => statSync(p).isDirectory() || p.endsWith(".proto") });
  mkdirSync(join(input, "google/rpc"), { recursive: true });
  for (const name of ["status.proto", "error_details.proto"]) {
    cpSync(join(googleapis, "google/rpc", name), join(input, "google/rpc", name));
  }
  const out = join(tmp, "out");
  const bin = join(here, "node_modules/.bin");
  const run = spawnSync(join(bin, "buf"), ["generate", input, "--template", join(here, "buf.gen.yaml"), "-o", out], {
    cwd: here,
    env: { ...process.env, PATH: `${bin}:${process.env.PATH ?? ""}` },
    encoding: "utf8",
  });
  if (run.status !== 0) {
    process.stderr.write(run.stderr || run.stdout || String(run.error));
    throw new Error("buf generate failed");
  }
  const fresh = files(join(out, "src/gen"));
  if (check) {
    const current = files(target);
    const stale = [...new Set([...current.keys(), ...fresh.keys()])].filter((f) => current.get(f) !== fresh.get(f)).sort();
    if (stale.length) {
      console.error(`clients/typescript/src/gen is stale (${stale.join(", ")}): run \`make gen\` and commit the result`);
      process.exitCode = 1;
    } else {
      console.log("clients/typescript/src/gen is up to date");
    }
  } else {
    rmSync(target, { recursive: true, force: true });
    cpSync(join(out, "src/gen"), target, { recursive: true });
    console.log(`generated ${fresh.size} files under clients/typescript/src/gen`);
  }
} finally {
  rmSync(tmp, { recursive: true, force: true });
}
