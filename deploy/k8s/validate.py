"""Checks the manifests of deploy/k8s, strictly, without a cluster.

1. Every Kubernetes resource against its own schema (kubernetes-validate,
   which carries the upstream JSON schemas), unknown fields being errors.
2. Every Strimzi resource against the CRD schema Strimzi's own generator
   makes from its published model (deploy/k8s/strimzi, see validate.sh),
   made strict the same way.
3. References: every Secret, ConfigMap, PersistentVolumeClaim and KafkaUser a workload
   (Deployment, StatefulSet) names is defined here, made by Strimzi, or one of the
   documented out-of-band Secrets; every Service selects a workload's pods.
   Network policies: a default deny of ingress and of egress, each workload
   reachable only from the namespaces, or the pods of this namespace,
   listed in ALLOWED_CALLERS, and reaching only what ALLOWED_DESTINATIONS
   lists. Pod Security: the namespace enforces `restricted`, and every
   workload meets it. Secrets reach the services as mounted files
   (`*_FILE`), never as environment variables. Trusted proxies are at most
   a /24 (IPv4) or /64 (IPv6). Listeners that carry tokens terminate TLS.
4. Every service's configuration, as its workload gives it (environment,
   args, mounted ConfigMaps), is loaded and checked by the service binary
   itself (`check-config`), with stand-ins for the secrets.

Usage: validate.py MANIFEST_DIR CRD_DIR BIN_DIR
Exit 0 when all passes; 1 with one line per problem otherwise.

Images (deploy/images/check.sh): validate.py --images MANIFEST_DIR BIN_DIR ROOTS_JSON
runs check 4 inside each image instead: ROOTS_JSON maps an image name to
the mounted root file system of a container of it; every image a workload
names must be there, the mounted files are written where the pod would
mount them, and the binary runs in a chroot of that root as user 65532.
"""

import contextlib
import copy
import functools
import ipaddress
import json
import os
import subprocess
import sys
import tempfile

import jsonschema
import kubernetes_validate
import yaml

K8S_VERSION = "1.34.0"
# Secrets an operator makes before applying (deploy/README.md).
OUT_OF_BAND_SECRETS = {
    "hushmap-secrets", "hushmap-payload-keys", "hushmap-dashboard-tokens", "hushmap-dashboard-tls",
    "hushmap-ingest-tls", "hushmap-cluster-secret",
}
BINARIES = {
    "ingest": "hushmap-ingest",
    "aggregate": "hushmap-aggregate",
    "dashboard": "hushmap-dashboard",
    # The batch cluster's roles: `hushmap-cluster scheduler|executor`,
    # whose check is `hushmap-cluster <role> check-config`.
    "scheduler": "hushmap-cluster",
    "executor": "hushmap-cluster",
}
# Binaries whose check-config follows the workload's subcommand (a role)
# rather than replacing it.
ROLE_BINARIES = {"hushmap-cluster"}

problems = []
checked = []


def problem(where, what):
    problems.append(f"{where}: {what}")


def load_resources(manifest_dir):
    resources = []
    for name in sorted(os.listdir(manifest_dir)):
        if not name.endswith(".yaml"):
            continue
        with open(os.path.join(manifest_dir, name)) as f:
            try:
                docs = list(yaml.safe_load_all(f))
            except yaml.YAMLError as e:
                problem(name, f"not YAML: {e}")
                continue
        resources.extend((name, doc) for doc in docs if doc)
    return resources


def strict(schema):
    """A copy of an OpenAPI v3 schema where objects with listed properties
    refuse others (as kubectl's strict field validation does)."""
    schema = copy.deepcopy(schema)

    def walk(s):
        if not isinstance(s, dict):
            return
        if (
            "properties" in s
            and "additionalProperties" not in s
            and not s.get("x-kubernetes-preserve-unknown-fields")
        ):
            s["additionalProperties"] = False
        for key in ("properties", "patternProperties"):
            for sub in s.get(key, {}).values():
                walk(sub)
        for key in ("items", "additionalProperties", "not"):
            walk(s.get(key))
        for key in ("oneOf", "anyOf", "allOf"):
            for sub in s.get(key, []):
                walk(sub)

    walk(schema)
    return schema


def load_crd_schemas(crd_dir):
    """(group/version, kind) -> strict schema, from generated CRD YAMLs."""
    schemas = {}
    for name in sorted(os.listdir(crd_dir)):
        if not name.endswith(".yaml"):
            continue
        with open(os.path.join(crd_dir, name)) as f:
            for crd in yaml.safe_load_all(f):
                if not crd or crd.get("kind") != "CustomResourceDefinition":
                    continue
                spec = crd["spec"]
                for version in spec["versions"]:
                    if not version.get("served", True):
                        continue
                    schema = version["schema"]["openAPIV3Schema"]
                    key = (f"{spec['group']}/{version['name']}", spec["names"]["kind"])
                    schemas[key] = strict(schema)
    return schemas


def kn(doc):
    return f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"


def check_schemas(resources, crd_schemas):
    for file, doc in resources:
        where = f"{file} {kn(doc)}"
        api = doc.get("apiVersion", "")
        if api.startswith("kafka.strimzi.io/"):
            schema = crd_schemas.get((api, doc.get("kind")))
            if schema is None:
                served = sorted(f"{a} {k}" for a, k in crd_schemas)
                problem(where, f"Strimzi serves no {api} {doc.get('kind')} (served: {served})")
                continue
            for error in jsonschema.Draft7Validator(schema).iter_errors(doc):
                path = ".".join(str(p) for p in error.absolute_path)
                problem(where, f"{path}: {error.message}")
        else:
            try:
                kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
            except kubernetes_validate.ValidationError as e:
                path = ".".join(str(p) for p in e.path)
                problem(where, f"{path}: {e.message}")
            except kubernetes_validate.SchemaNotFoundError as e:
                problem(where, f"no schema: {e}")


