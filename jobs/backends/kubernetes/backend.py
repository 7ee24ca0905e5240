"""The Kubernetes backend: portal jobs as batch/v1 Jobs through the official client, which
is imported lazily here and nowhere else (see the package docstring for the options)."""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import logging
import os
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, BinaryIO

from jobs.backends import files
from jobs.backends.base import (
    UNKNOWN,
    AccountSpec,
    AccountState,
    BackendError,
    BackendUnavailable,
    ComputeBackend,
    DirectRecord,
    JobRef,
    JobSpec,
    JobStatus,
    LogChunk,
    ResultFile,
    UsageRecord,
)
from jobs.backends.kubernetes import options as option_checks
from jobs.backends.kubernetes.accounts import (
    DIRECT_OVERLAP_SECONDS,
    QUOTA_NAME,
    direct_record,
    namespace_manifest,
    project_namespace,
    quota_manifest,
    same_hard,
    wanted_quota,
)
from jobs.backends.kubernetes.objects import (
    CONTAINER,
    INDEX_LABEL,
    JOB_NAME_LABEL,
    MANAGED_BY_LABEL,
    MANAGED_SELECTOR,
    MANAGER,
    SCRIPT_KEY,
    SELECTOR_CHUNK,
    SESSION_LABEL,
    SESSION_PORT_NAME,
    SESSION_TOKEN_KEY,
    SNAPSHOT_SECONDS,
    UUID_LABEL,
    backend_id_of,
    build_job_manifest,
    build_service_manifest,
    build_session_secret,
    job_name,
    needs_exit_code,
    parse_stream,
    pod_exit_info,
    script_configmap_name,
    service_host,
    service_name,
    session_port,
    session_secret_name,
    split_backend_id,
    status_from_job,
    usage_from_job,
)
from jobs.backends.rules import is_positive_int

logger = logging.getLogger(__name__)


