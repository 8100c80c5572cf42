"""A real cluster schedules pods against a node's allocatable resources, pulls only images
that exist and records each pod's QoS class; so does the stand-in.

kube-scheduler's NodeResourcesFit filter (pkg/scheduler/framework/plugins/noderesources
/fit.go) and FitError wording (pkg/scheduler/framework/types.go), the kubelet's image
manager (pkg/kubelet/images/image_manager.go: ErrImagePull, ImagePullBackOff, Events
``Pulling``/``Failed``/``BackOff``, back-off doubling from 10s to 300s) and admission
(pkg/kubelet/lifecycle/predicate.go: ``OutOfmemory``), and the API server's QoS class
(pkg/apis/core/helper/qos/qos.go), each checked through the API and with real kubectl.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Iterator
from datetime import timedelta
from fractions import Fraction
from pathlib import Path
from typing import Any

import httpx
import pytest

from durapod.dev import images, scheduling
from durapod.dev.apiserver import pods
from durapod.dev.kubelet import Kubelet, NodeSettings
from tests.helpers import REPO, TOKEN, LocalCluster, wait_for

PODS = "/api/v1/namespaces/default/pods"
NO_VICTIMS = "preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod."


# -- pure functions, as tables -------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("500m", Fraction(1, 2)),
        ("2", Fraction(2)),
        ("1.5", Fraction(3, 2)),
        (".5", Fraction(1, 2)),
        ("1Gi", Fraction(2**30)),
        ("512Mi", Fraction(2**29)),
        ("1k", Fraction(1000)),
        ("1e3", Fraction(1000)),
        ("100n", Fraction(1, 10**7)),
        (3, Fraction(3)),
        ("1GB", None),
        ("lots", None),
        (True, None),
    ],
)
def test_quantities_parse_as_apimachinery_reads_them(text: Any, value: Fraction | None) -> None:
    """resource.Quantity: decimal and binary SI suffixes, exponents; anything else is no
    quantity at all."""
    assert pods.quantity(text) == value


def _spec(*containers: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "spec": {
            "containers": [
                {"name": f"c{i}", "image": "x", "resources": r} for i, r in enumerate(containers)
            ],
            **spec,
        }
    }


BOTH = {"cpu": "500m", "memory": "512Mi"}


@pytest.mark.parametrize(
    ("pod", "qos"),
    [
        pytest.param(_spec({}), "BestEffort", id="nothing asked"),
        pytest.param(_spec({"requests": {"cpu": "0"}}), "BestEffort", id="zero is nothing"),
        pytest.param(_spec({"requests": BOTH, "limits": BOTH}), "Guaranteed", id="equal"),
        pytest.param(_spec({"limits": BOTH}), "Guaranteed", id="limits only: defaulted"),
        pytest.param(
            _spec({"requests": {"cpu": "0.5", "memory": "512Mi"}, "limits": BOTH}),
            "Guaranteed",
            id="equal in other units",
        ),
        pytest.param(
            _spec({"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": BOTH}),
            "Burstable",
            id="requests below limits",
        ),
        pytest.param(_spec({"requests": BOTH}), "Burstable", id="requests only"),
        pytest.param(_spec({"limits": {"memory": "1Gi"}}), "Burstable", id="memory limit only"),
        pytest.param(_spec({"limits": BOTH}, {}), "Burstable", id="one container unlimited"),
        pytest.param(_spec({"limits": BOTH}, {"limits": BOTH}), "Guaranteed", id="two limited"),
        pytest.param(
            _spec({}, resources={"limits": BOTH}), "Guaranteed", id="pod-level limits decide"
        ),
    ],
)
def test_qos_class_is_computed_as_the_api_server_does(pod: dict[str, Any], qos: str) -> None:
    """qos.ComputePodQOS after defaulting requests from limits."""
    assert pods.qos_class(pod) == qos


@pytest.mark.parametrize(
    ("pod", "cpu", "memory"),
    [
        pytest.param(
            _spec({"requests": BOTH}, {"requests": BOTH}), 1000, 2**30, id="containers add"
        ),
        pytest.param(_spec({"limits": BOTH}), 500, 2**29, id="limits become requests"),
        pytest.param(
            _spec(
                {"requests": BOTH},
                initContainers=[
                    {"name": "i", "image": "x", "resources": {"requests": {"cpu": "2"}}}
                ],
            ),
            2000,
            2**29,
            id="the largest init container counts",
        ),
        pytest.param(
            _spec(
                {"requests": BOTH},
                initContainers=[
                    {
                        "name": "sidecar",
                        "image": "x",
                        "restartPolicy": "Always",
                        "resources": {"requests": BOTH},
                    }
                ],
            ),
            1000,
            2**30,
            id="sidecars run alongside",
        ),
        pytest.param(
            _spec({"requests": BOTH}, overhead={"memory": "1Mi"}),
            500,
            2**29 + 2**20,
            id="overhead on top",
        ),
        pytest.param(_spec({}), 0, 0, id="nothing asked"),
    ],
)
def test_pod_requests_count_as_the_scheduler_counts_them(
    pod: dict[str, Any], cpu: int, memory: int
) -> None:
    """component-helpers' resource.PodRequests, in the scheduler's units."""
    assert scheduling.requested(pod) == scheduling.Amounts(cpu, memory, 1)


NODE = scheduling.Amounts(2000, 4 * 2**30, 3)


@pytest.mark.parametrize(
    ("want", "in_use", "message"),
    [
        pytest.param(scheduling.Amounts(1000, 2**30, 1), scheduling.Amounts(), None, id="fits"),
        pytest.param(
            scheduling.Amounts(0, 0, 1),
            scheduling.Amounts(2000, 4 * 2**30, 2),
            None,
            id="asking nothing fits a full node",
        ),
        pytest.param(
            scheduling.Amounts(500, 8 * 2**30, 1),
            scheduling.Amounts(),
            f"0/1 nodes are available: 1 Insufficient memory. {NO_VICTIMS}",
            id="more memory than the node has",
        ),
        pytest.param(
            scheduling.Amounts(1500, 2**30, 1),
            scheduling.Amounts(1000, 3 * 2**30 + 1, 1),
            f"0/1 nodes are available: 1 Insufficient cpu, 1 Insufficient memory. {NO_VICTIMS}",
            id="both short, sorted",
        ),
        pytest.param(
            scheduling.Amounts(0, 0, 1),
            scheduling.Amounts(0, 0, 3),
            f"0/1 nodes are available: 1 Too many pods. {NO_VICTIMS}",
            id="no pod slot left",
        ),
    ],
)
def test_fit_and_its_message_read_as_kube_scheduler_words_them(
    want: scheduling.Amounts, in_use: scheduling.Amounts, message: str | None
) -> None:
    """fit.go's fitsRequest and FitError.Error(): reasons counted per node, sorted, then
    what preemption (PostFilter) found."""
    found = scheduling.shortages(want, in_use, NODE)
    if message is None:
        assert found == []
    else:
        assert scheduling.unschedulable_message({"spec": {}}, found) == message


def test_a_pod_that_may_not_preempt_says_so() -> None:
    """default_preemption.go: a pod with preemptionPolicy Never is not eligible."""
    found = scheduling.shortages(scheduling.Amounts(0, 0, 1), scheduling.Amounts(0, 0, 3), NODE)
    message = scheduling.unschedulable_message({"spec": {"preemptionPolicy": "Never"}}, found)
    assert message == (
        "0/1 nodes are available: 1 Too many pods. "
        "preemption: not eligible due to preemptionPolicy=Never."
    )


def test_the_kubelet_rejects_what_does_not_fit_with_its_words() -> None:
    """lifecycle/predicate.go: InsufficientResourceError becomes reason OutOf<resource>."""
    half_gi = scheduling.Amounts(2000, 2**29, 3)
    found = scheduling.shortages(scheduling.Amounts(0, 2**30, 1), scheduling.Amounts(), half_gi)
    assert scheduling.rejection(found) == (
        "OutOfmemory",
        "Node didn't have enough resource: memory, requested: 1073741824, used: 0, "
        "capacity: 536870912",
    )


@pytest.mark.parametrize(
    ("image", "reference"),
    [
        ("nope:1", "docker.io/library/nope:1"),
        ("nope", "docker.io/library/nope:latest"),
        ("durapod:dev", "docker.io/library/durapod:dev"),
        ("docker.io/library/durapod:dev", "docker.io/library/durapod:dev"),
        ("team/app:2", "docker.io/team/app:2"),
        ("registry.example/tasks:1", "registry.example/tasks:1"),
        ("localhost:5000/app", "localhost:5000/app:latest"),
        ("app@sha256:ab", "docker.io/library/app@sha256:ab"),
    ],
)
def test_image_names_normalise_as_a_runtime_resolves_them(image: str, reference: str) -> None:
    """docker's ParseNormalizedNamed: docker.io/library for short names, :latest when
    no tag or digest; matching is exact on the result."""
    assert images.normalise(image) == reference


def test_image_pull_back_off_doubles_to_its_cap_and_resets_when_left_alone() -> None:
    """flowcontrol.Backoff as the kubelet's image manager uses it."""
    back_off = images.BackOff(10, 300)
    moment, waits = 0.0, []
    for _ in range(7):
        waits.append(back_off.next("k", moment))
        assert back_off.in_back_off("k", moment + waits[-1] - 0.01)
        assert not back_off.in_back_off("k", moment + waits[-1])
        moment += waits[-1]
    assert waits == [10, 20, 40, 80, 160, 300, 300]
    assert back_off.next("k", moment + 601) == 10


