// A vecshard client generated from proto/ alone, run by tests/test_node_interop.py:
//   node tests/interop/node/interop.js <coordinator host:port> <collection>
// It creates the collection, adds points with payloads, runs filtered Search, Count, Scroll,
// SetPayload, Get and Remove, and prints one JSON object of what it saw. int64 values (ids and
// payload integers) never pass through a JS number: they are BigInt or decimal strings throughout.
"use strict";

const path = require("path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const PROTO_DIR = path.resolve(__dirname, "../../../proto");
const def = protoLoader.loadSync("vecshard/v1/vector_search.proto", {
  includeDirs: [PROTO_DIR], keepCase: true, longs: String, enums: String, defaults: true, oneofs: true,
});
const { VectorSearch } = grpc.loadPackageDefinition(def).vecshard.v1;

const [address, collection] = process.argv.slice(2);
if (!address || !collection) {
  console.error("usage: node interop.js <host:port> <collection>");
  process.exit(2);
}
const client = new VectorSearch(address, grpc.credentials.createInsecure());

// A unary call as a promise, with a deadline.
function call(method, request) {
  return new Promise((resolve, reject) => {
    client[method](request, { deadline: Date.now() + 30000 }, (err, resp) => {
      if (err) {
        err.rpc = method;
        reject(err);
      } else resolve(resp);
    });
  });
}

// Packed little-endian int64 ids <-> decimal strings (BigInt in between, never a JS number).
function packIds(ids) {
  const buf = Buffer.alloc(8 * ids.length);
  ids.forEach((id, i) => buf.writeBigInt64LE(BigInt(id), 8 * i));
  return buf;
}
function unpackIds(buf) {
  const ids = [];
  for (let off = 0; off < buf.length; off += 8) ids.push(buf.readBigInt64LE(off).toString());
  return ids;
}
function floatMatrix(rows) {
  const cols = rows[0].length;
  const data = Buffer.alloc(4 * rows.length * cols);
  rows.flat().forEach((x, i) => data.writeFloatLE(x, 4 * i));
  return { data, rows: rows.length, cols };
}

// The value of a payload field as it came off the wire (int_value is a decimal string).
const field = (payload, key) => (key in payload.fields ? payload.fields[key][payload.fields[key].kind] : null);

// id, lang, year. 2^53 + 1 is not a double: it checks that ids stay exact too.
const POINTS = [["1", "en", 2021], ["2", "en", 2019], ["3", "fr", 2022],
  ["4", "en", 2020], ["5", "de", 2023], ["9007199254740993", "en", 2024]];
const QUERY = [0.5, 0, 0, 0];
const EN_SINCE_2020 = { must: [
  { field: { key: "lang", match: { string_value: "en" } } },
  { field: { key: "year", range: { gte: { int_value: "2020" } } } },
] };

async function main() {
  const out = { ids: POINTS.map((p) => p[0]), query: QUERY };
  await call("CreateCollection", { config: { name: collection, dim: 4, metric: "METRIC_L2", index_type: "INDEX_TYPE_FLAT" } });

  const added = await call("Add", {
    collection,
    ids: packIds(out.ids),
    vectors: floatMatrix(POINTS.map((_, i) => [i + 1, 0.25 * i, -1, 2])),
    payloads: POINTS.map(([, lang, year], i) => ({ fields: {
      lang: { string_value: lang },
      year: { int_value: String(year) },
      big: { int_value: "9223372036854775807" },
      neg: { int_value: "-9223372036854775808" },
      price: { double_value: 9.5 + i },
      tags: { list_value: { values: [{ string_value: "a" }, { int_value: String(i) }] } },
      meta: { struct_value: { fields: { ok: { bool_value: true } } } },
      none: { null_value: true },
    } })),
  });
  out.added = added.added;

  const search = await call("Search", {
    collection, queries: floatMatrix([QUERY]), k: 10, filter: EN_SINCE_2020, with_payload: { enable: true },
  });
  out.search_ids = unpackIds(search.ids);
  out.search_payloads = search.payloads; // raw proto-loader objects, for an exact comparison
  out.search_big = search.payloads.map((p) => field(p, "big"));
  out.search_neg = search.payloads.map((p) => field(p, "neg"));

  out.count = (await call("Count", { collection, filter: EN_SINCE_2020 })).count;

  out.scroll_pages = [];
  for (let start = "0"; ;) {
    const page = await call("Scroll", { collection, filter: EN_SINCE_2020, limit: 2, start_id: start });
    out.scroll_pages.push(unpackIds(page.ids));
    if (page.done) break;
    start = page.next_start_id;
  }
  out.scroll_ids = out.scroll_pages.flat();

  out.updated = (await call("SetPayload", {
    collection, filter: EN_SINCE_2020, mode: "SET_PAYLOAD_MODE_MERGE", payload: { fields: { flag: { bool_value: true } } },
  })).updated;

  const getIds = ["9007199254740993", "2"];
  const got = await call("Get", { collection, ids: packIds(getIds), with_payload: { enable: true } });
  out.get = getIds.map((id, i) => ({ id, found: got.found[i], flag: field(got.payloads[i], "flag"), big: field(got.payloads[i], "big") }));

  const filterFr = { must: [{ field: { key: "lang", match: { string_value: "fr" } } }] };
  out.removed = (await call("Remove", { collection, filter: filterFr })).removed;
  out.final_count = (await call("Count", { collection })).count;

  out.strings = await stringIds(`${collection}_s`);
  console.log(JSON.stringify(out));
}

// A collection with string ids (id_type ID_TYPE_STRING): ids go in string_ids fields, a point may
// have no vector, and an Add may skip the ids already stored.
async function stringIds(name) {
  const out = {};
  const created = await call("CreateCollection", {
    config: { name, dim: 4, metric: "METRIC_L2", index_type: "INDEX_TYPE_FLAT", id_type: "ID_TYPE_STRING" },
  });
  out.id_type = created.config.id_type;
  const ids = ["3f2a9c1e-7b4d-4e8a-9c0f-1a2b3c4d5e6f", "doc/ü", "x"];
  out.added = (await call("Add", {
    collection: name, string_ids: ids, vectors: floatMatrix([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]]),
  })).added;
  out.payload_only = (await call("Add", {
    collection: name, string_ids: ["note"], payloads: [{ fields: { text: { string_value: "no vector yet" } } }],
  })).added;
  const skip = await call("Add", {
    collection: name, string_ids: ["x", "y"], vectors: floatMatrix([[0, 0, 0, 1], [0, 0, 0, 2]]),
    on_conflict: "ON_CONFLICT_SKIP",
  });
  out.skip = { added: skip.added, skipped: skip.skipped };
  const search = await call("Search", { collection: name, queries: floatMatrix([[0, 1, 0, 0]]), k: 6 });
  out.search_string_ids = search.string_ids;
  const got = await call("Get", { collection: name, string_ids: ["note", "doc/ü", "missing"], allow_missing: true });
  out.get_found = [...got.found];
  out.get_has_vector = [...got.has_vector];
  out.removed = (await call("Remove", { collection: name, string_ids: ["x", "missing"] })).removed;
  out.count = (await call("Count", { collection: name })).count;
  return out;
}

main()
  .catch((err) => {
    const code = err.code !== undefined ? `${grpc.status[err.code]} (${err.code})` : "no gRPC code";
    console.error(`${err.rpc || "interop.js"} failed: ${code}: ${err.details || err.stack || err}`);
    process.exitCode = 1;
  })
  .finally(() => client.close());
