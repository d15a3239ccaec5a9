// Benchmark routes for serve.mjs (FAUXQS_BENCH=1), so that a benchmark measures every
// consumer the same way from the server's side, and its producer costs the consumer no
// CPU of its own:
//   GET  /_bench/stats  {calls: {Action: n}, deleted: n}: every SQS call but the
//        producer's, and the messages deletes removed (a batch's Successful entries);
//   POST /_bench/keep   {queue_url, backlog, bodies}: from now on keep `backlog`
//        messages visible in that queue (and stop keeping any other), sending `bodies`
//        in turn, inside this process; answers once the first fill is in;
//   GET  /_bench/keep   {sent, lowest}: messages sent, and the fewest visible since
//        the first fill (above 0: the consumer, not the producer, set the pace).
const TARGET = "x-amz-target";
const PRODUCER = { "x-bench-producer": "1", "content-type": "application/x-amz-json-1.0" };

export function instrument(app) {
  const calls = {};
  let deleted = 0;
  let keeper = null;

  app.addHook("onSend", async (request, reply, payload) => {
    const action = String(request.headers[TARGET] ?? "").split(".").pop();
    if (!action || request.headers["x-bench-producer"]) return payload;
    calls[action] = (calls[action] ?? 0) + 1;
    if (reply.statusCode === 200 && action === "DeleteMessage") deleted += 1;
    if (reply.statusCode === 200 && action === "DeleteMessageBatch") {
      deleted += JSON.parse(payload).Successful?.length ?? 0;
    }
    return payload;
  });

  const sqs = async (action, body) => {
    const reply = await app.inject({
      method: "POST",
      url: "/",
      headers: { ...PRODUCER, [TARGET]: `AmazonSQS.${action}` },
      payload: JSON.stringify(body),
    });
    if (reply.statusCode !== 200) throw new Error(`${action}: ${reply.body}`);
    return reply.json();
  };

  const visible = async (url) => {
    const names = ["ApproximateNumberOfMessages"];
    const reply = await sqs("GetQueueAttributes", { QueueUrl: url, AttributeNames: names });
    return Number(reply.Attributes.ApproximateNumberOfMessages);
  };

  const fill = async (keep) => {
    const missing = keep.backlog - (await visible(keep.url));
    for (let batch = 0; batch < Math.floor(missing / 10); batch += 1) {
      const Entries = Array.from({ length: 10 }, (_, i) => ({
        Id: String(i),
        MessageBody: keep.bodies[(keep.sent + i) % keep.bodies.length],
      }));
      await sqs("SendMessageBatch", { QueueUrl: keep.url, Entries });
      keep.sent += 10;
    }
  };

  app.get("/_bench/stats", async () => ({ calls, deleted }));
  app.get("/_bench/keep", async () => ({ sent: keeper?.sent ?? 0, lowest: keeper?.lowest }));
  app.post("/_bench/keep", async (request) => {
    if (keeper) clearInterval(keeper.timer);
    const { queue_url: url, backlog, bodies } = JSON.parse(request.body);
    const keep = { url, backlog, bodies, sent: 0, lowest: null, busy: false };
    await fill(keep);
    keep.timer = setInterval(async () => {
      if (keep.busy) return;
      keep.busy = true;
      try {
        const now = await visible(url);
        keep.lowest = keep.lowest === null ? now : Math.min(keep.lowest, now);
        await fill(keep);
      } finally {
        keep.busy = false;
      }
    }, 10);
    keeper = keep;
    return { sent: keep.sent };
  });
  app.addHook("preClose", async () => {
    if (keeper) clearInterval(keeper.timer);
  });
}
