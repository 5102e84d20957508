"""The HTTP client: one method per API operation (see ``/api/v1/docs`` on a server).

Only the standard library is needed; ``datasets`` is imported when an export is loaded into a
``datasets.Dataset``.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Union

JSON = Dict[str, Any]
Items = Union[str, "os.PathLike[str]", Iterable[Mapping[str, Any]]]

FINISHED = ("succeeded", "failed", "cancelled")


class ApiError(Exception):
    """An error answer of the API: its HTTP status, ``code`` and ``message``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


@dataclass
class Task:
    """A task leased to the caller until ``expires_at``; responses are ``[{"id", "text"}]``."""

    task_id: str
    prompt: Any
    responses: List[JSON]
    expires_at: str

    @property
    def response_ids(self) -> List[str]:
        """The responses' ids in display order."""
        return [r["id"] for r in self.responses]


@dataclass
class Export:
    """A snapshot of a project's judgements; ``files`` lists its parts (``train``, ``test``, …)."""

    id: str
    format: str
    files: List[JSON]
    created_at: str
    raw: JSON = field(repr=False)

    @property
    def parts(self) -> List[str]:
        return [f["part"] for f in self.files]


@dataclass
class Run:
    """A training run; ``metrics`` holds the last value of each metric reported."""

    id: str
    kind: str
    status: str
    raw: JSON = field(repr=False)

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    @property
    def metrics(self) -> JSON:
        return dict(self.raw.get("metrics") or {})


