"""Admission is serialized: 20 FineTuneJobs created at once never over-commit a GPUPool with room for 5.

The real operator (``kopf.testing.KopfRunner``, standalone, logged in as the Helm chart's
operator ServiceAccount) runs against the session's real kube-apiserver. A GPUPool of five
one-GPU nodes, the support-bot example's base Model and Dataset, then 20 one-GPU FineTuneJobs
created by 20 threads at once. A watch follows every version of every job in the namespace,
in the server's order, and counts at each step the jobs holding GPUs (``allocation_of``, what
the scheduler counts): never more than 5. At rest: exactly 5 admitted, 15 Pending with an
``Admitted=False`` condition naming the pool. Deleting 2 admitted jobs admits exactly 2 more.
No KubeRay runs: the operator creates the RayJobs, which just sit there. A second test creates
10 jobs, then 10 that queue ahead of them as soon as the first job has a status.

These check the property, so they catch the race only when the timing hits it: the operator
before serialized admission passed both here (handlers that list the same jobs compute the
same FIFO plan), while a first serialized version whose ledger let go of bookings on one
handler's newer world, under another's older one, over-committed in a CI run (a sixth job
holding a GPU; the operator then failed to build the pool's cluster state).
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes.client
import kubernetes.watch
import pytest
import yaml
from kopf.testing import KopfRunner

from corral.api.v1alpha1 import FineTuneJob
from corral.control import get_condition
from corral.control._placement import allocation_of
from corral_operator import OperatorSettings
from tests.fixtures.kube import ChartAccounts
from tests.support.kube import KubeCluster
from tests.support.poll import wait_until

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "support-bot"
GROUP, VERSION = "corral.dev", "v1alpha1"
JOBS, ROOM = 20, 5

logger = logging.getLogger(__name__)


@pytest.fixture(scope="module")
def setup(
    kube: KubeCluster, chart_accounts: ChartAccounts, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """A namespace, a pool with room for 5 one-GPU jobs, and the operator's settings in the environment."""
    tmp = tmp_path_factory.mktemp("admission")
    suffix = uuid.uuid4().hex[:6]
    ns, pool = f"admission-{suffix}", f"five-gpus-{suffix}"
    kube.kubectl("create", "namespace", ns)
    kubeconfig = kube.write_kubeconfig(
        tmp / "operator.kubeconfig", chart_accounts.operator, ns, chart_accounts.operator_token
    )
    env = {
        "KUBECONFIG": str(kubeconfig),
        "CORRAL_OPERATOR_ARTIFACT_ROOT": (tmp / "artifacts").as_uri(),
        "CORRAL_OPERATOR_RESYNC_SECONDS": "0.5",
        "CORRAL_OPERATOR_STANDALONE": "true",
        "CORRAL_OPERATOR_ALLOWED_URI_PREFIXES": json.dumps({"*": ["hf://", f"{EXAMPLES.as_uri()}/"]}),
    }
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        handlers = sys.modules.get("corral_operator._handlers")
        if handlers is not None:  # imported earlier in this session: give it these settings
            mp.setattr(handlers, "SETTINGS", OperatorSettings.from_env())
        with kube.api_client() as client:
            yield {"kube": kube, "ns": ns, "pool": pool, "custom": kubernetes.client.CustomObjectsApi(client)}
    kube.kubectl("delete", "namespace", ns, "--wait=false", check=False)
    kube.kubectl("delete", "gpupool", pool, "--wait=false", check=False)


def _base_docs(ns: str, pool: str) -> list[dict[str, Any]]:
    model = yaml.safe_load((EXAMPLES / "10-model.yaml").read_text())
    model["metadata"]["namespace"] = ns
    dataset = next(d for d in yaml.safe_load_all((EXAMPLES / "20-dataset.yaml").read_text()) if d)
    dataset["metadata"]["namespace"] = ns
    dataset["spec"]["uri"] = (EXAMPLES / "data" / "support-faq.alpaca.jsonl").as_uri()
    gpupool = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "GPUPool",
        "metadata": {"name": pool},
        "spec": {
            "acceleratorType": "nvidia-a100-80gb",
            "gpusPerNode": 1,
            "gpuMemory": "80Gi",
            "maxNodes": ROOM,
            "pricePerGpuHour": "1",
        },
    }
    return [gpupool, model, dataset]