WORKLOADS = ("Deployment", "StatefulSet")


def check_references(resources):
    by_kind = {}
    for _, doc in resources:
        by_kind.setdefault(doc["kind"], {})[doc["metadata"]["name"]] = doc
    kafka_users = set(by_kind.get("KafkaUser", {}))
    # Strimzi makes a Secret per KafkaUser and `<cluster>-cluster-ca-cert`.
    secrets = (
        set(by_kind.get("Secret", {}))
        | kafka_users
        | {f"{k}-cluster-ca-cert" for k in by_kind.get("Kafka", {})}
        | OUT_OF_BAND_SECRETS
    )
    config_maps = set(by_kind.get("ConfigMap", {}))
    claims = set(by_kind.get("PersistentVolumeClaim", {}))
    deployments = {**by_kind.get("Deployment", {}), **by_kind.get("StatefulSet", {})}
    for name, dep in deployments.items():
        pod = dep["spec"]["template"]["spec"]
        where = f"{dep['kind']}/{name}"
        service_name = dep["spec"].get("serviceName")
        if service_name and service_name not in by_kind.get("Service", {}):
            problem(where, f"serviceName: no Service {service_name}")
        for volume in pod.get("volumes", []):
            if "secret" in volume and volume["secret"]["secretName"] not in secrets:
                problem(where, f"volume {volume['name']}: no Secret {volume['secret']['secretName']}")
            if "configMap" in volume and volume["configMap"]["name"] not in config_maps:
                problem(where, f"volume {volume['name']}: no ConfigMap {volume['configMap']['name']}")
            claim = volume.get("persistentVolumeClaim", {}).get("claimName")
            if claim and claim not in claims:
                problem(where, f"volume {volume['name']}: no PersistentVolumeClaim {claim}")
        for container in pod["containers"]:
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref and ref["name"] not in secrets:
                    problem(where, f"env {env['name']}: no Secret {ref['name']}")
                if env["name"].endswith("SASL_USERNAME") and env["value"] not in kafka_users:
                    problem(where, f"{env['name']}: no KafkaUser {env['value']}")
    for name, svc in by_kind.get("Service", {}).items():
        selector = svc["spec"].get("selector", {})
        if not any(
            selector.items() <= dep["spec"]["template"]["metadata"]["labels"].items()
            for dep in deployments.values()
        ):
            problem(f"Service/{name}", f"selects no workload's pods: {selector}")
    for kind in ("PodDisruptionBudget", "HorizontalPodAutoscaler"):
        for name, obj in by_kind.get(kind, {}).items():
            target = obj["spec"].get("scaleTargetRef", {}).get("name")
            if target and target not in deployments:
                problem(f"{kind}/{name}", f"targets no workload {target}")


# Who may call each workload: the namespaces (by name), or `pod:NAME` for
# the pods of this namespace labelled app.kubernetes.io/name=NAME, and the
# ports. Anything else a policy admits is a problem, and so is a workload
# no policy covers when the namespace does not deny by default.
ALLOWED_CALLERS = {
    "hushmap-ingest": {("ingress-nginx", "http"), ("monitoring", "metrics")},
    "hushmap-dashboard": {("ingress-nginx", "http"), ("ingress-nginx", "flight")},
    "hushmap-aggregate": {("monitoring", "metrics")},
    # The batch cluster holds records and exact counts, and authenticates
    # nobody: its own pods and batch pods only.
    "hushmap-ballista-scheduler": {
        ("pod:hushmap-ballista-executor", "grpc"), ("pod:hushmap-batch", "grpc"),
    },
    # Executors pull their tasks: nobody calls their gRPC port.
    "hushmap-ballista-executor": {
        ("pod:hushmap-ballista-executor", "flight"), ("pod:hushmap-batch", "flight"),
    },
}
KAFKA_CLIENTS = {"hushmap-ingest", "hushmap-aggregate", "hushmap-dashboard"}


