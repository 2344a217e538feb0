"""Drives kubesim with the Python `kubernetes` client: CustomObjectsApi create, status
patch, watch replay from a resourceVersion, DynamicClient discovery, a Secret, delete.
Prints one JSON summary on stdout for the Rust test to check.

Usage: python_custom_objects.py <kubeconfig>
"""

import json
import sys

from kubernetes import client, config, dynamic, watch

GROUP, VERSION, PLURAL, NS = "spillway.dev", "v1alpha1", "exportjobs", "default"


def main() -> None:
    config.load_kube_config(config_file=sys.argv[1])
    api_client = client.ApiClient()
    custom = client.CustomObjectsApi(api_client)
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ExportJob",
        "metadata": {"name": "py-job", "labels": {"from": "python"}},
        "spec": {
            "source": {"url": "http://search:9200", "indices": ["logs-*"]},
            "output": {"destination": {"volume": {"path": "/exports"}}},
        },
    }
    created = custom.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, body)
    start_rv = created["metadata"]["resourceVersion"]

    patched = custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, NS, PLURAL, "py-job", {"status": {"phase": "Running", "progress": "1/4"}}
    )

    events = []
    w = watch.Watch()
    for ev in w.stream(
        custom.list_namespaced_custom_object,
        GROUP,
        VERSION,
        NS,
        PLURAL,
        resource_version=start_rv,
        timeout_seconds=10,
    ):
        if ev["type"] == "BOOKMARK":
            continue
        obj = ev["object"]
        events.append([ev["type"], obj.get("metadata", {}).get("name"), (obj.get("status") or {}).get("phase")])
        if ev["type"] == "MODIFIED":
            w.stop()
            break

    try:
        custom.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, body)
        duplicate = None
    except client.exceptions.ApiException as e:
        duplicate = [e.status, json.loads(e.body)["reason"]]

    try:
        bad = json.loads(json.dumps(body))
        bad["metadata"]["name"] = "py-bad"
        bad["spec"]["source"]["url"] = "ftp://nope"
        custom.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, bad)
        invalid = None
    except client.exceptions.ApiException as e:
        invalid = [e.status, json.loads(e.body)["details"]["causes"][0]["field"]]

    dyn = dynamic.DynamicClient(api_client)
    jobs = dyn.resources.get(api_version=f"{GROUP}/{VERSION}", kind="ExportJob")
    listed = [item.metadata.name for item in jobs.get(namespace=NS, label_selector="from=python").items]

    core = client.CoreV1Api(api_client)
    core.create_namespaced_secret(NS, client.V1Secret(metadata=client.V1ObjectMeta(name="py-secret"), string_data={"k": "v"}))
    secret = core.read_namespaced_secret("py-secret", NS)

    custom.delete_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "py-job")
    try:
        custom.get_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "py-job")
        after_delete = 200
    except client.exceptions.ApiException as e:
        after_delete = e.status

    print(json.dumps({
        "generation": created["metadata"]["generation"],
        "defaulted_format": created["spec"]["output"]["format"],
        "status_phase": patched["status"]["phase"],
        "events": events,
        "duplicate": duplicate,
        "invalid": invalid,
        "dynamic_list": listed,
        "secret_keys": sorted((secret.data or {}).keys()),
        "after_delete": after_delete,
    }))


if __name__ == "__main__":
    main()