def _job(ns: str, pool: str, i: int) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "FineTuneJob",
        # Names descend as creation goes on: jobs created in one second tie on creationTimestamp and
        # queue by name, so a late job goes ahead of early ones a stale view may have admitted already.
        "metadata": {"name": f"job-{JOBS - 1 - i:02d}", "namespace": ns},
        "spec": {
            "baseModel": {"name": "tiny-llama"},
            "datasets": [{"name": "support-faq"}],
            "method": "lora",
            "hyperparameters": {"epochs": 1},
            "resources": {"workers": 1, "gpusPerWorker": 1, "pool": pool},
        },
    }


def _ready(custom: Any, ns: str, plural: str, name: str) -> bool:
    try:
        obj = custom.get_namespaced_custom_object(GROUP, VERSION, ns, plural, name)
    except kubernetes.client.exceptions.ApiException:
        return False
    ready = next((c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == "Ready"), None)
    return ready is not None and ready["status"] == "True"


class _Holders(threading.Thread):
    """Follows every version of every FineTuneJob of a namespace; keeps the most ever holding GPUs at once."""

    def __init__(self, custom: Any, ns: str) -> None:
        super().__init__(name="admission-watch", daemon=True)
        self.custom, self.ns = custom, ns
        self.jobs: dict[str, FineTuneJob] = {}
        self.most = 0
        self.seen = 0
        self.lock = threading.Lock()
        self.stop = threading.Event()
        listed = custom.list_namespaced_custom_object(GROUP, VERSION, ns, "finetunejobs")
        self.version = listed["metadata"]["resourceVersion"]

    def holding(self) -> set[str]:
        with self.lock:
            return {name for name, job in self.jobs.items() if allocation_of(job) is not None}

    def run(self) -> None:
        while not self.stop.is_set():
            watch = kubernetes.watch.Watch()
            for event in watch.stream(
                self.custom.list_namespaced_custom_object,
                GROUP,
                VERSION,
                self.ns,
                "finetunejobs",
                resource_version=self.version,
                timeout_seconds=5,
            ):
                obj = event["object"]
                self.version = obj["metadata"]["resourceVersion"]
                name = obj["metadata"]["name"]
                with self.lock:
                    if event["type"] == "DELETED":
                        self.jobs.pop(name, None)
                    else:
                        self.jobs[name] = FineTuneJob.model_validate(obj)
                    self.seen += 1
                    self.most = max(self.most, sum(allocation_of(j) is not None for j in self.jobs.values()))
                if self.stop.is_set():
                    watch.stop()
                    break


def _pending_naming_pool(jobs: dict[str, FineTuneJob], pool: str) -> set[str]:
    out = set()
    for name, job in jobs.items():
        admitted = get_condition(job.status.conditions, "Admitted")
        if (
            job.status.phase == "Pending"
            and admitted is not None
            and admitted.status == "False"
            and pool in (admitted.message or "")
        ):
            out.add(name)
    return out