# -- the node, through the API -------------------------------------------------------


class Node:
    """The stand-in API server with a kubelet of the given settings."""

    def __init__(self, home: Path, settings: NodeSettings) -> None:
        self.cluster = LocalCluster(home)
        self.kubelet = Kubelet(self.cluster.url, TOKEN, self.cluster.log_dir, REPO, settings)
        self._task = self.cluster.call(self._run())
        self.api = httpx.Client(
            base_url=self.cluster.url, headers={"Authorization": f"Bearer {TOKEN}"}
        )

    async def _run(self) -> asyncio.Task[None]:
        return asyncio.create_task(self.kubelet.run())

    def pod(self, name: str) -> dict[str, Any]:
        pod: dict[str, Any] = self.api.get(f"{PODS}/{name}").json()
        return pod

    def until(self, name: str, check: Any, what: str) -> dict[str, Any]:
        result: dict[str, Any] = wait_for(
            lambda: (p := self.pod(name)) and check(p) and p, 30, f"pod {name}: {what}"
        )
        return result

    def events(self, name: str) -> list[dict[str, Any]]:
        listing = self.api.get(
            "/api/v1/namespaces/default/events",
            params={"fieldSelector": f"involvedObject.name={name}"},
        ).json()
        return list(listing["items"])

    def close(self) -> None:
        self.api.close()

        async def stop() -> None:
            self._task.cancel()
            await self.kubelet.stop()

        self.cluster.call(stop())
        self.cluster.close()


