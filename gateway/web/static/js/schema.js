// Response schemas in the browser: the subset of JSON Schema draft 2020-12
// that protocol/schema.py checks, with the same verdicts, pointers and keywords
// (tests/web/schema_cases.json holds both to that; tests/protocol/test_schema.py
// compares them on random instances). Plain ES module, no dependencies.
//
// Keywords ("Validation" = JSON Schema Validation 2020-12, "Core" = JSON
// Schema Core 2020-12):
//   Validation s6.1.1 type (a name or a non-empty list of unique names of
//   object array string integer number boolean null; "integer" is any number
//   with a zero fractional part), s6.1.2 enum (non-empty, unique), s6.1.3
//   const; s6.2.2-s6.2.5 maximum, exclusiveMaximum, minimum, exclusiveMinimum
//   (numbers); s6.3.1/s6.3.2 maxLength/minLength (code points, not UTF-16
//   units); s6.4.1/s6.4.2 maxItems/minItems; s6.5.3 required (unique names);
//   Core s10.3.1.2 items, s10.3.2.1 properties, s10.3.2.3
//   additionalProperties (a boolean or a schema); annotations that assert
//   nothing: title, description, $comment (strings), default, examples (an
//   array), and $schema at the root, only DIALECT.
//
// Invariants:
// - fail closed: any other keyword ($ref, oneOf, format, pattern, ...) makes
//   checkSchema throw, so nothing an agent asks for is silently skipped;
//   pattern is out on purpose (regex dialects differ; ReDoS);
// - a schema is a plain JSON object; a subschema is an object or a boolean;
// - schema and instance are I-JSON (RFC 7493): numbers finite with magnitude
//   at most Number.MAX_SAFE_INTEGER (s2.2), no lone surrogates in strings or
//   member names (s2.1); anything that is not a JSON value (undefined, a
//   function, a Map, a class instance) is refused. Keyword "i-json";
// - limits: schema depth MAX_SCHEMA_DEPTH and MAX_SCHEMA_NODES values (enum at
//   most MAX_ENUM), instance depth MAX_INSTANCE_DEPTH and MAX_INSTANCE_NODES
//   values. Keywords "depth" and "size";
// - members are read as own properties only (Object.hasOwn semantics), never
//   through the prototype: a member named "constructor" or "__proto__" is
//   just a member;
// - errors are SchemaError with .code ("invalid_schema" from checkSchema,
//   "response_invalid" from validate: protocol/errors.py's stable codes),
//   .pointer (RFC 6901: into the schema, or into the instance) and .keyword.
//   The first failure is thrown, in the same order as the Python: the I-JSON
//   and limits scan, then at each location type, const, enum, minimum,
//   exclusiveMinimum, maximum, exclusiveMaximum, minLength, maxLength,
//   minItems, maxItems, items, required, properties/additionalProperties;
//   members in RFC 8785 order (UTF-16 code units), elements by index. A value
//   a false subschema refuses names the keyword that applied it.

export const DIALECT = "https://json-schema.org/draft/2020-12/schema";
export const TYPES = Object.freeze([
  "object",
  "array",
  "string",
  "integer",
  "number",
  "boolean",
  "null",
]);
export const MAX_SCHEMA_DEPTH = 32;
export const MAX_SCHEMA_NODES = 2048;
export const MAX_ENUM = 256;
export const MAX_INSTANCE_DEPTH = 64;
export const MAX_INSTANCE_NODES = 100000;
export const INVALID_SCHEMA = "invalid_schema";
export const RESPONSE_INVALID = "response_invalid";

const ANNOTATIONS = ["title", "description", "$comment", "default", "examples"];
const NUMBER_BOUNDS = ["minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"];
const COUNTS = ["minLength", "maxLength", "minItems", "maxItems"];
const KEYWORDS = new Set([
  "$schema",
  "type",
  "enum",
  "const",
  "properties",
  "required",
  "additionalProperties",
  "items",
  ...NUMBER_BOUNDS,
  ...COUNTS,
  ...ANNOTATIONS,
]);
const LONE_SURROGATE = /[\uD800-\uDFFF]/u;

/** A schema that is refused, or an instance that does not fit. */
export class SchemaError extends Error {
  constructor(code, pointer, keyword, reason) {
    super(`${keyword} at "${pointer}": ${reason}`);
    this.name = "SchemaError";
    this.code = code;
    this.pointer = pointer;
    this.keyword = keyword;
  }
}

function schemaError(pointer, keyword, reason) {
  throw new SchemaError(INVALID_SCHEMA, pointer, keyword, reason);
}

function responseError(pointer, keyword, reason) {
  throw new SchemaError(RESPONSE_INVALID, pointer, keyword, reason);
}

// ------------------------------------------------------------------ JSON values

const hasOwn = (object, name) => Object.prototype.hasOwnProperty.call(object, name);

