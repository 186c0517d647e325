"""Checks rendered manifests against Pod Security "restricted" (the fields it requires) and
that the state volume and /tmp are the writable mounts of a read-only root filesystem.
Usage: check_pod_security.py RENDERED.yaml; exits non-zero naming every violation."""
import sys

import yaml

WRITABLE = {"/data/count-store", "/tmp"}


def violations(doc):
    if doc.get("kind") not in ("StatefulSet", "Deployment", "DaemonSet", "Job"):
        return
    name = doc["metadata"]["name"]
    pod = doc["spec"]["template"]["spec"]
    pod_security = pod.get("securityContext") or {}
    if pod.get("hostNetwork") or pod.get("hostPID") or pod.get("hostIPC"):
        yield f"{name}: host namespaces"
    if (pod_security.get("seccompProfile") or {}).get("type") not in ("RuntimeDefault", "Localhost"):
        yield f"{name}: pod seccompProfile must be RuntimeDefault"
    for volume in pod.get("volumes") or []:
        if "hostPath" in volume:
            yield f"{name}: hostPath volume {volume['name']}"
    for container in (pod.get("initContainers") or []) + pod["containers"]:
        where = f"{name}/{container['name']}"
        security = container.get("securityContext") or {}
        if not (security.get("runAsNonRoot") or pod_security.get("runAsNonRoot")):
            yield f"{where}: runAsNonRoot must be true"
        if security.get("runAsUser", pod_security.get("runAsUser")) == 0:
            yield f"{where}: runs as user 0"
        if security.get("allowPrivilegeEscalation") is not False:
            yield f"{where}: allowPrivilegeEscalation must be false"
        if security.get("privileged"):
            yield f"{where}: privileged"
        capabilities = security.get("capabilities") or {}
        if "ALL" not in (capabilities.get("drop") or []):
            yield f"{where}: capabilities must drop ALL"
        if set(capabilities.get("add") or []) - {"NET_BIND_SERVICE"}:
            yield f"{where}: adds capabilities {capabilities['add']}"
        if security.get("readOnlyRootFilesystem") is not True:
            yield f"{where}: readOnlyRootFilesystem must be true"
        mounts = {m["mountPath"] for m in container.get("volumeMounts") or [] if not m.get("readOnly")}
        if mounts != WRITABLE:
            yield f"{where}: writable mounts {sorted(mounts)}, expected {sorted(WRITABLE)}"


def main(path):
    docs = [d for d in yaml.safe_load_all(open(path)) if d]
    found = [v for d in docs for v in violations(d)]
    checked = sum(1 for d in docs if d.get("kind") == "StatefulSet")
    if not checked:
        found.append("no StatefulSet rendered")
    for v in found:
        print(f"Pod Security restricted: {v}", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