@pytest.fixture
def small_node(tmp_path: Path) -> Iterator[Node]:
    """A node of 2 cpus, 1Gi and 3 pods, nothing reserved; image pulls back off fast."""
    node = Node(
        tmp_path,
        NodeSettings(
            capacity={"cpu": "2", "memory": "1Gi", "pods": "3"},
            reserved={},
            images={"registry.example/tasks:1": Path(sys.executable).parent},
            image_back_off=timedelta(milliseconds=200),
            image_back_off_max=timedelta(seconds=1),
        ),
    )
    yield node
    node.close()


def _pod(
    name: str,
    code: str = "pass",
    image: str = "durapod:dev",
    requests: dict[str, str] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "main", "image": image, "command": ["python", "-c", code]}
    if requests:
        container["resources"] = {"requests": requests}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [container], "restartPolicy": "Never", **spec},
    }


def _waits_for(path: Path) -> str:
    """A pod command that runs until ``path`` exists (the test's signal to end)."""
    return f"import os, time\nwhile not os.path.exists({str(path)!r}):\n    time.sleep(0.02)\n"


def _scheduled(pod: dict[str, Any]) -> dict[str, Any] | None:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == "PodScheduled"), None)


def _phase(*phases: str) -> Any:
    return lambda p: p["status"].get("phase") in phases