def check_network_policies(resources):
    policies = [d for _, d in resources if d["kind"] == "NetworkPolicy"]
    deny_all = any(
        p["spec"].get("podSelector") == {}
        and "Ingress" in p["spec"].get("policyTypes", [])
        and not p["spec"].get("ingress")
        for p in policies
    )
    if not deny_all:
        problem("NetworkPolicy", "no default deny of ingress in the namespace")
    # Policies add up: one more policy selecting a pod opens whatever it
    # allows, whatever the others say. So every policy is either a default
    # deny (no rules at all) or selects exactly one workload of the tables
    # below by its name label, and no rule uses a port range.
    named = set(ALLOWED_CALLERS) | set(ALLOWED_DESTINATIONS)
    for p in policies:
        where = f"NetworkPolicy/{p['metadata']['name']}"
        spec = p["spec"]
        selector = spec.get("podSelector", {})
        is_default_deny = (
            selector in ({}, STRIMZI_EXCEPTED)
            and not spec.get("ingress") and not spec.get("egress")
        )
        selects_one = (
            set(selector) == {"matchLabels"}
            and set(selector["matchLabels"]) == {"app.kubernetes.io/name"}
            and selector["matchLabels"]["app.kubernetes.io/name"] in named
        )
        if not (is_default_deny or selects_one):
            problem(where, f"selects {selector or 'every pod'} with rules: only a default deny, "
                           "or a policy for one known workload, may be here")
        for rule in spec.get("ingress", []) + spec.get("egress", []):
            for port in rule.get("ports", []):
                if "endPort" in port:
                    problem(where, f"a port range {port.get('port')}-{port['endPort']}")
    # A Hushmap pod carrying Strimzi's label would escape the egress deny.
    for _, dep in resources:
        if dep["kind"] in WORKLOADS and "strimzi.io/cluster" in (
            dep["spec"]["template"]["metadata"].get("labels", {})
        ):
            problem(f"{dep['kind']}/{dep['metadata']['name']}",
                    "carries strimzi.io/cluster, which exempts it from default-deny-egress")
    for workload, allowed in ALLOWED_CALLERS.items():
        covering = [
            p for p in policies
            if p["spec"].get("podSelector", {}).get("matchLabels", {})
            .get("app.kubernetes.io/name") == workload
        ]
        if not covering:
            problem(f"NetworkPolicy/{workload}", "no policy admits this workload's callers")
        for p in covering:
            where = f"NetworkPolicy/{p['metadata']['name']}"
            for rule in p["spec"].get("ingress", []):
                sources = rule.get("from")
                ports = [port.get("port") for port in rule.get("ports", [])]
                if not sources:
                    problem(where, "a rule admits every source")
                    continue
                if not ports:
                    problem(where, "a rule admits every port")
                for source in sources:
                    if "ipBlock" in source or "podSelector" in source and "namespaceSelector" in source:
                        problem(where, f"unexpected source {source}")
                        continue
                    if "podSelector" in source:
                        name = (source["podSelector"].get("matchLabels", {})
                                .get("app.kubernetes.io/name"))
                        caller = f"pod:{name}" if name else None
                    else:
                        caller = (source.get("namespaceSelector", {}).get("matchLabels", {})
                                  .get("kubernetes.io/metadata.name"))
                    for port in ports:
                        if (caller, port) not in allowed:
                            problem(where, f"admits {caller or 'every pod or namespace'} to port {port}")
    deny_egress = any(
        "Egress" in p["spec"].get("policyTypes", [])
        and not p["spec"].get("egress")
        and (p["spec"].get("podSelector") == {}
             or p["spec"].get("podSelector") == STRIMZI_EXCEPTED)
        for p in policies
    )
    if not deny_egress:
        problem("NetworkPolicy", "no default deny of egress for Hushmap's pods")
    for workload, allowed in ALLOWED_DESTINATIONS.items():
        covering = [
            p for p in policies
            if p["spec"].get("podSelector", {}).get("matchLabels", {})
            .get("app.kubernetes.io/name") == workload
            and "Egress" in p["spec"].get("policyTypes", [])
        ]
        if not covering:
            problem(f"NetworkPolicy/{workload}", "no policy limits where this workload connects")
        for p in covering:
            where = f"NetworkPolicy/{p['metadata']['name']}"
            for rule in p["spec"].get("egress", []):
                destinations = rule.get("to")
                ports = [port.get("port") for port in rule.get("ports", [])]
                if not destinations:
                    problem(where, "an egress rule reaches every destination")
                    continue
                if not ports:
                    problem(where, "an egress rule reaches every port")
                for to in destinations:
                    target = egress_destination(to)
                    for port in ports:
                        if (target, port) not in allowed:
                            problem(where, f"reaches {target or to} on port {port}")
    kafka = find(resources, "Kafka", "hushmap")
    for listener in kafka["spec"]["kafka"]["listeners"]:
        peers = listener.get("networkPolicyPeers")
        where = f"Kafka/hushmap listener {listener['name']}"
        if not peers:
            problem(where, "no networkPolicyPeers: every pod in the cluster may connect")
            continue
        names = set()
        for peer in peers:
            if set(peer) != {"podSelector"}:
                problem(where, f"a peer beyond this namespace's pods: {peer}")
            names.add(peer.get("podSelector", {}).get("matchLabels", {})
                      .get("app.kubernetes.io/name"))
        if names != KAFKA_CLIENTS:
            problem(where, f"peers {sorted(map(str, names))}, expected {sorted(KAFKA_CLIENTS)}")


# Where each workload may connect: "dns" (the cluster DNS), "kafka" (the
# brokers' TLS listener) or `pod:NAME`, and the port. Anything else an
# egress rule allows (an ipBlock, a namespace, every port) is a problem.
DNS = {("dns", 53)}
KAFKA = {("kafka", 9093)}
ALLOWED_DESTINATIONS = {
    "hushmap-ingest": DNS | KAFKA,
    "hushmap-aggregate": DNS | KAFKA,
    "hushmap-dashboard": DNS | KAFKA,
    "hushmap-ballista-scheduler": DNS,
    "hushmap-ballista-executor": DNS | {
        ("pod:hushmap-ballista-scheduler", 50050), ("pod:hushmap-ballista-executor", 50051),
    },
    "hushmap-batch": DNS | {
        ("pod:hushmap-ballista-scheduler", 50050), ("pod:hushmap-ballista-executor", 50051),
    },
}
# The default deny of egress selects every pod Strimzi does not run.
STRIMZI_EXCEPTED = {"matchExpressions": [{"key": "strimzi.io/cluster", "operator": "DoesNotExist"}]}


def egress_destination(to):
    """What an egress peer names: "dns", "kafka", "pod:NAME", or None."""
    if set(to) == {"namespaceSelector", "podSelector"}:
        ns = to["namespaceSelector"].get("matchLabels", {})
        pods = to["podSelector"].get("matchLabels", {})
        if ns == {"kubernetes.io/metadata.name": "kube-system"} and pods == {"k8s-app": "kube-dns"}:
            return "dns"
        return None
    if set(to) != {"podSelector"}:
        return None
    labels = to["podSelector"].get("matchLabels", {})
    if labels == {"strimzi.io/cluster": "hushmap", "strimzi.io/broker-role": "true"}:
        return "kafka"
    if set(labels) == {"app.kubernetes.io/name"}:
        return f"pod:{labels['app.kubernetes.io/name']}"
    return None


