"""Keys that rotate under a running worker: a container-credentials endpoint served by
the test on 127.0.0.1 (AWS_CONTAINER_CREDENTIALS_FULL_URI, as ECS and EKS Pod Identity
hand keys out) changes the keys it gives; the worker signs with the new ones from its
next call, over awscrt as over boto3. moto checks every signature here (its IAM
enforcement, switched on for this test), so once the old keys are deleted a call
signed with them would be refused; the proxy in front of moto also records the access
key id each call was signed with."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import moto.settings
import pytest
from botocore.exceptions import ClientError

from tests.answers import AnsweringProxy
from tests.fleet import Rig, audit, provision, stop, valid_only, wait_until
from tests.local_http import LocalHTTPServer, QuietHandler
from tests.otlp import OTLPReceiver
from tests.sqs import depth, send_bodies
from tests.support import Env, nps_worker
from worker.faststream_sqs import SQSClient, SQSConnection

pytestmark = pytest.mark.integration

ALLOW_ALL = json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
)
HOT = ("ReceiveMessage", "DeleteMessageBatch")


class CredentialsEndpoint:
    """What ECS's credentials endpoint answers: keys that expire in 11 minutes, inside
    botocore's 15-minute refresh window, so every call asks again."""

    def __init__(self) -> None:
        self.keys = ("", "", "")
        self.asked = 0
        endpoint = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:
                endpoint.asked += 1
                expires = datetime.now(UTC) + timedelta(minutes=11)
                self.send_json(
                    {
                        "AccessKeyId": endpoint.keys[0],
                        "SecretAccessKey": endpoint.keys[1],
                        "Token": endpoint.keys[2],
                        "Expiration": expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    }
                )

        self._server = LocalHTTPServer(Handler)
        self.url = f"{self._server.url}/v2/credentials"

    def stop(self) -> None:
        self._server.close()


@pytest.fixture
def credentials_endpoint() -> Iterator[CredentialsEndpoint]:
    endpoint = CredentialsEndpoint()
    yield endpoint
    endpoint.stop()


def moto_client(service: str, endpoint: str, *keys: str) -> Any:
    """A client signing with `keys` (access key, secret, session token), else moto's
    default test keys."""
    key, secret, token = [*(keys or ("test", "test")), None][:3]
    return boto3.client(  # type: ignore[call-overload]
        service,
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        aws_session_token=token,
    )


def admin_keys(endpoint: str, name: str) -> tuple[str, str]:
    """A moto IAM user allowed everything: the test's own keys once signatures count."""
    iam = moto_client("iam", endpoint)
    iam.create_user(UserName=name)
    iam.put_user_policy(UserName=name, PolicyName="all", PolicyDocument=ALLOW_ALL)
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return key["AccessKeyId"], key["SecretAccessKey"]


def role_keys(endpoint: str, name: str) -> tuple[str, str, str]:
    """Temporary keys of a role allowed everything (what a container is handed)."""
    iam = moto_client("iam", endpoint)
    iam.create_role(RoleName=name, AssumeRolePolicyDocument=ALLOW_ALL)
    iam.put_role_policy(RoleName=name, PolicyName="all", PolicyDocument=ALLOW_ALL)
    arn = iam.get_role(RoleName=name)["Role"]["Arn"]
    keys = moto_client("sts", endpoint).assume_role(RoleArn=arn, RoleSessionName="worker")
    granted = keys["Credentials"]
    return granted["AccessKeyId"], granted["SecretAccessKey"], granted["SessionToken"]