def test_a_node_registers_with_its_capacity_and_conditions(small_node: Node) -> None:
    """A kubelet registers its Node with capacity, allocatable, a Ready condition and
    nodeInfo; kubectl reads them."""
    out = wait_for(
        lambda: (
            (
                r := small_node.cluster.kubectl(
                    "get", "node", "durapod-dev", "-o", "json", check=False
                )
            ).returncode
            == 0
            and r.stdout
        ),
        30,
        "the Node",
    )
    node = json.loads(out)
    status = node["status"]
    assert scheduling.Amounts.of(status["capacity"]) == scheduling.Amounts(2000, 2**30, 3)
    assert scheduling.Amounts.of(status["allocatable"]) == scheduling.Amounts(2000, 2**30, 3)
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("True", "KubeletReady")
    assert status["nodeInfo"]["kubeletVersion"] == "v1.35.0"
    assert node["metadata"]["labels"]["kubernetes.io/hostname"] == "durapod-dev"


def test_default_allocatable_keeps_the_eviction_threshold_free(tmp_path: Path) -> None:
    """A kubelet's allocatable memory is capacity less the 100Mi hard-eviction threshold;
    110 pods unless told otherwise."""
    settings = NodeSettings(capacity={"cpu": "1", "memory": "1Gi"})
    kubelet = Kubelet("http://unused", TOKEN, tmp_path, tmp_path, settings)
    assert kubelet.allocatable == scheduling.Amounts(1000, 2**30 - 100 * 2**20, 110)


def test_a_pod_that_does_not_fit_waits_unschedulable_until_room_frees(
    small_node: Node, tmp_path: Path
) -> None:
    """kube-scheduler leaves a pod that fits no node Pending with PodScheduled=False,
    reason Unschedulable, and a FailedScheduling Event; a pod on the node that ends
    frees its requests (the scheduler's informer drops finished pods) and the waiting
    pod is scheduled then."""
    done = tmp_path / "done"
    small_node.api.post(PODS, json=_pod("big", _waits_for(done), requests={"memory": "768Mi"}))
    small_node.until("big", _phase("Running"), "running")
    small_node.api.post(PODS, json=_pod("second", requests={"memory": "512Mi"}))
    waiting = small_node.until(
        "second", lambda p: (c := _scheduled(p)) and c["status"] == "False", "Unschedulable"
    )
    condition = _scheduled(waiting)
    assert condition is not None and condition["reason"] == "Unschedulable"
    assert condition["message"] == f"0/1 nodes are available: 1 Insufficient memory. {NO_VICTIMS}"
    assert waiting["status"]["phase"] == "Pending" and not waiting["spec"].get("nodeName")
    events = wait_for(lambda: small_node.events("second"), 30, "the FailedScheduling event")
    assert (events[0]["reason"], events[0]["type"]) == ("FailedScheduling", "Warning")
    assert events[0]["source"]["component"] == "default-scheduler"
    row = small_node.cluster.kubectl("get", "pod", "second", "--no-headers").stdout.split()
    assert row[2] == "Pending"
    done.touch()
    small_node.until("big", _phase("Succeeded"), "succeeded")
    ran = small_node.until("second", _phase("Succeeded"), "scheduled and run")
    assert ran["spec"]["nodeName"] == "durapod-dev"
    assert (c := _scheduled(ran)) is not None and c["status"] == "True"


