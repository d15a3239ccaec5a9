"""asyncfast on amgi-aiobotocore, as their READMEs show: a pydantic-typed channel handler
served by `amgi_aiobotocore.sqs.run`. (Without `from __future__ import annotations`:
asyncfast resolves the handler's type hints when the module is imported.)"""

import os
from collections import Counter, defaultdict

from amgi_aiobotocore.sqs import run
from asyncfast import AsyncFast
from pydantic import BaseModel

QUEUE = os.environ["BENCH_QUEUE"]

app = AsyncFast()
count: Counter[str] = Counter()
total: defaultdict[str, float] = defaultdict(float)


class Event(BaseModel):
    type: str
    value: float
    occurred_at: str


@app.channel(QUEUE)
async def on_event(event: Event) -> None:
    count[event.type] += 1
    total[event.type] += event.value


if __name__ == "__main__":
    run(
        app,
        QUEUE,
        region_name="us-east-1",
        endpoint_url=os.environ["BENCH_ENDPOINT"],
        aws_access_key_id="bench",
        aws_secret_access_key="bench",
    )
