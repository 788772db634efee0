// The shared redaction vectors, clients/testdata/redaction_vectors.json (read-only here).
import { readFileSync } from "node:fs";

import type { JsonObject } from "@bufbuild/protobuf";

export interface Case {
  name: string;
  values: Record<string, string>;
  inputs: JsonObject;
  resolved: JsonObject;
  references: Array<{ field_path: string; key: string; start: number; end: number }>;
  redact: Array<{ text: string; expected: string }>;
}

export const VECTORS = new URL("../../../testdata/redaction_vectors.json", import.meta.url);
export const document = JSON.parse(readFileSync(VECTORS, "utf8")) as { mask: string; min_masked_length: number; cases: Case[] };