def test_awscrt_signs_its_next_call_with_rotated_keys(
    moto_endpoint: str,
    credentials_endpoint: CredentialsEndpoint,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The quick version: one client, in this process, over awscrt alone."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", credentials_endpoint.url)
    suffix = f"quick-{time.monotonic_ns()}"
    queue_url = moto_client("sqs", moto_endpoint).create_queue(QueueName=suffix)["QueueUrl"]
    admin = admin_keys(moto_endpoint, f"admin-{suffix}")
    old = role_keys(moto_endpoint, f"old-{suffix}")
    new = role_keys(moto_endpoint, f"new-{suffix}")
    credentials_endpoint.keys = old
    proxy = AnsweringProxy(moto_endpoint, keep_host=True).start()

    async def receive(client: SQSClient) -> None:
        await client.receive(queue_url, max_messages=1, wait_seconds=0, visibility_timeout=0)

    async def rotate() -> None:
        client = SQSClient(
            SQSConnection(endpoint_url=proxy.endpoint, region_name="us-east-1", transport="crt")
        )
        try:
            await receive(client)
            credentials_endpoint.keys = new
            await receive(client)
            moto_client("iam", moto_endpoint, *admin).delete_role_policy(
                RoleName=f"old-{suffix}", PolicyName="all"
            )
            await receive(client)
        finally:
            client.close()

    moto.settings.INITIAL_NO_AUTH_ACTION_COUNT = 0  # from here on, signatures checked
    try:
        asyncio.run(rotate())
        with pytest.raises(ClientError) as refused:
            moto_client("sqs", moto_endpoint, *old).get_queue_url(QueueName=suffix)
    finally:
        moto.settings.INITIAL_NO_AUTH_ACTION_COUNT = float("inf")
        proxy.stop()
    assert proxy.signed == [("ReceiveMessage", key) for key in (old[0], new[0], new[0])]
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


@pytest.mark.soak  # a worker end to end, on each transport
@pytest.mark.parametrize("transport", ["crt", "boto3"])
def test_rotated_keys_sign_the_next_call_and_the_old_ones_are_refused(
    worker_env: Env,
    moto_endpoint: str,
    otlp: OTLPReceiver,
    credentials_endpoint: CredentialsEndpoint,
    transport: str,
) -> None:
    queue_url, dlq_url = provision(worker_env.values)
    suffix = f"{transport}-{time.monotonic_ns()}"
    admin = admin_keys(moto_endpoint, f"admin-{suffix}")
    old = role_keys(moto_endpoint, f"old-{suffix}")
    new = role_keys(moto_endpoint, f"new-{suffix}")
    credentials_endpoint.keys = old
    proxy = AnsweringProxy(moto_endpoint, keep_host=True).start()
    env = {k: v for k, v in worker_env.values.items() if not k.startswith("AWS_")} | {
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL_SQS": proxy.endpoint,
        "AWS_CONTAINER_CREDENTIALS_FULL_URI": credentials_endpoint.url,
        "SQS_TRANSPORT": transport,
    }
    ledger = valid_only(45, seed=26)
    batches = [ledger[:15], ledger[15:30], ledger[30:]]
    moto.settings.INITIAL_NO_AUTH_ACTION_COUNT = 0  # from here on, signatures checked
    try:
        sqs = moto_client("sqs", moto_endpoint, *admin)
        worker = nps_worker("run", env=env)
        try:
            send_bodies(sqs, queue_url, [m.body for m in batches[0]])
            wait_until(lambda: signed(proxy, old[0]) >= set(HOT), 60, "calls with the old keys")
            credentials_endpoint.keys = new
            send_bodies(sqs, queue_url, [m.body for m in batches[1]])
            wait_until(lambda: signed(proxy, new[0]) >= set(HOT), 60, "the new keys in use")
            # The old keys lose every permission: a call signed with them is refused.
            moto_client("iam", moto_endpoint, *admin).delete_role_policy(
                RoleName=f"old-{suffix}", PolicyName="all"
            )
            after_revocation = len(proxy.signed)
            send_bodies(sqs, queue_url, [m.body for m in batches[2]])
            wait_until(lambda: depth(sqs, queue_url) == (0, 0), 90, "the queue to drain")
        finally:
            code, _, stderr = stop(worker, 60)
        with pytest.raises(ClientError) as refused:
            moto_client("sqs", moto_endpoint, *old).get_queue_url(
                QueueName=queue_url.rsplit("/", 1)[1]
            )
        result = audit(Rig(env, sqs, queue_url, dlq_url, ledger), otlp)
    finally:
        moto.settings.INITIAL_NO_AUTH_ACTION_COUNT = float("inf")
        proxy.stop()
    assert code == 0, stderr
    # moto answers an IAM refusal to a JSON-protocol call in XML: botocore reads "403".
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    late = [operation for operation, key in proxy.signed[after_revocation:] if key == old[0]]
    assert not late, f"signed with revoked keys: {late}"
    assert (result.losses, result.duplicates, result.still_queued) == (0, 0, 0)
    assert "cannot receive" not in stderr, stderr
    assert "cannot delete" not in stderr, stderr
    assert credentials_endpoint.asked >= 3


def signed(proxy: AnsweringProxy, key: str) -> set[str]:
    """The operations the proxy saw signed with `key`."""
    return {operation for operation, signer in proxy.signed if signer == key}