class Client:
    """A client of one rewardlab server, authenticated with an API token (``rl_…``).

    ``url`` and ``token`` default to the ``REWARDLAB_URL`` and ``REWARDLAB_TOKEN`` environment
    variables. Tokens are made on the account page, with ``rewardlab token create``, or from
    another token with :meth:`create_token`.
    """

    def __init__(self, url: Optional[str] = None, token: Optional[str] = None, timeout: float = 120.0) -> None:
        url = url or os.environ.get("REWARDLAB_URL")
        token = token or os.environ.get("REWARDLAB_TOKEN")
        if not url:
            raise ValueError("no server URL: pass url= or set REWARDLAB_URL")
        if not token:
            raise ValueError("no API token: pass token= or set REWARDLAB_TOKEN")
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout

    # -- transport -------------------------------------------------------------------------

    def _request(self, method: str, path: str, body: Optional[bytes] = None, content_type: str = "application/json",
                 query: Optional[Mapping[str, str]] = None) -> "urllib.response.addinfourl":  # type: ignore[name-defined]
        url = self.url + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        req = urllib.request.Request(url, data=body, method=method)
        req.add_header("Authorization", f"Bearer {self.token}")
        req.add_header("Accept", "application/json")
        if body is not None:
            req.add_header("Content-Type", content_type)
        try:
            return urllib.request.urlopen(req, timeout=self.timeout)
        except urllib.error.HTTPError as e:
            raise _api_error(e) from None

    def _json(self, method: str, path: str, payload: Optional[Any] = None, query: Optional[Mapping[str, str]] = None) -> Any:
        body = None if payload is None else json.dumps(payload).encode()
        with self._request(method, path, body, query=query) as res:
            data = res.read()
            return json.loads(data) if data else None

    # -- projects --------------------------------------------------------------------------

    def projects(self) -> List[JSON]:
        """The caller's projects: ``[{"slug", "name", "kind", "overlap", "role"}]``."""
        return list(self._json("GET", "/api/v1/projects")["projects"])

    def create_project(self, slug: str, name: str, kind: str, *, overlap: Optional[int] = None, flags: Optional[Sequence[str]] = None,
                       allow_ties: Optional[bool] = None, rating: Optional[bool] = None, guidelines: Optional[str] = None) -> str:
        """Creates a project (``kind``: ranking, pairwise or demonstration) led by the caller; returns its slug."""
        body: JSON = {"slug": slug, "name": name, "kind": kind}
        extra = {"overlap": overlap, "flags": list(flags) if flags is not None else None, "allow_ties": allow_ties, "rating": rating, "guidelines": guidelines}
        body.update({k: v for k, v in extra.items() if v is not None})
        return str(self._json("POST", "/api/v1/projects", body)["slug"])

    def add_member(self, slug: str, email: str, role: str = "labeller") -> None:
        """Adds an existing account to the project as ``lead`` or ``labeller``."""
        self._json("POST", f"/api/v1/projects/{_seg(slug)}/members", {"email": email, "role": role})

    def dashboard(self, slug: str) -> JSON:
        """The lead's figures: items, judgements, labellers, agreement, models."""
        return dict(self._json("GET", f"/api/v1/projects/{_seg(slug)}/dashboard"))

    def progress(self, slug: str) -> JSON:
        """The caller's ``{"done_today", "left"}`` in the project."""
        return dict(self._json("GET", f"/api/v1/projects/{_seg(slug)}/progress"))

    # -- import ----------------------------------------------------------------------------

    def import_items(self, slug: str, items: Items) -> JSON:
        """Imports items from a JSON Lines file (a path) or from dicts, e.g.
        ``{"id": "q1", "prompt": "…", "responses": [{"text": "…", "model": "a"}, …]}``.
        Returns the report: ``lines``, ``items_added``, ``duplicates``, …"""
        if isinstance(items, (str, os.PathLike)):
            with open(items, "rb") as f:
                return self._import_body(slug, f)
        body = "".join(json.dumps(dict(item), ensure_ascii=False) + "\n" for item in items).encode()
        return self._import_body(slug, body)

    def _import_body(self, slug: str, body: Union[bytes, IO[bytes]]) -> JSON:
        data = body if isinstance(body, bytes) else body.read()
        with self._request("POST", f"/api/v1/projects/{_seg(slug)}/items", data, "application/x-ndjson") as res:
            return dict(json.loads(res.read()))

    # -- labelling -------------------------------------------------------------------------

    def next_task(self, slug: str) -> Optional[Task]:
        """Leases the caller's next task, or ``None`` when none is left for them."""
        data = self._json("POST", f"/api/v1/projects/{_seg(slug)}/tasks/next")
        if data is None:
            return None
        return Task(task_id=data["task_id"], prompt=data["prompt"], responses=list(data["responses"]), expires_at=data["expires_at"])

    def submit(self, task: Union[Task, str], *, ranking: Optional[Sequence[Union[str, Sequence[str]]]] = None, strength: Optional[int] = None,
               both_bad: bool = False, demonstration: Optional[str] = None, flags: Optional[Mapping[str, Sequence[str]]] = None,
               rating: Optional[int] = None, comment: str = "", idempotency_key: Optional[str] = None) -> JSON:
        """Submits a judgement. ``ranking`` orders the response ids best first; an inner list is a
        tie. Retrying with the same ``idempotency_key`` (one is made when not given) is safe."""
        task_id = task.task_id if isinstance(task, Task) else task
        body: JSON = {"idempotency_key": idempotency_key or str(uuid.uuid4()), "both_bad": both_bad, "comment": comment}
        if ranking is not None:
            body["ranking"] = [[r] if isinstance(r, str) else list(r) for r in ranking]
        extra = {"strength": strength, "demonstration": demonstration, "rating": rating, "flags": {k: list(v) for k, v in flags.items()} if flags else None}
        body.update({k: v for k, v in extra.items() if v is not None})
        return dict(self._json("POST", f"/api/v1/tasks/{_seg(task_id)}/judgement", body))

    def skip(self, task: Union[Task, str], reason: str) -> JSON:
        """Skips a leased task; it goes to another labeller."""
        task_id = task.task_id if isinstance(task, Task) else task
        return dict(self._json("POST", f"/api/v1/tasks/{_seg(task_id)}/skip", {"reason": reason}))

    # -- exports ---------------------------------------------------------------------------

    def create_export(self, slug: str, format: str = "preferences", **options: Any) -> Export:
        """Takes an export (``comparisons``, ``preferences``, ``sft`` or ``prompts``); options:
        ``margin``, ``include_ties``, ``include_both_bad``, ``test_percent``."""
        return _export(self._json("POST", f"/api/v1/projects/{_seg(slug)}/exports", {"format": format, **options}))

    def exports(self, slug: str) -> List[Export]:
        """The project's exports, newest first."""
        return [_export(e) for e in self._json("GET", f"/api/v1/projects/{_seg(slug)}/exports")["exports"]]

    def download_export(self, export: Union[Export, str], part: Optional[str] = None, dest: Optional[Union[str, "os.PathLike[str]"]] = None) -> Path:
        """Writes one part of an export (JSON Lines) to ``dest`` (default: a file named as the
        server names it, in the current directory) and returns the path. The file's SHA-256 is
        checked against the server's."""
        import hashlib

        export_id = export.id if isinstance(export, Export) else export
        query = {"part": part} if part else None
        with self._request("GET", f"/api/v1/exports/{_seg(export_id)}/download", query=query) as res:
            name = _filename(res.headers.get("Content-Disposition", "")) or f"{export_id}-{part or 'data'}.jsonl"
            path = Path(dest) if dest is not None else Path(name)
            digest = hashlib.sha256()
            with open(path, "wb") as f:
                for chunk in iter(lambda: res.read(1 << 16), b""):
                    digest.update(chunk)
                    f.write(chunk)
            expected = res.headers.get("X-Rewardlab-Sha256")
        if expected and expected != digest.hexdigest():
            raise ApiError(200, "checksum", f"the download's SHA-256 {digest.hexdigest()} is not the server's {expected}")
        return path

    def export_rows(self, export: Union[Export, str], part: Optional[str] = None) -> Iterator[JSON]:
        """The rows of one part of an export, read as they arrive."""
        export_id = export.id if isinstance(export, Export) else export
        query = {"part": part} if part else None
        with self._request("GET", f"/api/v1/exports/{_seg(export_id)}/download", query=query) as res:
            for line in res:
                if line.strip():
                    yield json.loads(line)

    def to_dataset(self, export: Export, part: Optional[str] = None) -> Any:
        """Loads an export into ``datasets``: one part as a ``Dataset``, or (without ``part``)
        every part as a ``DatasetDict`` keyed by part name. Needs ``pip install rewardlab[datasets]``."""
        try:
            import datasets
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ImportError("to_dataset needs the datasets package: pip install 'rewardlab[datasets]'") from e
        features = _features(datasets, export)

        def load(p: str) -> Any:
            rows = list(self.export_rows(export, p))
            if rows or features is None:
                return datasets.Dataset.from_list(rows, features=features)
            return datasets.Dataset.from_dict({k: [] for k in features}, features=features)

        if part is not None:
            return load(part)
        return datasets.DatasetDict({p: load(p) for p in export.parts})

    # -- runs ------------------------------------------------------------------------------

    def start_run(self, slug: str, kind: str, config: Optional[Mapping[str, Any]] = None, input: Optional[Mapping[str, Any]] = None) -> Run:
        """Queues a training run (``rm``, ``sft``, ``ppo``, ``dpo``, ``generate``) and returns it."""
        body = {"kind": kind, "config": dict(config or {}), "input": dict(input or {})}
        created = self._json("POST", f"/api/v1/projects/{_seg(slug)}/runs", body)
        return self.run(created["id"])

    def run(self, run: Union[Run, str]) -> Run:
        """A run with the last value of each of its metrics."""
        data = self._json("GET", f"/api/v1/runs/{_seg(_run_id(run))}")
        return Run(id=data["id"], kind=data["kind"], status=data["status"], raw=data)

    def runs(self, slug: str) -> List[Run]:
        """The project's runs, newest first."""
        return [Run(id=r["id"], kind=r["kind"], status=r["status"], raw=r) for r in self._json("GET", f"/api/v1/projects/{_seg(slug)}/runs")["runs"]]

    def run_metrics(self, run: Union[Run, str]) -> List[JSON]:
        """Every metrics row the run's trainer reported, in order."""
        return list(self._json("GET", f"/api/v1/runs/{_seg(_run_id(run))}/metrics")["metrics"])

    def follow(self, run: Union[Run, str], poll: float = 2.0, timeout: Optional[float] = None) -> Iterator[JSON]:
        """Yields the run's metrics rows as they come, until the run finishes (or ``timeout`` seconds pass)."""
        seen = 0
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            data = self._json("GET", f"/api/v1/runs/{_seg(_run_id(run))}/metrics")
            rows = data["metrics"]
            yield from rows[seen:]
            seen = len(rows)
            if data["status"] in FINISHED:
                return
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"run {_run_id(run)} is still {data['status']} after {timeout} s")
            time.sleep(poll)

    def wait(self, run: Union[Run, str], poll: float = 2.0, timeout: Optional[float] = None) -> Run:
        """Waits for the run to finish and returns it."""
        for _ in self.follow(run, poll, timeout):
            pass
        return self.run(run)

    def cancel_run(self, run: Union[Run, str]) -> int:
        """Cancels a queued or running run and those chained after it; returns how many."""
        return int(self._json("POST", f"/api/v1/runs/{_seg(_run_id(run))}/cancel")["cancelled"])

    def download_model(self, run: Union[Run, str], dest: Union[str, "os.PathLike[str]"], files: Sequence[str] = ("model.safetensors", "config.json")) -> List[Path]:
        """Downloads a finished run's model files into the directory ``dest``; returns their paths."""
        r = run if isinstance(run, Run) else self.run(run)
        slug = r.raw["slug"]
        out = Path(dest)
        out.mkdir(parents=True, exist_ok=True)
        paths = []
        for name in files:
            with self._request("GET", f"/projects/{_seg(slug)}/runs/{_seg(r.id)}/files/{_seg(name)}") as res:
                path = out / name
                with open(path, "wb") as f:
                    for chunk in iter(lambda: res.read(1 << 16), b""):
                        f.write(chunk)
            paths.append(path)
        return paths

    # -- tokens ----------------------------------------------------------------------------

    def create_token(self, name: str) -> str:
        """Makes another API token for the caller (e.g. one per notebook) and returns it; it is
        shown only this once."""
        return str(self._json("POST", "/api/v1/tokens", {"name": name})["token"])

    def tokens(self) -> List[JSON]:
        """The caller's live tokens: ``[{"id", "name", "created_at", "last_used_at"}]`` (never the tokens)."""
        return list(self._json("GET", "/api/v1/tokens")["tokens"])

    def revoke_token(self, token_id: str) -> None:
        """Revokes one of the caller's tokens."""
        self._json("DELETE", f"/api/v1/tokens/{_seg(token_id)}")

    # -- webhooks --------------------------------------------------------------------------

    def create_webhook(self, slug: str, url: str, events: Sequence[str], description: str = "") -> JSON:
        """Registers an endpoint for ``events`` (``items.imported``, ``judgements.stored``,
        ``item.completed``, ``export.created``, ``run.started``, ``run.succeeded``, ``run.failed``,
        ``schedule.fired``, ``labeller.paused``, ``agreement.below_threshold``). The answer's
        ``secret`` (``whsec_…``) is shown only this once: keep it for :func:`rewardlab.verify`."""
        return dict(self._json("POST", f"/api/v1/projects/{_seg(slug)}/webhooks", {"url": url, "events": list(events), "description": description}))

    def webhooks(self, slug: str) -> List[JSON]:
        """The project's endpoints, with their pending and failed delivery counts."""
        return list(self._json("GET", f"/api/v1/projects/{_seg(slug)}/webhooks")["webhooks"])

    def webhook_deliveries(self, slug: str, webhook_id: str) -> List[JSON]:
        """An endpoint's newest deliveries: ``type``, ``status``, ``attempts``, ``last_status``,
        ``last_latency_ms``, ``last_error``, ``next_attempt_at``."""
        return list(self._json("GET", f"/api/v1/projects/{_seg(slug)}/webhooks/{_seg(webhook_id)}")["deliveries"])

    def test_webhook(self, slug: str, webhook_id: str) -> None:
        """Queues a ``webhook.test`` event for this endpoint alone."""
        self._json("POST", f"/api/v1/projects/{_seg(slug)}/webhooks/{_seg(webhook_id)}/test")

    def redeliver_webhook(self, slug: str, webhook_id: str, delivery_id: str) -> None:
        """Sends a delivery again from its first attempt (with the same ``webhook-id``)."""
        self._json("POST", f"/api/v1/projects/{_seg(slug)}/webhooks/{_seg(webhook_id)}/deliveries/{_seg(delivery_id)}/redeliver")

    def rotate_webhook_secret(self, slug: str, webhook_id: str) -> str:
        """A new secret for the endpoint (the old one stops signing at once); shown only now."""
        return str(self._json("POST", f"/api/v1/projects/{_seg(slug)}/webhooks/{_seg(webhook_id)}/rotate")["secret"])

    def delete_webhook(self, slug: str, webhook_id: str) -> None:
        """Removes the endpoint and its deliveries."""
        self._json("DELETE", f"/api/v1/projects/{_seg(slug)}/webhooks/{_seg(webhook_id)}")

    def set_agreement_alert(self, slug: str, below: Optional[float]) -> None:
        """Sends ``agreement.below_threshold`` when the project's agreement (Krippendorff's
        alpha) falls below ``below``; ``None`` turns the alert off."""
        self._json("POST", f"/api/v1/projects/{_seg(slug)}/webhooks/settings", {"agreement_below": below})


