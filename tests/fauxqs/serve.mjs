// fauxqs on 127.0.0.1 only. Its own CLI (and startFauxqs) listen on every address,
// so the app is built here and bound to loopback. Prints the endpoint URL, then serves
// until stdin closes (the Python side holds it open), so it never outlives its owner.
import { buildApp } from "fauxqs";

const port = Number.parseInt(process.argv[2] ?? "0", 10);
// Queue URLs read http://sqs.REGION.localhost:PORT/...; boto3's JSON protocol sends
// every call to the endpoint it was given, so that host is never resolved.
const app = buildApp({ logger: false });
const address = await app.listen({ port, host: "127.0.0.1" });
process.stdout.write(`${address}\n`);

const stop = async () => {
  await app.close();
  process.exit(0);
};
process.stdin.on("end", stop);
process.stdin.on("close", stop);
process.stdin.resume();
process.on("SIGTERM", stop);