def test_a_pod_larger_than_the_node_is_never_scheduled(small_node: Node) -> None:
    """A request above allocatable is Insufficient cpu forever, whatever else runs."""
    small_node.api.post(PODS, json=_pod("huge", requests={"cpu": "3"}))
    pod = small_node.until("huge", lambda p: _scheduled(p) is not None, "judged")
    condition = _scheduled(pod)
    assert condition is not None
    assert condition["message"] == f"0/1 nodes are available: 1 Insufficient cpu. {NO_VICTIMS}"
    small_node.api.post(PODS, json=_pod("small", requests={"cpu": "1"}))
    small_node.until("small", _phase("Succeeded"), "run beside it")
    assert not small_node.pod("huge")["spec"].get("nodeName")


def test_the_pod_count_limit_holds_until_a_pod_is_deleted(small_node: Node, tmp_path: Path) -> None:
    """Allocatable pods bounds the pods on a node ("Too many pods"); deleting one makes
    room for the next."""
    never = tmp_path / "never"
    for n in range(3):
        small_node.api.post(PODS, json=_pod(f"p{n}", _waits_for(never)))
    for n in range(3):
        small_node.until(f"p{n}", _phase("Running"), "running")
    small_node.api.post(PODS, json=_pod("fourth"))
    pod = small_node.until("fourth", lambda p: _scheduled(p) is not None, "judged")
    condition = _scheduled(pod)
    assert condition is not None
    assert condition["message"] == f"0/1 nodes are available: 1 Too many pods. {NO_VICTIMS}"
    small_node.api.delete(f"{PODS}/p0", params={"gracePeriodSeconds": 0})
    small_node.until("fourth", _phase("Succeeded"), "scheduled once p0 went")


def test_the_kubelet_rejects_a_pod_bound_to_it_that_does_not_fit(small_node: Node) -> None:
    """A pod that names its node skips the scheduler; the kubelet's admission fails it
    with OutOfmemory (lifecycle/predicate.go, kubelet.rejectPod)."""
    small_node.api.post(
        PODS, json=_pod("named", requests={"memory": "2Gi"}, nodeName="durapod-dev")
    )
    pod = small_node.until("named", _phase("Failed"), "rejected")
    assert pod["status"]["reason"] == "OutOfmemory"
    assert pod["status"]["message"] == (
        "Pod was rejected: Node didn't have enough resource: memory, "
        "requested: 2147483648, used: 0, capacity: 1073741824"
    )


def _waiting_reasons(node: Node, name: str, wanted: int) -> list[str]:
    """The distinct waiting reasons the pod's container goes through, from a watch."""
    seen: list[str] = []
    with node.api.stream(
        "GET",
        PODS,
        params={"watch": "true", "fieldSelector": f"metadata.name={name}", "timeoutSeconds": 30},
        timeout=60,
    ) as stream:
        for line in stream.iter_lines():
            obj = json.loads(line)["object"]
            statuses = obj.get("status", {}).get("containerStatuses") or []
            state = statuses[0]["state"] if statuses else {}
            assert "running" not in state and "terminated" not in state
            reason = (state.get("waiting") or {}).get("reason")
            if reason and (not seen or seen[-1] != reason):
                seen.append(reason)
            if len(seen) >= wanted:
                break
    return seen