def check_pod_security(resources):
    """The namespace enforces the `restricted` Pod Security Standard, and
    every workload meets it (the rules of its profile that a manifest
    decides)."""
    namespace = find(resources, "Namespace", "hushmap")
    labels = namespace["metadata"].get("labels", {})
    if labels.get("pod-security.kubernetes.io/enforce") != "restricted":
        problem("Namespace/hushmap", "does not enforce the restricted Pod Security Standard")
    for _, dep in resources:
        if dep["kind"] not in WORKLOADS:
            continue
        where = f"{dep['kind']}/{dep['metadata']['name']}"
        pod = dep["spec"]["template"]["spec"]
        pod_sc = pod.get("securityContext", {})
        for key in ("hostNetwork", "hostPID", "hostIPC"):
            if pod.get(key):
                problem(where, f"{key}: true")
        for volume in pod.get("volumes", []):
            if "hostPath" in volume:
                problem(where, f"volume {volume['name']}: hostPath")
        for container in pod["containers"] + pod.get("initContainers", []):
            sc = container.get("securityContext", {})
            here = f"{where} container {container['name']}"
            if not (sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True):
                problem(here, "runAsNonRoot is not true")
            if sc.get("runAsUser", pod_sc.get("runAsUser")) == 0:
                problem(here, "runs as user 0")
            seccomp = sc.get("seccompProfile", pod_sc.get("seccompProfile", {})).get("type")
            if seccomp not in ("RuntimeDefault", "Localhost"):
                problem(here, "no RuntimeDefault seccomp profile")
            if sc.get("allowPrivilegeEscalation") is not False:
                problem(here, "allowPrivilegeEscalation is not false")
            if sc.get("privileged"):
                problem(here, "privileged")
            caps = sc.get("capabilities", {})
            if "ALL" not in caps.get("drop", []):
                problem(here, "does not drop ALL capabilities")
            if set(caps.get("add", [])) - {"NET_BIND_SERVICE"}:
                problem(here, f"adds capabilities {caps['add']}")
            if any(port.get("hostPort") for port in container.get("ports", [])):
                problem(here, "a hostPort")


# The secret variables every service reads, which may also come as files.
SECRET_VARIABLES = {
    "HUSHMAP_PAYLOAD_KEYS", "HUSHMAP_CONTRIBUTOR_SECRET", "HUSHMAP_KAFKA_SASL_PASSWORD",
    "HUSHMAP_PAYLOAD_PUBLIC_KEY", "HUSHMAP_CLUSTER_SECRET",
}


def check_secrets_as_files(resources):
    """Secrets reach a service as files of a mounted Secret (`*_FILE`),
    never as environment variables: those show in `kubectl describe`,
    crash reports and every child process's environment."""
    for _, dep in resources:
        if dep["kind"] not in WORKLOADS:
            continue
        where = f"{dep['kind']}/{dep['metadata']['name']}"
        for container in dep["spec"]["template"]["spec"]["containers"]:
            for env in container.get("env", []):
                if "secretKeyRef" in env.get("valueFrom", {}):
                    problem(where, f"env {env['name']} from a Secret: mount it and set {env['name']}_FILE")
                elif env["name"] in SECRET_VARIABLES:
                    problem(where, f"env {env['name']} holds a secret inline: use {env['name']}_FILE")
            for source in container.get("envFrom", []):
                if "secretRef" in source:
                    problem(where, f"envFrom Secret {source['secretRef'].get('name')}")


def check_trusted_proxies(resources):
    """Trusted proxies are the ingress controller's pods, not a network:
    any address in the range may forge the client address."""
    for _, dep in resources:
        if dep["kind"] not in WORKLOADS:
            continue
        where = f"{dep['kind']}/{dep['metadata']['name']}"
        for container in dep["spec"]["template"]["spec"]["containers"]:
            for env in container.get("env", []):
                if not env["name"].endswith("TRUSTED_PROXIES"):
                    continue
                if "value" not in env:
                    problem(where, f"{env['name']}: not a literal value, so it cannot be checked")
                    continue
                for cidr in json.loads(env["value"]):
                    net = ipaddress.ip_network(cidr, strict=False)
                    widest = 24 if net.version == 4 else 64
                    if net.prefixlen < widest:
                        problem(where, f"{env['name']}: {cidr} trusts more than a /{widest} to name clients")


# The aggregator's private payload keys open every record on the submissions
# topic: only the aggregator may hold them. Ingest seals to the public key.
PRIVATE_PAYLOAD_SECRET = "hushmap-payload-keys"
PAYLOAD_KEY_HOLDERS = {"hushmap-aggregate"}


# Listeners that carry access tokens must terminate TLS themselves, so a
# token never crosses the cluster network in clear.
TLS_TERMINATORS = {
    "hushmap-dashboard": "HUSHMAP_DASHBOARD_TLS__",
    # ID tokens and answers, behind an ingress that re-encrypts.
    "hushmap-ingest": "HUSHMAP_INGEST_TLS__",
}


