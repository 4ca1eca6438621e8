"""``[otlp] endpoint``: the peer pushes the figures of ``/metrics`` to an OpenTelemetry collector
over OTLP/HTTP. The collector here is a real HTTP server on loopback that decodes what it gets
with OpenTelemetry's own protobuf classes."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import trio
from test_pairing import new_home, running

from homeswarm.errors import InvalidConfig
from homeswarm.swarm._config import parse_settings
from homeswarm.swarm._home import load_identity

pb = pytest.importorskip("opentelemetry.proto.collector.metrics.v1.metrics_service_pb2")


class Collector(ThreadingHTTPServer):
    def __init__(self) -> None:
        self.requests: list[tuple[str, bytes]] = []
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                collector.requests.append((self.path, body))
                reply = pb.ExportMetricsServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)


@pytest.fixture
def collector():
    server = Collector()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


async def test_the_peer_pushes_its_figures_to_a_collector(tmp_path, collector):
    ident = new_home(tmp_path / "laptop")
    endpoint = f"http://127.0.0.1:{collector.server_port}/v1/metrics"
    config = ident.home / "swarm.toml"
    config.write_text(config.read_text() + f'\n[otlp]\nendpoint = "{endpoint}"\ninterval_s = 0.2\n')
    async with running(load_identity(ident.home)):
        with trio.fail_after(20):
            while len(collector.requests) < 2:  # noqa: ASYNC110 - another thread fills it
                await trio.sleep(0.05)
    path, body = collector.requests[-1]
    assert path == "/v1/metrics"
    request = pb.ExportMetricsServiceRequest.FromString(body)
    [resource] = request.resource_metrics
    attrs = {a.key: a.value.string_value for a in resource.resource.attributes}
    assert attrs["service.name"] == "swarm"
    assert attrs["service.instance.id"] == ident.device_id
    assert attrs["swarm.device.name"] == "laptop"
    metrics = {m.name: m for scope in resource.scope_metrics for m in scope.metrics}
    members = {
        p.attributes[0].value.string_value: p.as_double
        for p in metrics["swarm_members"].gauge.data_points
    }
    assert members["alive"] == 1
    assert members["dead"] == 0
    sent = metrics["swarm_transport_refused"]
    assert sent.sum.is_monotonic
    assert "swarm_placement_run_seconds" not in metrics  # histograms: /metrics only


@pytest.mark.parametrize("endpoint", ["127.0.0.1:4318", "ftp://x/y", "http://"])
def test_an_endpoint_must_be_a_url(endpoint):
    with pytest.raises(InvalidConfig, match="not an http"):
        parse_settings(f'[otlp]\nendpoint = "{endpoint}"\n')