def test_an_unknown_image_fails_to_pull_and_backs_off_without_running(
    small_node: Node, tmp_path: Path
) -> None:
    """The kubelet cannot pull an image no registry has: the container waits in
    ErrImagePull, then ImagePullBackOff while the back-off lasts, then tries again; the
    pod stays Pending, never runs, and Pulling/Failed/BackOff Events say why."""
    ran = tmp_path / "ran"
    small_node.api.post(PODS, json=_pod("nope", f"open({str(ran)!r}, 'w')", image="nope:1"))
    reasons = _waiting_reasons(small_node, "nope", 4)
    assert reasons == ["ErrImagePull", "ImagePullBackOff", "ErrImagePull", "ImagePullBackOff"]
    pod = small_node.pod("nope")
    assert pod["status"]["phase"] == "Pending" and not ran.exists()
    waiting = pod["status"]["containerStatuses"][0]["state"]["waiting"]
    not_found = (
        'rpc error: code = NotFound desc = failed to pull and unpack image "docker.io/library/'
        'nope:1": failed to resolve reference "docker.io/library/nope:1": '
        "docker.io/library/nope:1: not found"
    )
    assert waiting["message"] == f'Back-off pulling image "nope:1": ErrImagePull: {not_found}'
    said = {(e["reason"], e["message"]) for e in small_node.events("nope")}
    assert {
        ("Pulling", 'Pulling image "nope:1"'),
        ("Failed", f'Failed to pull image "nope:1": {not_found}'),
        ("Failed", "Error: ErrImagePull"),
        ("BackOff", 'Back-off pulling image "nope:1"'),
        ("Failed", "Error: ImagePullBackOff"),
    } <= said
    repeats = [e for e in small_node.events("nope") if e["reason"] == "Pulling"]
    assert len(repeats) == 1 and repeats[0]["count"] >= 2  # one Event, counted
    row = small_node.cluster.kubectl("get", "pod", "nope", "--no-headers").stdout.split()
    assert row[2] in ("ErrImagePull", "ImagePullBackOff")
    small_node.api.delete(f"{PODS}/nope")
    wait_for(lambda: small_node.api.get(f"{PODS}/nope").status_code == 404, 30, "deleted")
    assert not ran.exists()


def test_an_absent_image_with_pull_policy_never_is_err_image_never_pull(
    small_node: Node,
) -> None:
    """image_manager.go: with imagePullPolicy Never an absent image is not pulled at all."""
    pod = _pod("never", image="nope:1")
    pod["spec"]["containers"][0]["imagePullPolicy"] = "Never"
    small_node.api.post(PODS, json=pod)
    got = small_node.until(
        "never", lambda p: p["status"].get("containerStatuses"), "a container status"
    )
    waiting = got["status"]["containerStatuses"][0]["state"]["waiting"]
    assert waiting == {
        "reason": "ErrImageNeverPull",
        "message": 'Container image "nope:1" is not present with pull policy of Never',
    }


@pytest.mark.parametrize(
    "image", ["durapod:dev", "docker.io/library/durapod:dev", "registry.example/tasks:1"]
)
def test_configured_images_run_under_any_name_of_the_same_reference(
    small_node: Node, image: str
) -> None:
    """Images are matched by their normalised reference, exactly."""
    small_node.api.post(PODS, json=_pod("img", image=image))
    small_node.until("img", _phase("Succeeded"), "run")


def test_a_tagless_name_means_latest_and_does_not_match_a_tag(small_node: Node) -> None:
    """applyDefaultImageTag: ``durapod`` is ``durapod:latest``, which this node lacks."""
    small_node.api.post(PODS, json=_pod("tagless", image="durapod"))
    reasons = _waiting_reasons(small_node, "tagless", 1)
    assert reasons == ["ErrImagePull"]
    event = wait_for(
        lambda: [e for e in small_node.events("tagless") if e["reason"] == "Pulling"], 30, "Pulling"
    )
    assert event[0]["message"] == 'Pulling image "durapod:latest"'


@pytest.mark.parametrize(
    ("resources", "qos"),
    [
        ({"requests": BOTH, "limits": BOTH}, "Guaranteed"),
        ({"limits": BOTH}, "Guaranteed"),
        ({}, "BestEffort"),
        ({"requests": {"memory": "256Mi"}, "limits": BOTH}, "Burstable"),
    ],
)
def test_kubectl_shows_the_qos_class_the_server_recorded(
    local_cluster: LocalCluster, resources: dict[str, Any], qos: str
) -> None:
    """The API server sets status.qosClass at create (PrepareForCreate)."""
    pod = _pod("q")
    pod["spec"]["containers"][0]["resources"] = resources
    local_cluster.kubectl("create", "-f", "-", input=json.dumps(pod))
    shown = local_cluster.kubectl("get", "pod", "q", "-o", "jsonpath={.status.qosClass}")
    assert shown.stdout == qos