def test_twenty_jobs_at_once_admit_exactly_five_then_two_more(setup: dict[str, Any]) -> None:
    kube: KubeCluster = setup["kube"]
    ns, pool, custom = setup["ns"], setup["pool"], setup["custom"]
    with KopfRunner(["run", "--standalone", "-n", ns, "-m", "corral_operator._handlers"], timeout=60) as runner:
        kube.apply(_base_docs(ns, pool))
        wait_until("Model tiny-llama Ready", lambda: _ready(custom, ns, "models", "tiny-llama"), 120, every=0.2)
        wait_until("Dataset support-faq Ready", lambda: _ready(custom, ns, "datasets", "support-faq"), 120, every=0.2)

        holders = _Holders(custom, ns)
        holders.start()
        started = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(JOBS) as pool_threads:
            created = list(
                pool_threads.map(
                    lambda i: custom.create_namespaced_custom_object(
                        GROUP, VERSION, ns, "finetunejobs", _job(ns, pool, i)
                    ),
                    range(JOBS),
                )
            )
        assert len(created) == JOBS

        def settled() -> tuple[set[str], set[str]] | None:
            with holders.lock:
                jobs = dict(holders.jobs)
            admitted = holders.holding()
            pending = _pending_naming_pool(jobs, pool)
            return (admitted, pending) if len(admitted) == ROOM and len(pending) == JOBS - ROOM else None

        admitted, pending = wait_until("5 admitted and 15 Pending naming the pool", settled, 180, every=0.2)
        to_settle = time.monotonic() - started
        assert holders.most == ROOM, holders.most

        deleted = sorted(admitted)[:2]
        deleted_at = time.monotonic()
        for name in deleted:
            custom.delete_namespaced_custom_object(GROUP, VERSION, ns, "finetunejobs", name)

        def two_more() -> set[str] | None:
            with holders.lock:
                names = set(holders.jobs)
            now = holders.holding()
            gone = not (set(deleted) & names)
            new = now - admitted
            return now if gone and len(now) == ROOM and len(new) == 2 else None

        now = wait_until("the 2 deleted gone and 2 more admitted", two_more, 180, every=0.2)
        to_readmit = time.monotonic() - deleted_at
        with holders.lock:
            jobs = dict(holders.jobs)
        assert len(jobs) == JOBS - 2
        assert len(_pending_naming_pool(jobs, pool)) == JOBS - ROOM - 2
        assert (admitted - set(deleted)) <= now  # the three left kept their GPUs
        holders.stop.set()
        holders.join(10)
        assert holders.most == ROOM, holders.most
        message = next(iter(_pending_naming_pool(jobs, pool)))
        condition = get_condition(jobs[message].status.conditions, "Admitted")
        assert condition is not None
        logger.warning(
            "admission: %d jobs at once, %d admitted + %d pending after %.1fs; 2 deleted, 2 more admitted after "
            "%.1fs; most holding at once %d over %d watched versions; a pending job says %s: %s",
            JOBS,
            len(admitted),
            len(pending),
            to_settle,
            to_readmit,
            holders.most,
            holders.seen,
            condition.reason,
            condition.message,
        )
    assert runner.exit_code == 0, runner.output


def test_a_second_burst_while_the_first_is_being_admitted_never_over_commits(setup: dict[str, Any]) -> None:
    """Jobs that queue ahead (same second, earlier names) arrive while the first ones are being admitted."""
    kube: KubeCluster = setup["kube"]
    custom = setup["custom"]
    ns, pool = f"{setup['ns']}-b", f"{setup['pool']}-b"
    kube.kubectl("create", "namespace", ns)
    try:
        with KopfRunner(["run", "--standalone", "-n", ns, "-m", "corral_operator._handlers"], timeout=60) as runner:
            kube.apply(_base_docs(ns, pool))
            wait_until("Model tiny-llama Ready", lambda: _ready(custom, ns, "models", "tiny-llama"), 120, every=0.2)
            wait_until("Dataset Ready", lambda: _ready(custom, ns, "datasets", "support-faq"), 120, every=0.2)
            holders = _Holders(custom, ns)
            holders.start()

            def create(i: int) -> Any:
                return custom.create_namespaced_custom_object(GROUP, VERSION, ns, "finetunejobs", _job(ns, pool, i))

            with concurrent.futures.ThreadPoolExecutor(JOBS) as threads:
                list(threads.map(create, range(JOBS // 2)))  # job-19 .. job-10

                def first_statused() -> bool:
                    with holders.lock:
                        return any(j.status.phase for j in holders.jobs.values())

                wait_until("a first job statused", first_statused, 60, every=0.02)
                list(threads.map(create, range(JOBS // 2, JOBS)))  # job-09 .. job-00, ahead in the queue

            def settled() -> bool:
                with holders.lock:
                    jobs = dict(holders.jobs)
                return len(holders.holding()) == ROOM and len(_pending_naming_pool(jobs, pool)) == JOBS - ROOM

            wait_until("5 admitted and 15 Pending", settled, 180, every=0.2)
            holders.stop.set()
            holders.join(10)
            assert holders.most == ROOM, holders.most
        assert runner.exit_code == 0, runner.output
    finally:
        kube.kubectl("delete", "namespace", ns, "--wait=false", check=False)
        kube.kubectl("delete", "gpupool", pool, "--wait=false", check=False)