class KubernetesBackend(ComputeBackend):
    """Portal jobs as batch/v1 Jobs, one namespace per project."""

    def __init__(self, *, name: str, options: Mapping[str, Any]) -> None:
        super().__init__(name=name, options=options)
        self._lock = threading.Lock()
        self._api_client: Any = None
        self._namespaces_ready: set[str] = set()
        self._snapshot: tuple[float, datetime, dict[str, dict[str, Any]]] | None = None
        self._token_cache: tuple[float, str] | None = None
        # A fixed namespace (a namespaced token) is shared by every project: no accounts there.
        self.manages_accounts = not self.options.get("namespace")

    # -- configuration ------------------------------------------------------------------

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> list[str]:
        """Problems with a Kubernetes cluster's options, as sentences (empty when valid)."""
        return option_checks.check_options(options)

    def validate_spec(self, spec: JobSpec) -> list[tuple[str, str]]:
        """(field, message) for everything in `spec` this cluster would refuse: call it before
        holding anything, so bad input is a 400 naming the field and nothing reaches Kubernetes."""
        return option_checks.validate_spec(spec, self.options, self.name)

    # -- the client -----------------------------------------------------------------------

    def _client(self) -> Any:
        with self._lock:
            if self._api_client is None:
                self._api_client = self._build_client()
            return self._api_client

    def _build_client(self) -> Any:
        from kubernetes import client, config
        from urllib3.util.retry import Retry

        opts = self.options
        configuration: Any = client.Configuration()
        try:
            if opts.get("in_cluster"):
                config.load_incluster_config(client_configuration=configuration)
            elif opts.get("kubeconfig"):
                config.load_kube_config(
                    config_file=opts["kubeconfig"],
                    context=opts.get("context"),
                    client_configuration=configuration,
                )
            else:
                configuration.host = str(opts["host"]).rstrip("/")
                configuration.api_key_prefix = {"authorization": "Bearer"}
                # The hook fills the key per request; the entry must exist for it to be asked.
                configuration.api_key = {"authorization": ""}
                configuration.refresh_api_key_hook = self._refresh_token
        except config.ConfigException as exc:
            raise BackendError(
                f"Cluster {self.name}: cannot load Kubernetes config: {exc}"
            ) from exc
        if opts.get("ca_file"):
            configuration.ssl_ca_cert = opts["ca_file"]
        if opts.get("verify_ssl") is False:
            configuration.verify_ssl = False
        # Connection failures are retried briefly; the sync/forward tasks retry the rest.
        configuration.retries = Retry(
            total=2, connect=2, read=0, status=0, redirect=0, backoff_factor=0.1
        )
        api_client = client.ApiClient(configuration)
        api_client.user_agent = "gpu-commons"
        return api_client

    def _refresh_token(self, configuration: Any) -> None:
        """Read the bearer token on every request: rotated tokens are picked up at once."""
        configuration.api_key = {"authorization": self._token()}

    def _token(self) -> str:
        if env_name := self.options.get("token_env"):
            token = os.environ.get(env_name, "").strip()
            if not token:
                raise BackendUnavailable(
                    f"Cluster {self.name}: environment variable {env_name} is empty."
                )
            return token
        path = Path(self.options["token_file"])
        try:
            mtime = path.stat().st_mtime
            if self._token_cache is None or self._token_cache[0] != mtime:
                self._token_cache = (mtime, path.read_text().strip())
        except OSError as exc:
            raise BackendUnavailable(f"Cluster {self.name}: cannot read token file: {exc}") from exc
        return self._token_cache[1]

    def _batch(self) -> Any:
        from kubernetes import client

        return client.BatchV1Api(self._client())

    def _core(self) -> Any:
        from kubernetes import client

        return client.CoreV1Api(self._client())

    @property
    def _timeout(self) -> tuple[float, float]:
        return (
            float(self.options.get("connect_timeout", 5)),
            float(self.options.get("read_timeout", 30)),
        )

    @contextlib.contextmanager
    def _calling(self, action: str) -> Iterator[None]:
        """Turn client failures into BackendUnavailable (transient) or BackendError."""
        import urllib3
        from kubernetes.client.exceptions import ApiException

        try:
            yield
        except ApiException as exc:
            status = exc.status or 0
            message = _status_message(exc)
            # 401 is an expired or rotated token, not the job's fault: retry rather than reject.
            if status in (0, 401, 429) or status >= 500:
                raise BackendUnavailable(
                    f"Kubernetes API of {self.name} failed to {action}: {message}"
                ) from exc
            raise BackendError(f"Kubernetes refused to {action}: {message}") from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise BackendUnavailable(
                f"Kubernetes API of {self.name} unreachable ({action}): {exc}"
            ) from exc
        except json.JSONDecodeError as exc:
            raise BackendUnavailable(
                f"Kubernetes API of {self.name} answered garbage ({action}): {exc}"
            ) from exc

    def _json(self, response: Any) -> tuple[dict[str, Any], datetime]:
        """Body and server time (the Date header) of a raw response."""
        body = json.loads(response.data or b"{}")
        return body, _server_time(response.headers.get("Date"))

    def _send(
        self, call: Callable[..., Any], *args: Any, allow: Collection[int] = (), **kwargs: Any
    ) -> Any | None:
        """One raw API call with the cluster's timeouts (inside _calling); None when Kubernetes
        answers a status in `allow` (409: an earlier attempt made it, 404: already gone)."""
        from kubernetes.client.exceptions import ApiException

        try:
            return call(*args, _preload_content=False, _request_timeout=self._timeout, **kwargs)
        except ApiException as exc:
            if exc.status in allow:
                return None
            raise

    def _namespace(self, project: str) -> str:
        return project_namespace(self.options, project)

    # -- submit ---------------------------------------------------------------------------

    def submit(self, spec: JobSpec) -> str:
        """Create the Job (and the script's ConfigMap); 409 means it is already there."""
        errors = self.validate_spec(spec)
        if errors:
            raise BackendError("; ".join(f"{field}: {message}" for field, message in errors))
        namespace = self._namespace(spec.project)
        self._ensure_namespace(namespace, spec.project)
        manifest = build_job_manifest(spec, self.options, namespace)
        name = manifest["metadata"]["name"]
        port = session_port(spec)
        if spec.script:
            # Before the Job: its pod must find the script even if our answer gets lost and the
            # retry finds the Job instead of submitting it again.
            self._create_script(namespace, spec)
        if port is not None:  # the app's secret too, for the same reason
            self._create_session_secret(namespace, spec)
        created = self._create_job(namespace, manifest)
        if created is None and not self.options.get("namespace"):
            # The namespace vanished since this process made it: make it again, once.
            self._namespaces_ready.discard(namespace)
            self._ensure_namespace(namespace, spec.project)
            if spec.script:
                self._create_script(namespace, spec)
            if port is not None:
                self._create_session_secret(namespace, spec)
            created = self._create_job(namespace, manifest)
        if created is None:
            raise BackendError(f"Namespace {namespace} does not exist on cluster {self.name}.")
        if created.get("kind") != "Job":  # 409: an earlier attempt created it
            created = self._existing_job(namespace, name, spec.uuid)
        if spec.script:
            self._adopt_script(namespace, spec, created)
        if port is not None:
            self._create_service(namespace, spec, port, created)
        return f"{namespace}/{name}"

    # -- interactive sessions -------------------------------------------------------------

    def _create_session_secret(self, namespace: str, spec: JobSpec) -> None:
        """The app's secret, made here (never in the Job, the script or the portal's DB until
        the proxy asks); a retry keeps the first one (409)."""
        from kubernetes import client

        body = client.V1Secret.from_dict(
            build_session_secret(spec, namespace, secrets.token_hex(32))
        )
        with self._calling("store the session's secret"):
            self._send(self._core().create_namespaced_secret, namespace, body, allow=(409,))

    def _create_service(
        self, namespace: str, spec: JobSpec, port: int, job: Mapping[str, Any]
    ) -> None:
        """The ClusterIP Service selecting the session's pod, owned by its Job; 409 (an
        earlier attempt made it) is success when it carries this job's uuid."""
        from kubernetes import client

        owner = _owner(job, spec.uuid)
        body = client.V1Service.from_dict(build_service_manifest(spec, namespace, port, owner))
        with self._calling("create the session's Service"):
            created = self._send(
                self._core().create_namespaced_service, namespace, body, allow=(409,)
            )
            if created is None:  # 409
                self._read_service(namespace, spec.uuid)  # refuses someone else's Service

    def _read_service(self, namespace: str, job_uuid: uuid.UUID) -> dict[str, Any]:
        """The session's Service; FileNotFoundError when it is not there."""
        name = service_name(job_uuid)
        with self._calling("read the session's Service"):
            response = self._send(
                self._core().read_namespaced_service, name, namespace, allow=(404,)
            )
        if response is None:  # raised here: _calling takes an OSError for a network failure
            raise FileNotFoundError(f"Service {namespace}/{name}")
        service, _ = self._json(response)
        owner = (service.get("metadata", {}).get("labels") or {}).get(UUID_LABEL)
        if owner != str(job_uuid):
            raise BackendError(f"Service {namespace}/{name} exists but belongs to {owner!r}.")
        return service

    def read_session_file(self, ref: JobRef) -> bytes:
        """Where the session listens and its secret, in the shape the Slurm and local wrappers
        write session.json: host = the Service's cluster IP, port = its session port,
        token = the Secret's. FileNotFoundError while either is missing."""
        namespace, _ = split_backend_id(ref.backend_id)
        service = self._read_service(namespace, ref.uuid)
        ports = (service.get("spec") or {}).get("ports") or []
        port = next(
            (p.get("port") for p in ports if p.get("name") == SESSION_PORT_NAME),
            ports[0].get("port") if ports else None,
        )
        if not isinstance(port, int):
            raise FileNotFoundError(f"Service {namespace}/{service_name(ref.uuid)} has no port")
        name = session_secret_name(ref.uuid)
        with self._calling("read the session's secret"):
            response = self._send(
                self._core().read_namespaced_secret, name, namespace, allow=(404,)
            )
        if response is None:
            raise FileNotFoundError(f"Secret {namespace}/{name}")
        secret, _ = self._json(response)
        if (secret.get("metadata", {}).get("labels") or {}).get(UUID_LABEL) != str(ref.uuid):
            raise BackendError(f"Secret {namespace}/{name} does not belong to job {ref.uuid}.")
        try:
            token = base64.b64decode((secret.get("data") or {})[SESSION_TOKEN_KEY]).decode()
        except (KeyError, TypeError, ValueError, binascii.Error) as exc:
            raise BackendError(f"Secret {namespace}/{name} holds no token.") from exc
        return json.dumps({"host": service_host(service), "port": port, "token": token}).encode()

    def _delete_session(self, namespace: str, job_uuid: uuid.UUID) -> None:
        """Delete a session's Service and Secret (404: already gone, or not a session)."""
        core = self._core()
        with self._calling("delete the session's Service"):
            self._send(
                core.delete_namespaced_service, service_name(job_uuid), namespace, allow=(404,)
            )
            self._send(
                core.delete_namespaced_secret,
                session_secret_name(job_uuid),
                namespace,
                allow=(404,),
            )

    def _create_job(self, namespace: str, manifest: dict[str, Any]) -> dict[str, Any] | None:
        """The created Job; {} when it already exists (409); None when the namespace is gone."""
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        body = client.V1Job.from_dict(manifest)
        with self._calling("create the Job"):
            try:
                response = self._send(self._batch().create_namespaced_job, namespace, body)
            except ApiException as exc:
                if exc.status == 409:
                    return {}
                if exc.status == 404:
                    return None
                raise
            created, _ = self._json(response)
        return created

    def _existing_job(self, namespace: str, name: str, job_uuid: uuid.UUID) -> dict[str, Any]:
        with self._calling("read the existing Job"):
            response = self._send(self._batch().read_namespaced_job, name, namespace)
        job, _ = self._json(response)
        owner = (job.get("metadata", {}).get("labels") or {}).get(UUID_LABEL)
        if owner != str(job_uuid):
            raise BackendError(f"Job {namespace}/{name} exists but belongs to {owner!r}.")
        return job

    def _create_script(self, namespace: str, spec: JobSpec) -> None:
        """The script as a ConfigMap the pod mounts and runs with /bin/sh."""
        from kubernetes import client

        body = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": script_configmap_name(spec.uuid),
                "namespace": namespace,
                "labels": {MANAGED_BY_LABEL: MANAGER, UUID_LABEL: str(spec.uuid)},
            },
            "data": {SCRIPT_KEY: spec.script},
        }
        config_map = client.V1ConfigMap.from_dict(body)
        with self._calling("store the job script"):  # 409: stored by an earlier attempt
            self._send(
                self._core().create_namespaced_config_map, namespace, config_map, allow=(409,)
            )

    def _adopt_script(self, namespace: str, spec: JobSpec, job: Mapping[str, Any]) -> None:
        """Make the Job own its script, so the garbage collector removes both together (TTL,
        cancel). Best effort: a script left unowned is small, labelled, and harmless."""
        patch = {"metadata": {"ownerReferences": [_owner(job, spec.uuid)]}}
        try:
            with self._calling("attach the script to its Job"):
                self._send(
                    self._core().patch_namespaced_config_map,
                    script_configmap_name(spec.uuid),
                    namespace,
                    patch,
                )
        except (BackendError, BackendUnavailable):
            logger.warning("Script of job %s left without an owner", spec.uuid, exc_info=True)

    def _ensure_namespace(
        self, namespace: str, project: str, *, default_quota: bool = True
    ) -> None:
        """Create the project's namespace on first use (and the cluster's default GPU quota
        when `gpu_quota` is set and the namespace has none yet); cached per process."""
        if self.options.get("namespace") or namespace in self._namespaces_ready:
            return
        from kubernetes import client

        core = self._core()
        with self._calling("set up the project namespace"):
            response = self._send(core.read_namespace, namespace, allow=(404,))
            if response is None:  # not there: make it (409: someone else just did)
                body = client.V1Namespace.from_dict(namespace_manifest(namespace, project))
                self._send(core.create_namespace, body, allow=(409,))
            else:
                existing, _ = self._json(response)
                labels = existing.get("metadata", {}).get("labels") or {}
                if labels.get(MANAGED_BY_LABEL) != MANAGER:
                    raise BackendError(
                        f"Namespace {namespace} exists and is not managed by GPU Commons."
                    )
        if default_quota and self.options.get("gpu_quota") is not None:
            # Only when missing: the pushed quota (push_accounts) is never overwritten here.
            self._write_quota(
                namespace, wanted_quota(AccountSpec(name=namespace, project=project), self.options)
            )
        self._namespaces_ready.add(namespace)

    def _write_quota(
        self,
        namespace: str,
        hard: Mapping[str, str],
        *,
        replace: bool = False,
        exists: bool = False,
    ) -> None:
        """Set the namespace's quota to `hard`: replace it when it `exists` (create it if it has
        gone since), else create it (if someone made it meanwhile, replace it only with
        `replace`: the submit path never overwrites a pushed quota)."""
        from kubernetes import client

        core = self._core()
        body = client.V1ResourceQuota.from_dict(quota_manifest(namespace, hard))

        def put(allow: Collection[int] = ()) -> Any | None:
            # No resourceVersion: the object is the portal's alone, so the replace is
            # unconditional (the wanted quota wins over any hand edit).
            return self._send(
                core.replace_namespaced_resource_quota, QUOTA_NAME, namespace, body, allow=allow
            )

        with self._calling(f"set the ResourceQuota of namespace {namespace}"):
            if exists and put(allow=(404,)) is not None:
                return
            created = self._send(
                core.create_namespaced_resource_quota, namespace, body, allow=(409,)
            )
            if created is None and (replace or exists):
                put()

    # -- project accounts (namespaces and their quota) --------------------------------------

    def account_name(self, project: str, project_id: int | None = None) -> str:
        """The project's namespace on this cluster: SchedulerAccount.name (see
        accounts.project_namespace; the project id plays no part)."""
        return project_namespace(self.options, project)

    def account_limits(self, spec: AccountSpec) -> dict[str, str]:
        """What push_accounts makes the account's quota hold, comparable to
        AccountState.limits (its `spec.hard`)."""
        return wanted_quota(spec, self.options)

    def push_accounts(self, specs: Sequence[AccountSpec]) -> dict[str, str]:
        """Make each project's namespace and set its quota: the GPU cap as
        requests.<gpu_resource>, and `pods: 0` while blocked or closed (no new Pod starts;
        running ones finish). One paged listing of every managed quota, then a write only for
        the namespaces whose quota differs; {namespace: the API server's refusal} for the others.

        Kubernetes cannot enforce an SU budget. Portal work is bounded by the portal's holds.
        Direct work is charged when its Job finishes (direct_jobs) and blocked only once the
        balance is exhausted and the next push lands, so the overspend of a namespace is at most
        what its direct Pods use from the moment the balance runs out until they end: Pods
        already running are not stopped, and Pods started before the block lands run too. With
        a GPU cap N that is at most N GPUs x (the tick interval + the longest direct Job's run
        time) at the cluster's rates, plus their CPUs and memory; a direct Job without
        activeDeadlineSeconds has no time bound. Closed accounts are blocked, never deleted
        (deleting a namespace deletes its Jobs, logs and volumes)."""
        if not self.manages_accounts:
            raise BackendError(
                f"Cluster {self.name} runs every project in namespace "
                f"{self.options.get('namespace')}: it has no project accounts."
            )
        if not specs:
            return {}
        held = self._managed_quotas()
        refusals: dict[str, str] = {}
        for spec in specs:
            if spec.name != self.account_name(spec.project):
                refusals[spec.name] = (
                    f"{spec.name} is not the namespace of project {spec.project} on cluster "
                    f"{self.name} ({self.account_name(spec.project)})."
                )
                continue
            wanted = wanted_quota(spec, self.options)
            current = held.get(spec.name)
            if current is not None and same_hard(current, wanted):
                continue
            try:
                if current is None:  # a new account, one made by submit, or one deleted
                    self._namespaces_ready.discard(spec.name)
                    self._ensure_namespace(spec.name, spec.project, default_quota=False)
                self._write_quota(spec.name, wanted, replace=True, exists=current is not None)
            except BackendError as exc:
                self._namespaces_ready.discard(spec.name)  # look again next time
                refusals[spec.name] = str(exc)
        return refusals

    def read_accounts(self, names: Collection[str]) -> dict[str, AccountState]:
        """Each named namespace's quota (`spec.hard` as limits), from one paged listing of the
        managed quotas; a namespace with no quota of ours is absent."""
        if not self.manages_accounts:
            raise BackendError(f"Cluster {self.name} has no project accounts.")
        wanted = set(names)
        if not wanted:
            return {}
        return {
            name: AccountState(name=name, users=(), limits=dict(hard))
            for name, hard in self._managed_quotas().items()
            if name in wanted
        }

    def _managed_quotas(self) -> dict[str, dict[str, Any]]:
        """{namespace: spec.hard} of every quota named QUOTA_NAME with the managed-by label, in
        one listing across namespaces."""
        core = self._core()
        items, _ = self._list_all(
            "list ResourceQuotas", core.list_resource_quota_for_all_namespaces, MANAGED_SELECTOR
        )
        return {
            str(meta.get("namespace", "")): dict((item.get("spec") or {}).get("hard") or {})
            for item in items
            if (meta := item.get("metadata") or {}).get("name") == QUOTA_NAME
        }

    def direct_jobs(
        self, accounts: Collection[str], since: datetime
    ) -> tuple[list[DirectRecord], datetime]:
        """Finished Jobs in these namespaces that ended at or after `since`, from ONE paged
        listing of the cluster's Jobs. Jobs carrying the portal's uuid label are passed on with
        their tag (the portal skips its own; a label anyone can write never hides work). The
        next watermark is the listing's time (the API server's Date) minus
        direct_overlap_seconds, never before `since`. See accounts.direct_record for the usage
        rule. A Job deleted before a tick lists it (by hand, or a ttlSecondsAfterFinished
        shorter than the sync interval) is never seen: a facility that must charge every Job
        enforces a minimum TTL with an admission policy."""
        wanted = set(accounts)
        if not self.manages_accounts or not wanted:
            return [], since
        if since.tzinfo is None:
            since = since.replace(tzinfo=UTC)
        # No label selector: a selector leaving out labelled Jobs would let a forged label hide
        # work, and namespaces cannot be selected by a list of names.
        items, listed_at = self._list_jobs("")
        gpu_resource = self.options.get("gpu_resource", "nvidia.com/gpu")
        node_selectors = self.options.get("node_selectors") or {}
        records: list[DirectRecord] = []
        for job in items:
            if (job.get("metadata") or {}).get("namespace") not in wanted:
                continue
            record = direct_record(job, gpu_resource=gpu_resource, node_selectors=node_selectors)
            ended = record.usage.ended_at if record else None
            if record is None or ended is None or ended < since:
                continue
            records.append(record)
        overlap = int(self.options.get("direct_overlap_seconds", DIRECT_OVERLAP_SECONDS))
        return records, max(since, listed_at - timedelta(seconds=overlap))

    # -- find, poll, usage ----------------------------------------------------------------

    def _list_jobs(self, selector: str) -> tuple[list[dict[str, Any]], datetime]:
        """Every matching Job, all namespaces or the fixed namespace of a namespaced token,
        with the server's time of the listing (see _list_all)."""
        batch = self._batch()
        if self.options.get("namespace"):
            return self._list_all(
                "list Jobs", batch.list_namespaced_job, selector, self.options["namespace"]
            )
        return self._list_all("list Jobs", batch.list_job_for_all_namespaces, selector)

    def _list_pods(self, selector: str, namespace: str | None = None) -> list[dict[str, Any]]:
        core = self._core()
        namespace = namespace or self.options.get("namespace")
        if namespace:
            items, _ = self._list_all("list Pods", core.list_namespaced_pod, selector, namespace)
        else:
            items, _ = self._list_all("list Pods", core.list_pod_for_all_namespaces, selector)
        return items

    def _list_all(
        self, action: str, list_call: Callable[..., Any], selector: str, *args: Any
    ) -> tuple[list[dict[str, Any]], datetime]:
        """All items of a list call, `list_page_size` per request, and the server's time at the
        first page: the pages are one consistent snapshot taken then. An expired continue token
        (410) restarts the listing once with a fresh list; a second expiry is transient."""
        from kubernetes.client.exceptions import ApiException

        page_size = self._page_size()
        for attempt in (1, 2):
            items: list[dict[str, Any]] = []
            listed_at: datetime | None = None
            token: str | None = None
            with self._calling(action):
                while True:
                    try:
                        response = list_call(
                            *args,
                            label_selector=selector or None,
                            limit=page_size,
                            _continue=token,
                            _preload_content=False,
                            _request_timeout=self._timeout,
                        )
                    except ApiException as exc:
                        if exc.status == 410 and token is not None:
                            break  # the snapshot was compacted away: its pages are gone
                        raise
                    body, now = self._json(response)
                    listed_at = listed_at or now
                    items.extend(body.get("items") or [])
                    token = (body.get("metadata") or {}).get("continue") or None
                    if token is None:
                        return items, listed_at
            logger.warning(
                "Cluster %s: continue token expired while paging (%s, attempt %d)",
                self.name,
                action,
                attempt,
            )
        raise BackendUnavailable(
            f"Kubernetes API of {self.name} failed to {action}: the continue token expired "
            "twice while paging; the listing is retried later."
        )

    def _page_size(self) -> int:
        size = self.options.get("list_page_size", option_checks.DEFAULT_LIST_PAGE_SIZE)
        if not is_positive_int(size):
            # A cluster misconfigured at runtime makes its jobs wait, never rejects them.
            raise BackendUnavailable(
                f"Cluster {self.name}: list_page_size must be a positive whole number "
                f"(got {size!r})."
            )
        return int(size)

    def find(self, uuids: Sequence[uuid.UUID]) -> dict[uuid.UUID, str]:
        """Jobs already carrying these portal uuids: one labelled listing (per 100 uuids)."""
        found: dict[uuid.UUID, str] = {}
        wanted = [str(u) for u in uuids]
        for start in range(0, len(wanted), SELECTOR_CHUNK):
            chunk = wanted[start : start + SELECTOR_CHUNK]
            selector = f"{MANAGED_SELECTOR},{UUID_LABEL} in ({','.join(chunk)})"
            items, _ = self._list_jobs(selector)
            for job in items:
                label = (job.get("metadata", {}).get("labels") or {}).get(UUID_LABEL)
                if label in chunk:
                    found[uuid.UUID(label)] = backend_id_of(job)
        return found

    def poll(self, refs: Sequence[JobRef]) -> dict[str, JobStatus]:
        """One list of every portal-managed Job; a ref whose Job is gone reads as cancelled."""
        if not refs:
            return {}
        items, now = self._list_jobs(MANAGED_SELECTOR)
        by_id = {backend_id_of(job): job for job in items}
        with self._lock:
            self._snapshot = (time.monotonic(), now, by_id)
        wanted = {ref.backend_id for ref in refs}
        failed = [job for bid, job in by_id.items() if bid in wanted and needs_exit_code(job)]
        exit_info: dict[str, tuple[int | None, str]] = {}
        names = sorted({(job.get("metadata") or {}).get("name", "") for job in failed})
        for start in range(0, len(names), SELECTOR_CHUNK):
            chunk = names[start : start + SELECTOR_CHUNK]
            exit_info.update(
                pod_exit_info(
                    self._list_pods(f"{MANAGED_SELECTOR},{JOB_NAME_LABEL} in ({','.join(chunk)})")
                )
            )
        result: dict[str, JobStatus] = {}
        for ref in refs:
            job = by_id.get(ref.backend_id)
            if job is None:
                result[ref.backend_id] = JobStatus(
                    ref.backend_id,
                    "cancelled",
                    ended_at=now,
                    reason="The Kubernetes Job no longer exists (deleted).",
                )
            else:
                result[ref.backend_id] = status_from_job(job, now=now, exit_info=exit_info)
                labels = (job.get("metadata") or {}).get("labels") or {}
                ended = result[ref.backend_id].state not in ("queued", "running", UNKNOWN)
                if ended and labels.get(SESSION_LABEL) == "true":
                    self._end_session(ref)
        return result

    def _end_session(self, ref: JobRef) -> None:
        """A session's Job ended: its Service and Secret go now, not with the Job's TTL.
        Best effort: the Service is owned by the Job, so the garbage collector is the net."""
        namespace, _ = split_backend_id(ref.backend_id)
        try:
            self._delete_session(namespace, ref.uuid)
        except (BackendError, BackendUnavailable):
            logger.warning("Session objects of job %s left behind", ref.uuid, exc_info=True)

    def usage(self, refs: Sequence[JobRef]) -> dict[str, UsageRecord]:
        """Requested resources x wall time, from poll()'s fresh listing or one new listing."""
        if not refs:
            return {}
        with self._lock:
            snapshot = self._snapshot
        wanted = {ref.backend_id for ref in refs}
        if snapshot and time.monotonic() - snapshot[0] < SNAPSHOT_SECONDS:
            now, by_id = snapshot[1], snapshot[2]
        else:
            items, now = self._list_jobs(MANAGED_SELECTOR)
            by_id = {backend_id_of(job): job for job in items}
        gpu_resource = self.options.get("gpu_resource", "nvidia.com/gpu")
        return {
            bid: usage_from_job(by_id[bid], now=now, gpu_resource=gpu_resource)
            for bid in wanted
            if bid in by_id
        }

    # -- cancel ---------------------------------------------------------------------------

    def cancel(self, ref: JobRef) -> None:
        """Delete the Job with foreground propagation (its pods go first) and its script."""
        from kubernetes import client

        namespace, name = split_backend_id(ref.backend_id)
        with self._calling("delete the Job"):  # 404: already gone
            self._send(
                self._batch().delete_namespaced_job,
                name,
                namespace,
                body=client.V1DeleteOptions(propagation_policy="Foreground"),
                allow=(404,),
            )
            self._send(
                self._core().delete_namespaced_config_map,
                script_configmap_name(ref.uuid),
                namespace,
                allow=(404,),
            )
        self._delete_session(namespace, ref.uuid)
        with self._lock:
            self._snapshot = None

    # -- logs -----------------------------------------------------------------------------

    def read_log(self, ref: JobRef, stream: str, offset: int, limit: int) -> LogChunk:
        """The pod's log (stdout and stderr merged by Kubernetes), sliced on the portal side."""
        kind, index = parse_stream(stream)
        if kind == "stderr":  # Kubernetes keeps one stream per container: stderr is in stdout
            return LogChunk(b"", 0, True)
        namespace, name = split_backend_id(ref.backend_id)
        selector = f"{JOB_NAME_LABEL}={name}"
        if index is not None:
            selector += f",{INDEX_LABEL}={index}"
        pods = self._list_pods(selector, namespace)
        if index is None:
            first = [p for p in pods if _pod_index(p) in (None, 0)]
            pods = first or pods
        if not pods:
            return LogChunk(b"", max(offset, 0), self._job_finished(namespace, name))
        pod = max(pods, key=lambda p: (p.get("metadata") or {}).get("creationTimestamp", ""))
        phase = (pod.get("status") or {}).get("phase")
        if phase in (None, "Pending"):  # not started: nothing logged yet
            return LogChunk(b"", 0, False)
        terminated = phase in ("Succeeded", "Failed")
        limit_bytes = offset + limit + 1 if offset >= 0 else None
        with self._calling("read the log"):
            response = self._send(
                self._core().read_namespaced_pod_log,
                pod["metadata"]["name"],
                namespace,
                container=CONTAINER,
                limit_bytes=limit_bytes,
                allow=(400, 404),
            )
            if response is None:  # not started or pod gone
                return LogChunk(b"", max(offset, 0), terminated)
            full = response.data or b""
        start = offset if offset >= 0 else max(0, len(full) + offset)
        if start > len(full):  # past the end: say where the end is, like the other backends
            return LogChunk(b"", len(full), terminated)
        data = full[start : start + limit]
        reached_end = len(full) <= start + limit
        return LogChunk(data, start + len(data), terminated and reached_end)

    def _job_finished(self, namespace: str, name: str) -> bool:
        with self._calling("read the Job"):
            response = self._send(self._batch().read_namespaced_job, name, namespace, allow=(404,))
        if response is None:
            return True
        job, now = self._json(response)
        return status_from_job(job, now=now).state not in ("queued", "running")

    # -- results --------------------------------------------------------------------------

    def _results_root(self) -> str:
        root = self.options.get("results_host_path")
        if not root:
            raise BackendError(f"Cluster {self.name} keeps no results (no results_host_path).")
        return str(root)

    def list_results(self, ref: JobRef) -> list[ResultFile]:
        """Files under <results_host_path>/<uuid>/, never through a link (the folder too)."""
        return files.list_files(self._results_root(), [str(ref.uuid)])

    def open_result(self, ref: JobRef, path: str) -> BinaryIO:
        """Open one result file; refuses absolute paths, `..` and links anywhere on the way."""
        return files.open_file(self._results_root(), [str(ref.uuid), *files.result_parts(path)])


def _owner(job: Mapping[str, Any], job_uuid: uuid.UUID) -> dict[str, str]:
    """The ownerReference to a created Job, so the garbage collector removes what it owns."""
    meta = job.get("metadata") or {}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "name": meta.get("name", job_name(job_uuid)),
        "uid": meta.get("uid", ""),
    }


def _pod_index(pod: Mapping[str, Any]) -> int | None:
    meta = pod.get("metadata") or {}
    value = (meta.get("labels") or {}).get(INDEX_LABEL) or (meta.get("annotations") or {}).get(
        INDEX_LABEL
    )
    return int(value) if value is not None and str(value).isdigit() else None


def _status_message(exc: Any) -> str:
    """The `message` of a Kubernetes Status body, else the HTTP reason."""
    try:
        body = json.loads(exc.body or "{}")
    except (TypeError, ValueError):
        body = {}
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"])
    return f"{exc.status} {exc.reason}".strip()


def _server_time(header: str | None) -> datetime:
    """The API server's clock (its Date header); ours when it sent none."""
    if header:
        with contextlib.suppress(TypeError, ValueError):
            return parsedate_to_datetime(header).astimezone(UTC)
    return datetime.now(tz=UTC)
