// fauxqs on 127.0.0.1 only. Its own CLI (and startFauxqs) listen on every address,
// so the app is built here and bound to loopback. Prints the endpoint URL, then serves
// until stdin closes (the Python side holds it open), so it never outlives its owner.
import { createWriteStream } from "node:fs";
import { buildApp } from "fauxqs";

const port = Number.parseInt(process.argv[2] ?? "0", 10);
// Queue URLs read http://sqs.REGION.localhost:PORT/...; boto3's JSON protocol sends
// every call to the endpoint it was given, so that host is never resolved.
const app = buildApp({ logger: false });

// FAUXQS_TRACE names a file for benchmarks that need the server's own timings: one JSON
// line per delete or send, written once fauxqs has applied it (wall-clock milliseconds).
const trace = process.env.FAUXQS_TRACE ? createWriteStream(process.env.FAUXQS_TRACE) : null;
if (trace) {
  app.addHook("onResponse", async (request) => {
    const action = String(request.headers["x-amz-target"] ?? "").split(".").pop();
    if (!/^(DeleteMessage|SendMessage)(Batch)?$/.test(action)) return;
    const body = request.body ?? {};
    const at = performance.timeOrigin + performance.now();
    const entries = body.Entries?.length ?? 1;
    trace.write(`${JSON.stringify({ at, action, queue: body.QueueUrl, entries })}\n`);
  });
}
// FAUXQS_BENCH adds the benchmark's routes: call counts and an in-process producer.
if (process.env.FAUXQS_BENCH) (await import("./bench.mjs")).instrument(app);
const address = await app.listen({ port, host: "127.0.0.1" });
process.stdout.write(`${address}\n`);

const stop = async () => {
  await app.close();
  if (trace) await new Promise((done) => trace.end(done));
  process.exit(0);
};
process.stdin.on("end", stop);
process.stdin.on("close", stop);
process.stdin.resume();
process.on("SIGTERM", stop);
