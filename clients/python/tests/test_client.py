"""The client against a real server. The Rust test `python_client::` starts one (with a
worker and webhook delivery, private targets allowed) and sets REWARDLAB_URL, REWARDLAB_TOKEN (a site admin's) and REWARDLAB_RUN_CONFIG (a
tiny model's settings); without them these tests are skipped."""

import json
import os
import queue
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from rewardlab import ApiError, Client, WebhookVerificationError, verify

pytestmark = pytest.mark.skipif(not os.environ.get("REWARDLAB_URL"), reason="needs a server: REWARDLAB_URL and REWARDLAB_TOKEN")


@pytest.fixture(scope="module")
def rl() -> Client:
    return Client()


def items(n: int, start: int = 0) -> list:
    return [
        {"id": f"q{i}", "prompt": f"Question {i}?", "responses": [{"model": "alpha", "text": f"kindly answer {i}"}, {"model": "beta", "text": f"no {i}"}]}
        for i in range(start, start + n)
    ]


def label_everything(rl: Client, slug: str) -> int:
    n = 0
    while (task := rl.next_task(slug)) is not None:
        kind_first = sorted(task.responses, key=lambda r: "kindly" not in r["text"])
        stored = rl.submit(task, ranking=[r["id"] for r in kind_first])
        assert stored["status"] == "stored" and stored["task_id"] == task.task_id
        n += 1
    return n


def test_a_lead_imports_labels_exports_into_datasets_and_trains(rl: Client, tmp_path: Path):
    slug = rl.create_project("py-client", "Python client", "pairwise", overlap=1)
    assert any(p["slug"] == slug and p["role"] == "lead" for p in rl.projects())

    report = rl.import_items(slug, items(12))
    assert report["items_added"] == 12
    jsonl = tmp_path / "more.jsonl"
    jsonl.write_text("".join(json.dumps(i) + "\n" for i in items(8, start=12)))
    assert rl.import_items(slug, jsonl)["items_added"] == 8
    assert rl.import_items(slug, items(2))["duplicates"] == 2

    assert label_everything(rl, slug) == 20
    assert rl.next_task(slug) is None
    assert rl.dashboard(slug)["judgements"] == 20

    export = rl.create_export(slug, "preferences", test_percent=20)
    assert set(export.parts) == {"train", "test"}
    ds = rl.to_dataset(export)
    assert ds["train"].num_rows + ds["test"].num_rows == 20
    assert all("kindly" in row["chosen"] and "kindly" not in row["rejected"] for row in ds["train"])
    path = rl.download_export(export, "train", tmp_path / "train.jsonl")
    assert len(path.read_text().splitlines()) == ds["train"].num_rows

    config = json.loads(os.environ["REWARDLAB_RUN_CONFIG"])
    run = rl.start_run(slug, "rm", config=config, input={"export_id": export.id})
    assert run.status in ("queued", "running")
    rows = list(rl.follow(run, poll=0.3, timeout=300))
    assert any(r.get("event") == "step" for r in rows), rows[:3]
    run = rl.run(run)
    assert run.status == "succeeded", run.raw
    files = rl.download_model(run, tmp_path / "model")
    assert [f.name for f in files] == ["model.safetensors", "config.json"] and all(f.stat().st_size > 0 for f in files)


def test_errors_carry_the_apis_code_and_message(rl: Client):
    with pytest.raises(ApiError) as e:
        rl.create_project("x", "Too short a slug", "pairwise")
    assert e.value.status == 400 and e.value.code == "invalid" and "slug" in e.value.message
    with pytest.raises(ApiError) as e:
        rl.dashboard("no-such-project")
    assert e.value.status == 404 and e.value.code == "not_found"
    with pytest.raises(ApiError) as e:
        Client(rl.url, "rl_not-a-token").projects()
    assert e.value.status == 401


def test_a_real_delivery_verifies_with_its_secret_and_not_after_a_rotation(rl: Client):
    slug = rl.create_project("py-hooks", "Python webhooks", "pairwise", overlap=1)
    got: "queue.Queue[tuple]" = queue.Queue()

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            got.put((dict(self.headers), body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        hook = rl.create_webhook(slug, f"http://127.0.0.1:{server.server_port}/hook", ["items.imported"], "pytest")
        assert hook["secret"].startswith("whsec_") and hook["events"] == ["items.imported"]
        assert [w["id"] for w in rl.webhooks(slug)] == [hook["id"]]
        rl.import_items(slug, items(3))
        headers, body = got.get(timeout=30)
        event = verify(hook["secret"], headers, body)
        assert event["type"] == "items.imported" and event["data"] == {"project": slug, "count": 3}
        with pytest.raises(WebhookVerificationError):
            verify(rl.rotate_webhook_secret(slug, hook["id"]), headers, body)
        deadline = time.time() + 30
        while rl.webhook_deliveries(slug, hook["id"])[0]["status"] != "delivered":
            assert time.time() < deadline, rl.webhook_deliveries(slug, hook["id"])
            time.sleep(0.1)
        delivery = rl.webhook_deliveries(slug, hook["id"])[0]
        assert delivery["last_status"] == 204 and delivery["attempts"] == 1
        with pytest.raises(ApiError) as e:
            rl.create_webhook(slug, "ftp://example.org/", ["items.imported"])
        assert e.value.status == 400 and e.value.message.startswith("url:")
        rl.delete_webhook(slug, hook["id"])
        assert rl.webhooks(slug) == []
    finally:
        server.shutdown()


def test_a_token_makes_another_that_works_until_revoked(rl: Client):
    other = Client(rl.url, rl.create_token("pytest notebook"))
    assert other.projects() == rl.projects()
    token_id = next(t["id"] for t in other.tokens() if t["name"] == "pytest notebook")
    rl.revoke_token(token_id)
    with pytest.raises(ApiError) as e:
        other.projects()
    assert e.value.status == 401