/** The JSON type of a value, or null for anything that is not JSON. */
function kind(value) {
  if (value === null) return "null";
  switch (typeof value) {
    case "boolean":
      return "boolean";
    case "number":
      return "number";
    case "string":
      return "string";
    case "object": {
      if (Array.isArray(value)) return "array";
      const proto = Object.getPrototypeOf(value);
      return proto === Object.prototype || proto === null ? "object" : null;
    }
    default:
      return null;
  }
}

/** RFC 6901 reference token: "~" as "~0", "/" as "~1". */
function escape(name) {
  return name.replaceAll("~", "~0").replaceAll("/", "~1");
}

/** Member names in RFC 8785 order: the default sort compares UTF-16 code units. */
function members(object) {
  return Object.keys(object).sort();
}

function codePoints(text) {
  let count = 0;
  for (const _ of text) count += 1;
  return count;
}

class Scan {
  constructor(fail, maxDepth, maxNodes) {
    this.fail = fail;
    this.maxDepth = maxDepth;
    this.maxNodes = maxNodes;
    this.nodes = 0;
  }

  run(value, at, depth) {
    this.nodes += 1;
    if (this.nodes > this.maxNodes) this.fail(at, "size", `more than ${this.maxNodes} JSON values`);
    const type = kind(value);
    if (type === "null" || type === "boolean") return;
    if (type === "string") {
      if (LONE_SURROGATE.test(value)) this.fail(at, "i-json", "lone surrogate in a string");
    } else if (type === "number") {
      if (!Number.isFinite(value)) this.fail(at, "i-json", "numbers are finite");
      if (Math.abs(value) > Number.MAX_SAFE_INTEGER) {
        this.fail(at, "i-json", "number of magnitude over 2**53 - 1");
      }
    } else if (type === "array") {
      if (depth >= this.maxDepth) this.fail(at, "depth", `nested deeper than ${this.maxDepth}`);
      for (let index = 0; index < value.length; index += 1) {
        this.run(value[index], `${at}/${index}`, depth + 1);
      }
    } else if (type === "object") {
      if (depth >= this.maxDepth) this.fail(at, "depth", `nested deeper than ${this.maxDepth}`);
      for (const name of members(value)) {
        if (LONE_SURROGATE.test(name)) this.fail(at, "i-json", "lone surrogate in a member name");
        this.run(value[name], `${at}/${escape(name)}`, depth + 1);
      }
    } else {
      this.fail(at, "i-json", `a ${typeof value} is not a JSON value`);
    }
  }
}

/** JSON equality (Core s4.2.2): same type and value; numbers by value. */
function equal(a, b) {
  const type = kind(a);
  if (type !== kind(b)) return false;
  if (type === "array") {
    return a.length === b.length && a.every((item, index) => equal(item, b[index]));
  }
  if (type === "object") {
    const names = Object.keys(a);
    return (
      names.length === Object.keys(b).length &&
      names.every((name) => hasOwn(b, name) && equal(a[name], b[name]))
    );
  }
  return a === b;
}

function repeats(values) {
  const seen = [];
  for (const value of values) {
    if (seen.some((other) => equal(value, other))) return true;
    seen.push(value);
  }
  return false;
}

// ------------------------------------------------------------------ checkSchema

/** Throw SchemaError (code "invalid_schema") unless schema is in the subset. */
export function checkSchema(schema) {
  if (kind(schema) !== "object") schemaError("", "type", "a response schema is a JSON object");
  new Scan(schemaError, MAX_SCHEMA_DEPTH, MAX_SCHEMA_NODES).run(schema, "", 0);
  check(schema, "", true);
}

function check(schema, at, root) {
  if (typeof schema === "boolean") return;
  for (const keyword of members(schema)) {
    if (!KEYWORDS.has(keyword)) schemaError(at, keyword, "keyword not supported");
    checkKeyword(keyword, schema[keyword], at, root);
  }
}

function checkKeyword(keyword, value, at, root) {
  const refuse = (reason) => schemaError(at, keyword, reason);
  const type = kind(value);
  if (keyword === "$schema") {
    if (!root || value !== DIALECT) refuse(`only ${DIALECT}, at the root`);
  } else if (keyword === "title" || keyword === "description" || keyword === "$comment") {
    if (type !== "string") refuse("a string");
  } else if (keyword === "examples") {
    if (type !== "array") refuse("an array");
  } else if (keyword === "type") {
    const names = type === "array" ? value : [value];
    if (names.length === 0 || names.some((name) => !TYPES.includes(name)) || repeats(names)) {
      refuse(`one of ${TYPES.join(", ")}, or a non-empty list of them without repeats`);
    }
  } else if (keyword === "enum") {
    if (type !== "array" || value.length === 0 || value.length > MAX_ENUM || repeats(value)) {
      refuse(`a non-empty array of at most ${MAX_ENUM} different values`);
    }
  } else if (NUMBER_BOUNDS.includes(keyword)) {
    if (type !== "number") refuse("a number");
  } else if (COUNTS.includes(keyword)) {
    if (type !== "number" || !Number.isInteger(value) || value < 0) {
      refuse("a non-negative integer");
    }
  } else if (keyword === "required") {
    if (type !== "array" || value.some((name) => kind(name) !== "string") || repeats(value)) {
      refuse("an array of different strings");
    }
  } else if (keyword === "properties") {
    if (type !== "object") refuse("an object of schemas");
    for (const name of members(value)) {
      checkSubschema(value[name], `${at}/properties/${escape(name)}`);
    }
  } else if (keyword === "items" || keyword === "additionalProperties") {
    checkSubschema(value, `${at}/${keyword}`);
  }
  // "const" and "default" take any JSON value (already scanned).
}