def check_tls(resources):
    for _, dep in resources:
        name = dep["metadata"]["name"]
        if dep["kind"] not in WORKLOADS or name not in TLS_TERMINATORS:
            continue
        prefix = TLS_TERMINATORS[name]
        container = dep["spec"]["template"]["spec"]["containers"][0]
        names = {e["name"] for e in container.get("env", [])}
        for setting in ("CERT_FILE", "KEY_FILE"):
            if prefix + setting not in names:
                problem(f"{dep['kind']}/{name}", f"no {prefix}{setting}: its tokens would cross the network in clear")
        for probe in ("readinessProbe", "livenessProbe"):
            get = container.get(probe, {}).get("httpGet")
            if get and get.get("scheme") != "HTTPS":
                problem(f"{dep['kind']}/{name}", f"{probe} speaks plain HTTP to a TLS port")


def check_payload_keys(resources):
    for _, dep in resources:
        if dep["kind"] not in WORKLOADS:
            continue
        name = dep["metadata"]["name"]
        pod = dep["spec"]["template"]["spec"]
        refs = []
        for container in pod["containers"]:
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if env["name"].startswith("HUSHMAP_PAYLOAD_KEYS"):
                    refs.append(f"env {env['name']}")
                elif ref and ref["name"] == PRIVATE_PAYLOAD_SECRET:
                    refs.append(f"env {env['name']} from Secret {PRIVATE_PAYLOAD_SECRET}")
            for source in container.get("envFrom", []):
                if source.get("secretRef", {}).get("name") == PRIVATE_PAYLOAD_SECRET:
                    refs.append(f"envFrom Secret {PRIVATE_PAYLOAD_SECRET}")
        for volume in pod.get("volumes", []):
            if volume.get("secret", {}).get("secretName") == PRIVATE_PAYLOAD_SECRET:
                refs.append(f"volume {volume['name']}")
        if name in PAYLOAD_KEY_HOLDERS:
            if not refs:
                problem(f"{dep['kind']}/{name}", "holds no private payload key")
        else:
            for ref in refs:
                problem(f"{dep['kind']}/{name}", f"holds the aggregator's private payload keys ({ref})")


# Each stand-in is made once by the binaries themselves (every check run
# and every self-test variant needs the same ones).
@functools.cache
def tool_output(bin_dir, binary, *args, stdin=None):
    out = subprocess.run(
        [os.path.join(bin_dir, binary), *args],
        input=stdin, check=True, capture_output=True, text=True,
    )
    return out.stdout


def tool_output_env(bin_dir, env, binary, *args):
    out = subprocess.run(
        [os.path.join(bin_dir, binary), *args],
        env={"PATH": os.environ.get("PATH", ""), **env},
        check=True, capture_output=True, text=True,
    )
    return out.stdout


def stand_in_secret(env_name, bin_dir):
    if env_name == "HUSHMAP_PAYLOAD_KEYS":
        return tool_output(bin_dir, "hushmap-aggregate", "generate-payload-key", "--id", "1").strip()
    if env_name == "HUSHMAP_PAYLOAD_PUBLIC_KEY":
        private = stand_in_secret("HUSHMAP_PAYLOAD_KEYS", bin_dir)
        return tool_output_env(
            bin_dir, {"HUSHMAP_PAYLOAD_KEYS": private}, "hushmap-aggregate", "payload-public-key"
        ).strip()
    if env_name == "HUSHMAP_CONTRIBUTOR_SECRET":
        return "stand-in-contributor-secret-0123456789abcdef"
    if env_name == "HUSHMAP_CLUSTER_SECRET":
        return "stand-in-cluster-secret-0123456789abcdef"
    return "stand-in-secret-value"


@functools.cache
def stand_in_tls_pair():
    """A self-signed certificate and its key (PEM), made by openssl."""
    with tempfile.TemporaryDirectory() as d:
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-days", "1", "-subj", "/CN=hushmap-dashboard",
             "-keyout", f"{d}/tls.key", "-out", f"{d}/tls.crt"],
            check=True, capture_output=True,
        )
        return {name: open(f"{d}/{name}").read() for name in ("tls.crt", "tls.key")}


# What a Secret's file holds, as the variable it stands for.
SECRET_FILES = {
    ("hushmap-secrets", "contributor-secret"): "HUSHMAP_CONTRIBUTOR_SECRET",
    ("hushmap-secrets", "payload-public-key"): "HUSHMAP_PAYLOAD_PUBLIC_KEY",
    ("hushmap-payload-keys", "payload-keys"): "HUSHMAP_PAYLOAD_KEYS",
    ("hushmap-cluster-secret", "secret"): "HUSHMAP_CLUSTER_SECRET",
}


def stand_in_file(volume, key, bin_dir, config_maps):
    if "configMap" in volume:
        return config_maps[volume["configMap"]["name"]]["data"][key]
    name = volume["secret"]["secretName"]
    if name in ("hushmap-dashboard-tls", "hushmap-ingest-tls"):
        return stand_in_tls_pair()[key]
    if (name, key) in SECRET_FILES:
        return stand_in_secret(SECRET_FILES[(name, key)], bin_dir) + "\n"
    if volume["secret"]["secretName"] == "hushmap-dashboard-tokens":
        return tool_output(
            bin_dir, "hushmap-dashboard", "hash-token", "--roles", "analyst",
            stdin="stand-in-token-0123456789\n",
        )
    return "stand-in file\n"


