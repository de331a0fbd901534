// Validates AsyncAPI documents with the official parser (@asyncapi/parser): `make asyncapi-check`.
//
//   node scripts/asyncapi/validate.mjs docs/asyncapi.yaml [more.yaml ...]
//
// Prints every diagnostic (error, warning, info, hint) with its path; exits 1 when any document
// has a diagnostic of severity error or cannot be parsed into a document at all, 0 otherwise.
import { readFile } from "node:fs/promises";
import { Parser, DiagnosticSeverity } from "@asyncapi/parser";

const SEVERITY = {
  [DiagnosticSeverity.Error]: "error",
  [DiagnosticSeverity.Warning]: "warning",
  [DiagnosticSeverity.Information]: "info",
  [DiagnosticSeverity.Hint]: "hint",
};

async function validate(parser, path) {
  const source = await readFile(path, "utf8");
  const { document, diagnostics } = await parser.parse(source, { source: path });
  let errors = 0;
  for (const diagnostic of diagnostics) {
    const severity = SEVERITY[diagnostic.severity] ?? String(diagnostic.severity);
    if (diagnostic.severity === DiagnosticSeverity.Error) errors += 1;
    const where = diagnostic.path.length ? diagnostic.path.join(".") : "(document)";
    console.log(`${path}: ${severity} ${diagnostic.code}: ${diagnostic.message} at ${where}`);
  }
  if (document === undefined && errors === 0) errors = 1; // not parsed, whatever the reason
  const summary = document
    ? `${document.channels().length} channels, ${document.operations().length} operations, ` +
      `${document.messages().length} messages`
    : "no document";
  console.log(`${path}: ${errors ? "INVALID" : "valid"} AsyncAPI ${document?.version() ?? "?"} ` +
    `(${summary}; ${diagnostics.length} diagnostics, ${errors} errors)`);
  return errors;
}

const paths = process.argv.slice(2);
if (paths.length === 0) {
  console.error("usage: node validate.mjs FILE.yaml [...]");
  process.exit(2);
}
const parser = new Parser();
let failed = 0;
for (const path of paths) {
  try {
    if (await validate(parser, path)) failed += 1;
  } catch (error) {
    console.log(`${path}: INVALID (${error.message})`);
    failed += 1;
  }
}
process.exit(failed ? 1 : 0);
