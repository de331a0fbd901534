// Compares two AsyncAPI documents with the AsyncAPI project's own diff (@asyncapi/diff), on
// documents parsed and dereferenced by @asyncapi/parser, as the diff library requires.
//
//   node scripts/asyncapi/diff.mjs OLD.yaml NEW.yaml
//
// Prints one JSON object: {"breaking": [...], "old": {...}, "new": {...}}: the breaking
// changes (action, path as a JSON pointer) and both dereferenced documents, so the caller
// (scripts/asyncapi_compat.py) can tell which message each change belongs to and whether
// that message's schema version was bumped. Exits 2 when a document does not parse.
import { readFile } from "node:fs/promises";
import { Parser } from "@asyncapi/parser";
import { diff } from "@asyncapi/diff";

// The library's standard leaves a message's payload schema unclassified. Our rules for it,
// those of a tolerant reader (DESIGN.md section 3): a field removed or changed breaks readers;
// a new field does not (old readers ignore it), unless it is required (new readers of old
// messages would miss it). Written down for every depth of the envelope's JSON Schema.
const SCHEMA_DEPTH = 16;
const FIELD = { add: "non-breaking", remove: "breaking", edit: "breaking" };
const REQUIRED = { add: "breaking", remove: "non-breaking", edit: "breaking" };
// Words for people (a docstring reworded, a title): never a change to what is on the wire.
const PROSE = { add: "non-breaking", remove: "non-breaking", edit: "non-breaking" };
const PROSE_KEYWORDS = ["description", "title", "examples", "$comment"];

function payloadOverrides() {
  // The v3 standard has no /components entries at all: a message type removed is breaking.
  const overrides = {
    "/components": FIELD,
    "/components/messages": FIELD,
    "/components/messages/*": FIELD,
  };
  let prefix = "/components/messages/*/payload";
  overrides[prefix] = FIELD;
  for (let depth = 0; depth < SCHEMA_DEPTH; depth += 1) {
    overrides[`${prefix}/required`] = REQUIRED;
    overrides[`${prefix}/required/*`] = REQUIRED;
    for (const keyword of PROSE_KEYWORDS) {
      overrides[`${prefix}/${keyword}`] = PROSE;
      overrides[`${prefix}/${keyword}/*`] = PROSE;
    }
    prefix = `${prefix}/*`;
    overrides[prefix] = FIELD;
  }
  return overrides;
}

async function dereferenced(parser, path) {
  const { document, diagnostics } = await parser.parse(await readFile(path, "utf8"), {
    source: path,
  });
  if (document === undefined) {
    const errors = diagnostics.map((d) => `${d.code}: ${d.message}`).join("; ");
    throw new Error(`${path} does not parse: ${errors}`);
  }
  return withoutParserIds(document.json());
}

// The parser numbers anonymous schemas (x-parser-schema-id: <anonymous-schema-143>) in document
// order: a message added before others would renumber them, which is not a change of ours.
function withoutParserIds(value) {
  if (Array.isArray(value)) return value.map(withoutParserIds);
  if (value === null || typeof value !== "object") return value;
  return Object.fromEntries(
    Object.entries(value)
      .filter(([key]) => !key.startsWith("x-parser-"))
      .map(([key, inner]) => [key, withoutParserIds(inner)]),
  );
}

const [oldPath, newPath] = process.argv.slice(2);
if (!oldPath || !newPath) {
  console.error("usage: node diff.mjs OLD.yaml NEW.yaml");
  process.exit(2);
}
try {
  const parser = new Parser();
  const before = await dereferenced(parser, oldPath);
  const after = await dereferenced(parser, newPath);
  // `override`: the option's name in the code (lib/main.js); the README says `overrides`.
  const output = diff(before, after, { override: payloadOverrides() });
  const breaking = output.breaking().map(({ action, path }) => ({ action, path }));
  process.stdout.write(JSON.stringify({ breaking, old: before, new: after }));
} catch (error) {
  console.error(error.message);
  process.exit(2);
}