def check_service_configs(resources, bin_dir, image_roots=None):
    config_maps = {d["metadata"]["name"]: d for _, d in resources if d["kind"] == "ConfigMap"}
    for _, dep in resources:
        if dep["kind"] not in WORKLOADS:
            continue
        pod = dep["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for container in pod["containers"]:
            where = f"{dep['kind']}/{dep['metadata']['name']} container {container['name']}"
            binary = BINARIES.get(container["name"])
            if binary is None:
                problem(where, "no Hushmap binary of that name")
                continue
            if image_roots is None:
                scratch = tempfile.TemporaryDirectory()
            elif container["image"] in image_roots:
                scratch = contextlib.nullcontext(image_roots[container["image"]])
            else:
                problem(where, f"names image {container['image']}, which deploy/images/build.sh does not make")
                continue
            with scratch as root:
                # Mounted files materialised under a scratch root (or, in an
                # image, where the pod mounts them).
                remap = {}
                for mount in container.get("volumeMounts", []):
                    volume = volumes[mount["name"]]
                    target = root + mount["mountPath"]
                    if "emptyDir" in volume or "persistentVolumeClaim" in volume:
                        os.makedirs(target, exist_ok=True)
                        if image_roots is not None:
                            os.chown(target, 65532, 65532)
                    elif "subPath" in mount:
                        os.makedirs(os.path.dirname(target), exist_ok=True)
                        with open(target, "w") as f:
                            f.write(stand_in_file(volume, mount["subPath"], bin_dir, config_maps))
                    else:
                        os.makedirs(target, exist_ok=True)
                        source = volume.get("secret") or volume.get("configMap")
                        keys = [i["path"] for i in source.get("items", [])] or ["tokens"]
                        for key in keys:
                            with open(os.path.join(target, key), "w") as f:
                                f.write(stand_in_file(volume, key, bin_dir, config_maps))
                    if image_roots is None:
                        remap[mount["mountPath"]] = target

                def local(value):
                    for mount_path, target in remap.items():
                        if value.startswith(mount_path):
                            return target + value[len(mount_path):]
                    return value

                env = {"PATH": os.environ.get("PATH", "")}
                for e in container.get("env", []):
                    if "valueFrom" in e:
                        env[e["name"]] = stand_in_secret(e["name"], bin_dir)
                    else:
                        env[e["name"]] = local(e["value"])
                args = [local(a) for a in container.get("args", [])]
                # The Deployment's subcommand (if any) becomes check-config,
                # or (a role) is followed by it.
                if args and not args[0].startswith("-") and binary not in ROLE_BINARIES:
                    args = args[1:]
                if image_roots is None:
                    command = [os.path.join(bin_dir, binary), *args, "check-config"]
                else:
                    command = ["chroot", "--userspec=65532:65532", root,
                               f"/usr/local/bin/{binary}", *args, "check-config"]
                run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
                said = (run.stdout + run.stderr).strip()
                if run.returncode != 0 or "configuration ok" not in said:
                    problem(where, f"{binary} refused its configuration: {said}")
                else:
                    inside = f" in {container['image']}" if image_roots is not None else ""
                    checked.append(f"{where}: {binary} check-config ok{inside}")


def find(resources, kind, name):
    return next(d for _, d in resources if d["kind"] == kind and d["metadata"]["name"] == name)


def container_env_list(resources, workload):
    found = next(d for _, d in resources
                 if d["kind"] in WORKLOADS and d["metadata"]["name"] == workload)
    return found["spec"]["template"]["spec"]["containers"][0]["env"]


def volume(resources, workload, name):
    found = next(d for _, d in resources
                 if d["kind"] in WORKLOADS and d["metadata"]["name"] == workload)
    return next(v for v in found["spec"]["template"]["spec"]["volumes"] if v["name"] == name)


def container_env(resources, workload, name):
    found = next(d for _, d in resources
                 if d["kind"] in WORKLOADS and d["metadata"]["name"] == workload)
    pod = found["spec"]["template"]["spec"]
    return next(e for e in pod["containers"][0]["env"] if e["name"] == name)


# Broken copies of the manifests that every check must refuse, so a check
# that passes everything is caught: (what, mutation).
MUTATIONS = [
    ("unknown Strimzi field",
     lambda r: find(r, "Kafka", "hushmap")["spec"]["kafka"].__setitem__("replicaz", 3)),
    ("misspelt ACL key",
     lambda r: find(r, "KafkaUser", "hushmap-ingest")["spec"]["authorization"]["acls"][0]
     .__setitem__("operationz", ["Read"])),
    ("wrong Strimzi type",
     lambda r: find(r, "KafkaTopic", "hushmap.submissions.v1")["spec"].__setitem__("partitions", "12")),
    ("unknown Kubernetes field",
     lambda r: find(r, "Deployment", "hushmap-ingest")["spec"]["template"]["spec"]["containers"][0]
     .__setitem__("imagePullPolicyy", "Always")),
    ("Service selecting nothing",
     lambda r: find(r, "Service", "hushmap-ingest")["spec"]["selector"]
     .__setitem__("app.kubernetes.io/name", "nobody")),
    ("StatefulSet governed by no Service",
     lambda r: find(r, "StatefulSet", "hushmap-aggregate")["spec"].__setitem__("serviceName", "nobody")),
    ("Secret nobody makes",
     lambda r: volume(r, "hushmap-aggregate", "kafka-user")["secret"].__setitem__("secretName", "nobody")),
    ("plaintext to the remote brokers (refused by ingest itself)",
     lambda r: container_env(r, "hushmap-ingest", "HUSHMAP_INGEST_KAFKA__SECURITY__PROTOCOL")
     .__setitem__("value", "plaintext")),
    ("partitioned aggregators without a schedule epoch (refused by the aggregator itself)",
     lambda r: find(r, "ConfigMap", "hushmap-aggregate")["data"].__setitem__(
         "aggregate.toml",
         find(r, "ConfigMap", "hushmap-aggregate")["data"]["aggregate.toml"]
         .replace('schedule_epoch = "2027-01-01"', ""))),
    ("an HMAC key among the identity provider's keys (refused by ingest itself)",
     lambda r: find(r, "ConfigMap", "hushmap-idp-keys")["data"].__setitem__(
         "jwks.json", '{"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "x"}]}')),
    ("no default deny in the namespace",
     lambda r: r.remove(next(x for x in r if x[1]["kind"] == "NetworkPolicy"
                             and x[1]["metadata"]["name"] == "default-deny-ingress"))),
    ("the dashboard's Flight port open to every namespace",
     lambda r: find(r, "NetworkPolicy", "hushmap-dashboard")["spec"]["ingress"][0]["from"][0]
     .__setitem__("namespaceSelector", {})),
    ("aggregate's metrics open to the ingress namespace",
     lambda r: find(r, "NetworkPolicy", "hushmap-aggregate")["spec"]["ingress"][0]["from"][0]
     ["namespaceSelector"]["matchLabels"].__setitem__("kubernetes.io/metadata.name", "ingress-nginx")),
    ("Kafka's listener open to every pod",
     lambda r: find(r, "Kafka", "hushmap")["spec"]["kafka"]["listeners"][0].pop("networkPolicyPeers")),
    ("ingest given the aggregator's private payload keys",
     lambda r: find(r, "Deployment", "hushmap-ingest")["spec"]["template"]["spec"]["containers"][0]
     ["env"].append(copy.deepcopy(container_env(r, "hushmap-aggregate", "HUSHMAP_PAYLOAD_KEYS_FILE")))),
    ("ingest mounting the private payload key Secret as a file",
     lambda r: find(r, "Deployment", "hushmap-ingest")["spec"]["template"]["spec"]
     .setdefault("volumes", []).append(
         {"name": "payload", "secret": {"secretName": "hushmap-payload-keys"}})),
    ("the dashboard serving its tokens without TLS",
     lambda r: find(r, "Deployment", "hushmap-dashboard")["spec"]["template"]["spec"]["containers"][0]
     ["env"].remove(container_env(r, "hushmap-dashboard", "HUSHMAP_DASHBOARD_TLS__KEY_FILE"))),
    ("the dashboard's key file naming something that is no key (refused by the dashboard itself)",
     lambda r: find(r, "Deployment", "hushmap-dashboard")["spec"]["template"]["spec"]["containers"][0]
     ["env"].__setitem__(
         next(i for i, e in enumerate(container_env_list(r, "hushmap-dashboard"))
              if e["name"] == "HUSHMAP_DASHBOARD_TLS__KEY_FILE"),
         {"name": "HUSHMAP_DASHBOARD_TLS__KEY_FILE", "value": "/etc/hushmap/tokens/tokens"})),
    ("misspelt privacy setting (refused by the aggregator itself)",
     lambda r: find(r, "ConfigMap", "hushmap-aggregate")["data"].__setitem__(
         "aggregate.toml",
         find(r, "ConfigMap", "hushmap-aggregate")["data"]["aggregate.toml"]
         .replace("epsilon_per_window", "epsilon_per_windw"))),
    ("the batch cluster's executors open to every namespace",
     lambda r: find(r, "NetworkPolicy", "hushmap-ballista-executor")["spec"]["ingress"][0]["from"]
     .__setitem__(0, {"namespaceSelector": {}})),
    ("the batch scheduler reachable from ingest's pods",
     lambda r: find(r, "NetworkPolicy", "hushmap-ballista-scheduler")["spec"]["ingress"][0]["from"]
     .append({"podSelector": {"matchLabels": {"app.kubernetes.io/name": "hushmap-ingest"}}})),
    ("the executors mounting a claim that does not exist",
     lambda r: find(r, "StatefulSet", "hushmap-ballista-executor")["spec"]["template"]["spec"]
     ["volumes"][1]["persistentVolumeClaim"].__setitem__("claimName", "nobody")),
    ("the namespace without Pod Security enforcement",
     lambda r: find(r, "Namespace", "hushmap")["metadata"]["labels"]
     .pop("pod-security.kubernetes.io/enforce")),
    ("an ingest container that may escalate its privileges",
     lambda r: find(r, "Deployment", "hushmap-ingest")["spec"]["template"]["spec"]["containers"][0]
     ["securityContext"].__setitem__("allowPrivilegeEscalation", True)),
    ("no default deny of egress",
     lambda r: r.remove(next(x for x in r if x[1]["kind"] == "NetworkPolicy"
                             and x[1]["metadata"]["name"] == "default-deny-egress"))),
    ("ingest's policy without egress rules",
     lambda r: find(r, "NetworkPolicy", "hushmap-ingest")["spec"].__setitem__("policyTypes", ["Ingress"])),
    ("the dashboard allowed to connect anywhere",
     lambda r: find(r, "NetworkPolicy", "hushmap-dashboard")["spec"]["egress"].append(
         {"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": [{"port": 443}]})),
    ("the whole cluster network trusted to name clients",
     lambda r: container_env(r, "hushmap-ingest", "HUSHMAP_INGEST_RATE_LIMIT__TRUSTED_PROXIES")
     .__setitem__("value", '["10.0.0.0/8"]')),
    ("ingest serving ID tokens without TLS",
     lambda r: container_env_list(r, "hushmap-ingest").remove(
         container_env(r, "hushmap-ingest", "HUSHMAP_INGEST_TLS__CERT_FILE"))),
    ("the contributor secret as an environment variable",
     lambda r: container_env(r, "hushmap-ingest", "HUSHMAP_CONTRIBUTOR_SECRET_FILE").clear()
     or container_env_list(r, "hushmap-ingest").__setitem__(
         next(i for i, e in enumerate(container_env_list(r, "hushmap-ingest")) if not e),
         {"name": "HUSHMAP_CONTRIBUTOR_SECRET",
          "valueFrom": {"secretKeyRef": {"name": "hushmap-secrets", "key": "contributor-secret"}}})),
    ("the batch scheduler taking plans from anyone (refused by hushmap-cluster itself)",
     lambda r: container_env_list(r, "hushmap-ballista-scheduler").remove(
         container_env(r, "hushmap-ballista-scheduler", "HUSHMAP_CLUSTER_SECRET_FILE"))),
    ("one more policy opening every pod both ways",
     lambda r: r.append(("extra.yaml", {
         "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
         "metadata": {"name": "allow-all", "namespace": "hushmap"},
         "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"],
                  "ingress": [{}], "egress": [{}]}}))),
    ("a policy selecting pods by another label",
     lambda r: r.append(("extra.yaml", {
         "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
         "metadata": {"name": "by-part-of", "namespace": "hushmap"},
         "spec": {"podSelector": {"matchLabels": {"app.kubernetes.io/part-of": "hushmap"}},
                  "policyTypes": ["Egress"],
                  "egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}]}}))),
    ("ingest's Kafka rule widened to a port range",
     lambda r: next(rule for rule in find(r, "NetworkPolicy", "hushmap-ingest")["spec"]["egress"]
                    if rule["ports"][0]["port"] == 9093)["ports"][0].__setitem__("endPort", 65535)),
    ("trusted proxies from a ConfigMap, beyond the check",
     lambda r: container_env(r, "hushmap-ingest", "HUSHMAP_INGEST_RATE_LIMIT__TRUSTED_PROXIES")
     .update({"valueFrom": {"configMapKeyRef": {"name": "hushmap-aggregate", "key": "x"}}})
     or container_env(r, "hushmap-ingest", "HUSHMAP_INGEST_RATE_LIMIT__TRUSTED_PROXIES").pop("value")),
    ("ingest's pods labelled as Strimzi's, out of the egress deny",
     lambda r: find(r, "Deployment", "hushmap-ingest")["spec"]["template"]["metadata"]
     .__setitem__("labels", {**find(r, "Deployment", "hushmap-ingest")["spec"]["template"]
                             ["metadata"]["labels"], "strimzi.io/cluster": "hushmap"})),
    ("an executor without memory to count in (refused by hushmap-cluster itself)",
     lambda r: container_env(r, "hushmap-ballista-executor", "HUSHMAP_CLUSTER_MEMORY_LIMIT_MB")
     .__setitem__("value", "1")),
]


def check_all(resources, crd_schemas, bin_dir):
    check_schemas(resources, crd_schemas)
    check_references(resources)
    check_network_policies(resources)
    check_payload_keys(resources)
    check_tls(resources)
    check_pod_security(resources)
    check_secrets_as_files(resources)
    check_trusted_proxies(resources)
    check_service_configs(resources, bin_dir)


def self_test(resources, crd_schemas, bin_dir):
    """Every mutation must be refused; returns the ones that were not."""
    missed = []
    for what, mutate in MUTATIONS:
        broken = copy.deepcopy(resources)
        mutate(broken)
        problems.clear()
        check_all(broken, crd_schemas, bin_dir)
        if not problems:
            missed.append(what)
    problems.clear()
    return missed


def check_images(manifest_dir, bin_dir, roots_json):
    """Check 4 inside the images; and a manifest naming an image not
    built must be refused."""
    resources = load_resources(manifest_dir)
    with open(roots_json) as f:
        image_roots = json.load(f)
    broken = copy.deepcopy(resources)
    workload = next(d for _, d in broken if d["kind"] in WORKLOADS)
    container = workload["spec"]["template"]["spec"]["containers"][0]
    container["image"] = container["image"].rsplit(":", 1)[0] + ":0.0.0-not-built"
    check_service_configs(broken, bin_dir, image_roots)
    if not any("does not make" in p for p in problems):
        print("images: a manifest naming an image that is not built was let through")
        sys.exit(1)
    problems.clear()
    checked.clear()
    check_service_configs(resources, bin_dir, image_roots)
    if problems:
        for p in problems:
            print(f"images: {p}")
        sys.exit(1)
    for line in checked:
        print(f"images: {line}")


def main():
    if sys.argv[1] == "--images":
        check_images(*sys.argv[2:5])
        return
    manifest_dir, crd_dir, bin_dir = sys.argv[1:4]
    resources = load_resources(manifest_dir)
    if problems:
        print("\n".join(f"k8s: {p}" for p in problems))
        sys.exit(1)
    crd_schemas = load_crd_schemas(crd_dir)
    missed = self_test(resources, crd_schemas, bin_dir)
    if missed:
        print(f"k8s: the checks let broken manifests through: {missed}")
        sys.exit(1)
    print(f"k8s: self-test: all {len(MUTATIONS)} broken variants refused")
    check_schemas(resources, crd_schemas)
    check_references(resources)
    check_network_policies(resources)
    check_payload_keys(resources)
    check_tls(resources)
    check_pod_security(resources)
    check_secrets_as_files(resources)
    check_trusted_proxies(resources)
    check_service_configs(resources, bin_dir)
    kinds = sorted({d["kind"] for _, d in resources})
    if problems:
        for p in problems:
            print(f"k8s: {p}")
        print(f"k8s: {len(problems)} problems in {len(resources)} resources")
        sys.exit(1)
    for line in checked[-3:]:
        print(f"k8s: {line}")
    print(
        f"k8s: {len(resources)} resources valid (Kubernetes {K8S_VERSION}, "
        f"{len(crd_schemas)} Strimzi schemas, strict): {', '.join(kinds)}"
    )


if __name__ == "__main__":
    main()