def _seg(text: str) -> str:
    """One path segment, escaped."""
    return urllib.parse.quote(str(text), safe="")


def _run_id(run: Union[Run, str]) -> str:
    return run.id if isinstance(run, Run) else str(run)


def _export(data: JSON) -> Export:
    return Export(id=data["id"], format=data["format"], files=list(data["files"]), created_at=data["created_at"], raw=data)


def _filename(disposition: str) -> Optional[str]:
    for piece in disposition.split(";"):
        key, _, value = piece.strip().partition("=")
        if key == "filename" and value:
            return Path(value.strip('"')).name
    return None


def _api_error(e: urllib.error.HTTPError) -> ApiError:
    body = e.read()
    try:
        err = json.loads(body)["error"]
        return ApiError(e.code, str(err["code"]), str(err["message"]))
    except (ValueError, KeyError, TypeError):
        return ApiError(e.code, "http", body.decode("utf-8", "replace")[:500] or str(e.reason))


def _features(datasets: Any, export: Export) -> Any:
    """The export's declared columns as ``datasets.Features``, when the server gave them."""
    declared = export.raw.get("features")
    if not declared:
        return None
    try:
        return datasets.Features.from_dict(declared)
    except Exception:  # an older datasets that cannot read the declaration: let it infer
        return None
