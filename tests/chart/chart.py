"""Helm and YAML plumbing for tests/chart.rs, run with the repository's venv (.work/venv).

Each subcommand reads a JSON request on stdin (where it takes one) and prints one JSON document
on stdout, so the Rust tests do all the asserting:

  render      {"cases": {name: {"values": {...}, "release": str, "namespace": str}}}
              -> {name: {"ok": true, "files": {template path: text}, "objects": [...]}
                  | {"ok": false, "error": str}}
              (objects: every rendered Kubernetes object, each with "_source": template path)
  lint        {"cases": {name: {"values": {...}}}, "kube_versions": [str]}
              -> {name: {kube version: helm lint report (strict)}}
  schema      {"cases": {name: values}} -> {name: {"ok": bool, "error": str}}
  yaml2json   {"files": [path]} -> {path: [every non-empty YAML document]}
  crd-schema  {"crd": path, "out": path}: writes the CRD's openAPIV3Schema as a JSON Schema in
              which every object with `properties` refuses unknown fields (what the API server's
              strict field validation does) -> {"written": path}
  gen-base    {"out": dir, "namespace": str}: writes the kustomize base from the chart's default
              rendering -> {"written": [paths]}
"""

import json
import os
import sys

import helm_python as helm
import yaml

CHART = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "charts", "spillway")

# Labels only Helm sets; the kustomize base leaves them out (or says kustomize instead).
HELM_ONLY_LABELS = {"helm.sh/chart"}
MANAGED_BY = "app.kubernetes.io/managed-by"


class KubeLoader(yaml.SafeLoader):
    """YAML as Kubernetes reads it: timestamps stay strings (sigs.k8s.io/yaml does the same)."""


KubeLoader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def load_all(text):
    return [d for d in yaml.load_all(text, Loader=KubeLoader) if d]


def render(req):
    out = {}
    with helm.Chart.load(CHART) as chart:
        for name, case in req["cases"].items():
            try:
                files = chart.render(
                    case.get("values", {}),
                    name=case.get("release", "spillway"),
                    namespace=case.get("namespace", "spillway-system"),
                )
            except helm.HelmError as e:
                out[name] = {"ok": False, "error": str(e)}
                continue
            objects = []
            for path, text in sorted(files.items()):
                if path.endswith("NOTES.txt"):
                    continue
                for doc in load_all(text):
                    doc["_source"] = path
                    objects.append(doc)
            out[name] = {"ok": True, "files": files, "objects": objects}
    return out


def lint(req):
    out = {}
    for name, case in req["cases"].items():
        out[name] = {}
        for kv in req["kube_versions"]:
            out[name][kv] = helm.lint(CHART, case.get("values", {}), strict=True, kube_version=kv)
    return out


def schema(req):
    out = {}
    with helm.Chart.load(CHART) as chart:
        for name, values in req["cases"].items():
            try:
                chart.validate_schema(values)
                out[name] = {"ok": True, "error": ""}
            except helm.HelmError as e:
                out[name] = {"ok": False, "error": str(e)}
    return out


def yaml2json(req):
    out = {}
    for path in req["files"]:
        with open(path) as f:
            out[path] = load_all(f.read())
    return out


def close_objects(node):
    if isinstance(node, dict):
        if "properties" in node and "additionalProperties" not in node:
            node["additionalProperties"] = False
        for v in node.values():
            close_objects(v)
    elif isinstance(node, list):
        for v in node:
            close_objects(v)


def crd_schema(req):
    with open(req["crd"]) as f:
        (crd,) = load_all(f.read())
    (version,) = [v for v in crd["spec"]["versions"] if v.get("storage")]
    root = version["schema"]["openAPIV3Schema"]
    close_objects(root)
    # apiVersion, kind and metadata are the API server's; the schema describes the rest.
    root.setdefault("properties", {})
    group = crd["spec"]["group"]
    root["properties"]["apiVersion"] = {"type": "string", "const": f"{group}/{version['name']}"}
    root["properties"]["kind"] = {"type": "string", "const": crd["spec"]["names"]["kind"]}
    root["properties"]["metadata"] = {"type": "object"}
    root["required"] = sorted(set(root.get("required", [])) | {"apiVersion", "kind", "metadata", "spec"})
    root["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    with open(req["out"], "w") as f:
        json.dump(root, f, indent=1)
    return {"written": req["out"]}


def base_object(obj):
    obj = dict(obj)
    obj.pop("_source", None)
    meta = obj["metadata"]
    meta.pop("namespace", None)  # kustomization.yaml sets it

    def fix(labels):
        for k in HELM_ONLY_LABELS:
            labels.pop(k, None)
        if MANAGED_BY in labels:
            labels[MANAGED_BY] = "kustomize"

    fix(meta.get("labels", {}))
    # Bindings' ServiceAccount subjects: kustomize's namespace transformer fills them in, so an
    # overlay with another namespace moves them along.
    for subject in obj.get("subjects", []):
        if subject.get("kind") == "ServiceAccount":
            subject.pop("namespace", None)
    tmpl = obj.get("spec", {}).get("template", {}).get("metadata", {})
    fix(tmpl.get("labels", {}))
    return obj


def gen_base(req):
    """The base is the chart's default rendering with Helm's own labels dropped and the
    namespace left to kustomize; the CRD stays in manifests/crds/ (applied first)."""
    with helm.Chart.load(CHART) as chart:
        files = chart.render({}, name="spillway", namespace=req["namespace"])
    written = []
    resources = ["namespace.yaml"]
    os.makedirs(req["out"], exist_ok=True)
    header = (
        "# Generated from charts/spillway (default values) by `tests/chart/chart.py gen-base`;\n"
        "# edit the chart and regenerate (see manifests/base/README.md).\n"
    )
    ns = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": req["namespace"],
            "labels": {
                "app.kubernetes.io/part-of": "spillway",
                "pod-security.kubernetes.io/enforce": "restricted",
                "pod-security.kubernetes.io/enforce-version": "latest",
            },
        },
    }
    path = os.path.join(req["out"], "namespace.yaml")
    with open(path, "w") as f:
        f.write(header + yaml.safe_dump(ns, sort_keys=False))
    written.append(path)
    for tpl, text in sorted(files.items()):
        if tpl.endswith("NOTES.txt") or "/crds/" in tpl:
            continue
        docs = [base_object(d) for d in load_all(text)]
        if not docs:
            continue
        rel = tpl.split("/templates/", 1)[1].replace("/", "-")
        path = os.path.join(req["out"], rel)
        with open(path, "w") as f:
            f.write(header + yaml.safe_dump_all(docs, sort_keys=False))
        written.append(path)
        resources.append(rel)
    kust = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "namespace": req["namespace"],
        "resources": resources,
    }
    path = os.path.join(req["out"], "kustomization.yaml")
    with open(path, "w") as f:
        f.write(header + yaml.safe_dump(kust, sort_keys=False))
    written.append(path)
    return {"written": written}


COMMANDS = {
    "render": render,
    "lint": lint,
    "schema": schema,
    "yaml2json": yaml2json,
    "crd-schema": crd_schema,
    "gen-base": gen_base,
}


def main():
    if len(sys.argv) != 2 or sys.argv[1] not in COMMANDS:
        sys.exit(f"usage: chart.py {{{'|'.join(COMMANDS)}}} < request.json")
    req = json.load(sys.stdin)
    json.dump(COMMANDS[sys.argv[1]](req), sys.stdout)


if __name__ == "__main__":
    main()