function checkSubschema(value, at) {
  const type = kind(value);
  if (type !== "object" && type !== "boolean") {
    schemaError(at, "type", "a schema is an object or a boolean");
  }
  check(value, at, false);
}

// ------------------------------------------------------------------ validate

/**
 * Throw SchemaError (code "response_invalid") unless instance fits schema.
 * The schema is checked first (checkSchema: code "invalid_schema").
 */
export function validate(instance, schema) {
  checkSchema(schema);
  new Scan(responseError, MAX_INSTANCE_DEPTH, MAX_INSTANCE_NODES).run(instance, "", 0);
  assertSchema(instance, schema, "", "");
}

function assertSchema(instance, schema, at, via) {
  if (schema === true) return;
  if (schema === false) responseError(at, via, "no value is allowed here");
  const fail = (keyword, reason) => responseError(at, keyword, reason);
  const type = kind(instance);
  if (hasOwn(schema, "type")) {
    const names = typeof schema.type === "string" ? [schema.type] : schema.type;
    if (!names.some((name) => isType(instance, type, name))) {
      fail("type", `expected ${names.join(" or ")}, got ${type}`);
    }
  }
  if (hasOwn(schema, "const") && !equal(instance, schema.const)) {
    fail("const", "not the constant value");
  }
  if (hasOwn(schema, "enum") && !schema.enum.some((option) => equal(instance, option))) {
    fail("enum", "not one of the listed values");
  }
  if (type === "number") {
    assertNumber(instance, schema, fail);
  } else if (type === "string") {
    const length = codePoints(instance);
    if (hasOwn(schema, "minLength") && length < schema.minLength) {
      fail("minLength", `shorter than ${schema.minLength} characters`);
    }
    if (hasOwn(schema, "maxLength") && length > schema.maxLength) {
      fail("maxLength", `longer than ${schema.maxLength} characters`);
    }
  } else if (type === "array") {
    if (hasOwn(schema, "minItems") && instance.length < schema.minItems) {
      fail("minItems", `fewer than ${schema.minItems} items`);
    }
    if (hasOwn(schema, "maxItems") && instance.length > schema.maxItems) {
      fail("maxItems", `more than ${schema.maxItems} items`);
    }
    if (hasOwn(schema, "items")) {
      instance.forEach((item, index) => assertSchema(item, schema.items, `${at}/${index}`, "items"));
    }
  } else if (type === "object") {
    for (const name of hasOwn(schema, "required") ? schema.required : []) {
      if (!hasOwn(instance, name)) fail("required", `no member "${name}"`);
    }
    const properties = hasOwn(schema, "properties") ? schema.properties : {};
    for (const name of members(instance)) {
      let sub;
      let keyword;
      if (hasOwn(properties, name)) {
        [sub, keyword] = [properties[name], "properties"];
      } else if (hasOwn(schema, "additionalProperties")) {
        [sub, keyword] = [schema.additionalProperties, "additionalProperties"];
      } else {
        continue;
      }
      assertSchema(instance[name], sub, `${at}/${escape(name)}`, keyword);
    }
  }
}

function isType(instance, type, name) {
  if (name === "integer") return type === "number" && Number.isInteger(instance);
  return type === name;
}

function assertNumber(value, schema, fail) {
  if (hasOwn(schema, "minimum") && value < schema.minimum) {
    fail("minimum", `below ${schema.minimum}`);
  }
  if (hasOwn(schema, "exclusiveMinimum") && value <= schema.exclusiveMinimum) {
    fail("exclusiveMinimum", `not above ${schema.exclusiveMinimum}`);
  }
  if (hasOwn(schema, "maximum") && value > schema.maximum) {
    fail("maximum", `above ${schema.maximum}`);
  }
  if (hasOwn(schema, "exclusiveMaximum") && value >= schema.exclusiveMaximum) {
    fail("exclusiveMaximum", `not below ${schema.exclusiveMaximum}`);
  }
}
