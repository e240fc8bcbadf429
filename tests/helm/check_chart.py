#!/usr/bin/env python3
"""Lints and renders helm/rowcast with Helm's own engine and validates every object.

Usage: check_chart.py <chart dir> <output dir>
       check_chart.py --check-tools   (exit 0 when every package below imports)

For each scenario (required values only; every optional part enabled; inline public key):
  - `helm lint --strict` with those values: no warnings, no errors;
  - render with the Helm engine, parse every manifest, validate it against the Kubernetes
    1.30 schemas (strict: unknown fields are errors); the ServiceMonitor (a CRD) against the
    prometheus-operator fields the chart uses;
  - check the chart's promises (probes, security context, grace period, hooks, ...);
  - write the rendered rowcast.toml to <output dir>/<scenario>.toml, so that the Rust test
    can load it with rowcast's own configuration loader.
Then values that cannot work must be refused with a message saying what to set.
Exit status 0 when everything holds; 1 with the list of failures otherwise; 2 when a
required package is missing (tests/helm/requirements.txt; the Rust test installs them
with pip into target/test-python when they are); 64 for bad arguments.
"""

import json
import os
import sys

K8S_VERSION = "1.30.0"

try:
    import helm_python
    import jsonschema
    import kubernetes_validate
    import yaml
except ImportError as e:  # pragma: no cover - the message is the point
    print(
        f"missing Python package: {e.name}. Install the chart test tools with\n"
        "  pip install -r tests/helm/requirements.txt",
        file=sys.stderr,
    )
    sys.exit(2)

SECRET = "an-hs256-secret-of-32-bytes-long"
PEM = """-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEq0bQ6bXz1V0d7Yk9x6Qh3cW2bMZ0
e1bYV3b9s0wXqkqL0D3o7XrV9T1b6xV8pQv3GmV7o9yT9bq3cV1T0Yk1Jw==
-----END PUBLIC KEY-----
"""

REQUIRED = {"database": {"url": "postgres://rowcast:pw@db:5432/helpdesk"}, "jwt": {"secret": SECRET}}

EVERYTHING = {
    "image": {"repository": "registry.example.com/rowcast", "digest": "sha256:" + "a" * 64},
    "imagePullSecrets": [{"name": "regcred"}],
    "existingSecret": "rowcast-secrets",
    "existingSecretKeys": {"databaseUrl": "url", "jwtSecret": "unused", "jwtPublicKey": "jwt.pem"},
    "shutdownTimeoutSeconds": 20,
    "preStopSleepSeconds": 5,
    "terminationGracePeriodSeconds": 40,
    "config": {
        "pool_size": 24,
        "log": {"format": "human", "level": "rowcast=debug,info"},
        "capture": {"batch_size": 500, "max_lag": "1m", "idle_poll": "2s"},
        "hub": {"session_queue": 1024, "ping_interval": "20s"},
        "webhook": {"retry_schedule": ["5s", "5m", "30m"], "concurrency": 32, "allow_cidrs": ["10.1.0.0/16"]},
        "http": {"cors_origins": ["https://app.example.com"], "max_body_bytes": 131072},
        "jwt": {"role_claim": "https://example.com/roles", "audience": "helpdesk", "flag_roles": {"isAdmin": "admin"}},
        "tables": [
            {
                "table": "public.tickets",
                "entity": "ticket",
                "room": "tickets",
                "rooms": ["tickets:{id}"],
                "audience": {"roles": ["agent", "admin"], "rows": "requester_id = $user"},
            },
            {"table": "public.users", "entity": "user", "room": "users", "hidden": ["password_hash"]},
            {
                "table": "public.notifications",
                "entity": "notification",
                "kind": "notification",
                "recipient_column": "user_id",
                "related_type_column": "related_type",
                "related_id_column": "related_id",
            },
        ],
        "rooms": {"tickets": {"roles": ["agent", "admin"]}, "tickets:*": {"roles": ["agent"]}, "users": {"roles": ["admin"]}},
    },
    "extraEnv": [{"name": "ROWCAST_WEBHOOK_TIMEOUT", "value": "10s"}],
    "serviceAccount": {"create": True, "name": "rowcast-sa", "annotations": {"example.com/role": "rowcast"}},
    "podAnnotations": {"example.com/team": "support"},
    "podLabels": {"team": "support"},
    "service": {"type": "ClusterIP", "port": 8080, "annotations": {"example.com/lb": "internal"}},
    "stickySessions": {"enabled": True, "timeoutSeconds": 3600},
    "ingress": {
        "enabled": True,
        "className": "nginx",
        "annotations": {"cert-manager.io/cluster-issuer": "letsencrypt"},
        "hosts": [{"host": "rt.example.com", "paths": [{"path": "/", "pathType": "Prefix"}]}],
        "tls": [{"secretName": "rt-tls", "hosts": ["rt.example.com"]}],
    },
    "autoscaling": {"enabled": True, "minReplicas": 2, "maxReplicas": 8, "targetMemoryUtilizationPercentage": 80},
    "podDisruptionBudget": {"enabled": True, "maxUnavailable": "25%"},
    "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
    "networkPolicy": {
        "enabled": True,
        "ingressFrom": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}],
        "databaseTo": [{"ipBlock": {"cidr": "10.20.0.0/16"}}],
    },
    "nodeSelector": {"kubernetes.io/os": "linux"},
    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "realtime", "effect": "NoSchedule"}],
    "affinity": {
        "podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 100,
                    "podAffinityTerm": {
                        "topologyKey": "kubernetes.io/hostname",
                        "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "rowcast"}},
                    },
                }
            ]
        }
    },
    "topologySpreadConstraints": [
        {
            "maxSkew": 1,
            "topologyKey": "topology.kubernetes.io/zone",
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "rowcast"}},
        }
    ],
    "priorityClassName": "high",
}

PUBLIC_KEY = {"database": {"url": "postgres://rowcast:pw@db/helpdesk"}, "jwt": {"publicKey": PEM}, "migration": {"enabled": False}}

SCENARIOS = {"defaults": REQUIRED, "everything": EVERYTHING, "public-key": PUBLIC_KEY}

# The prometheus-operator ServiceMonitor fields the chart renders (a CRD: not in the
# Kubernetes schemas).
SERVICE_MONITOR = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {"type": "object", "required": ["name"]},
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["selector", "endpoints"],
            "properties": {
                "selector": {"type": "object", "properties": {"matchLabels": {"type": "object"}}, "additionalProperties": False},
                "namespaceSelector": {
                    "type": "object",
                    "properties": {"matchNames": {"type": "array", "items": {"type": "string"}}, "any": {"type": "boolean"}},
                    "additionalProperties": False,
                },
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string"},
                            "interval": {"type": "string", "pattern": "^(0|(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"},
                            "scrapeTimeout": {"type": "string", "pattern": "^(0|(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"},
                        },
                    },
                },
            },
        },
    },
}

failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
    return cond


def deep_merge(base, extra):
    out = dict(base)
    for k, v in extra.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def render(chart, values):
    return chart.render(values, name="rt", namespace="support", is_install=True)


def objects(rendered):
    out = []
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                out.append((path, doc))
    return out


def validate(scenario, path, obj):
    kind = obj.get("kind")
    try:
        if kind == "ServiceMonitor":
            jsonschema.validate(obj, SERVICE_MONITOR)
        else:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    except (kubernetes_validate.ValidationError, jsonschema.ValidationError) as e:
        msg = str(getattr(e, "message", e)).splitlines()[0]
        failures.append(f"{scenario}: {path}: {kind} {obj['metadata'].get('name')} is invalid for Kubernetes {K8S_VERSION}: {msg}")
    except kubernetes_validate.SchemaNotFoundError:
        failures.append(f"{scenario}: {path}: no schema for {obj.get('apiVersion')} {kind}")


def by_kind(objs):
    out = {}
    for _, o in objs:
        out.setdefault(o["kind"], []).append(o)
    return out


def lint(chart_dir, name, values):
    report = helm_python.lint(chart_dir, values, strict=True, namespace="support", kube_version="v" + K8S_VERSION)
    bad = [m for m in report.get("messages") or [] if m.get("severity", 0) >= 2]
    check(not bad and not report.get("errors"), f"{name}: helm lint --strict: {bad} {report.get('errors')}")


def promises(name, values, kinds):
    merged = deep_merge(yaml.safe_load(open(os.path.join(chart_dir, "values.yaml"))), values)
    [dep] = kinds["Deployment"]
    pod = dep["spec"]["template"]
    spec = pod["spec"]
    [c] = spec["containers"]
    at = f"{name}: Deployment"
    check(c["args"] == ["serve"], f"{at}: runs `rowcast serve`")
    check(c["livenessProbe"]["httpGet"]["path"] == "/healthz", f"{at}: liveness probe is /healthz")
    check(c["readinessProbe"]["httpGet"]["path"] == "/readyz", f"{at}: readiness probe is /readyz")
    check(c["startupProbe"]["httpGet"]["path"] == "/healthz", f"{at}: startup probe is /healthz")
    sc = c["securityContext"]
    check(sc.get("runAsNonRoot") is True and spec["securityContext"].get("runAsNonRoot") is True, f"{at}: runAsNonRoot")
    check(sc.get("readOnlyRootFilesystem") is True, f"{at}: read-only root filesystem")
    check(sc.get("allowPrivilegeEscalation") is False, f"{at}: no privilege escalation")
    check(sc.get("capabilities", {}).get("drop") == ["ALL"], f"{at}: drops every capability")
    check(spec["securityContext"].get("seccompProfile", {}).get("type") == "RuntimeDefault", f"{at}: seccomp RuntimeDefault")
    deadline = merged["shutdownTimeoutSeconds"] + merged["preStopSleepSeconds"]
    check(spec["terminationGracePeriodSeconds"] > deadline, f"{at}: grace period {spec['terminationGracePeriodSeconds']} > {deadline}")
    check("checksum/config" in pod["metadata"]["annotations"], f"{at}: config checksum annotation")
    check(spec.get("enableServiceLinks") is False, f"{at}: no service-link variables (ROWCAST_SERVICE_HOST, ...)")
    env = {e["name"]: e for e in c["env"]}
    check("secretKeyRef" in env["DATABASE_URL"].get("valueFrom", {}), f"{at}: DATABASE_URL comes from a Secret")
    check(env["ROWCAST_CONFIG"]["value"] == "/etc/rowcast/rowcast.toml", f"{at}: ROWCAST_CONFIG points at the mounted file")
    uses_pem = bool(merged["jwt"]["publicKey"]) or bool(merged["existingSecret"] and merged["existingSecretKeys"]["jwtPublicKey"])
    if uses_pem:
        check(env.get("ROWCAST_JWT_PUBLIC_KEY_FILE", {}).get("value") == "/etc/rowcast/jwt/public.pem", f"{at}: public key file mounted")
        check("ROWCAST_JWT_SECRET" not in env, f"{at}: no HS256 secret next to a public key")
        check(any(v["name"] == "jwt" for v in spec["volumes"]), f"{at}: jwt volume")
    else:
        check("secretKeyRef" in env.get("ROWCAST_JWT_SECRET", {}).get("valueFrom", {}), f"{at}: ROWCAST_JWT_SECRET from a Secret")
    check(("replicas" in dep["spec"]) != merged["autoscaling"]["enabled"], f"{at}: replicas set unless the HPA owns them")
    if merged["preStopSleepSeconds"]:
        check(c["lifecycle"]["preStop"]["sleep"]["seconds"] == merged["preStopSleepSeconds"], f"{at}: preStop sleep")

    [svc] = kinds["Service"]
    selector = svc["spec"]["selector"]
    check(selector == dep["spec"]["selector"]["matchLabels"], f"{name}: Service selects the Deployment's pods")
    check((svc["spec"].get("sessionAffinity") == "ClientIP") == merged["stickySessions"]["enabled"], f"{name}: Service affinity follows stickySessions")

    secrets = [s for s in kinds.get("Secret", []) if "helm.sh/hook" not in s["metadata"].get("annotations", {})]
    check(bool(secrets) != bool(merged["existingSecret"]), f"{name}: a Secret is created unless existingSecret is set")
    for s in kinds.get("Secret", []):
        check(set(s["data"]) <= {"DATABASE_URL", "ROWCAST_JWT_SECRET", "jwt-public-key.pem"}, f"{name}: Secret keys {sorted(s['data'])}")

    jobs = kinds.get("Job", [])
    if check(bool(jobs) == merged["migration"]["enabled"], f"{name}: migration Job iff migration.enabled") and jobs:
        [job] = jobs
        ann = job["metadata"]["annotations"]
        check(ann.get("helm.sh/hook") == "pre-install,pre-upgrade", f"{name}: migration Job is a pre-install/pre-upgrade hook")
        jc = job["spec"]["template"]["spec"]["containers"][0]
        check(job["spec"]["template"]["spec"].get("enableServiceLinks") is False, f"{name}: Job has no service-link variables")
        check(jc["args"] == ["migrate"], f"{name}: migration Job runs `rowcast migrate`")
        labels = job["spec"]["template"]["metadata"]["labels"]
        check(not all(labels.get(k) == v for k, v in selector.items()), f"{name}: the Service does not select the migration pod")
        # Everything the hook Job mounts must exist before it: hooks with a lower weight, or existingSecret.
        hook_names = {
            (o["kind"], o["metadata"]["name"])
            for o in kinds.get("ConfigMap", []) + kinds.get("Secret", [])
            if int(o["metadata"].get("annotations", {}).get("helm.sh/hook-weight", "0")) < int(ann.get("helm.sh/hook-weight", "0"))
        }
        for v in job["spec"]["template"]["spec"]["volumes"]:
            if "configMap" in v:
                check(("ConfigMap", v["configMap"]["name"]) in hook_names, f"{name}: Job's ConfigMap exists before the hook")
            if "secret" in v and not merged["existingSecret"]:
                check(("Secret", v["secret"]["secretName"]) in hook_names, f"{name}: Job's Secret exists before the hook")
        for e in jc["env"]:
            ref = e.get("valueFrom", {}).get("secretKeyRef")
            if ref and not merged["existingSecret"]:
                check(("Secret", ref["name"]) in hook_names, f"{name}: Job's env Secret exists before the hook")

    check(bool(kinds.get("HorizontalPodAutoscaler")) == merged["autoscaling"]["enabled"], f"{name}: HPA iff autoscaling.enabled")
    check(bool(kinds.get("PodDisruptionBudget")) == merged["podDisruptionBudget"]["enabled"], f"{name}: PDB iff enabled")
    check(bool(kinds.get("ServiceMonitor")) == merged["serviceMonitor"]["enabled"], f"{name}: ServiceMonitor iff enabled")
    check(bool(kinds.get("NetworkPolicy")) == merged["networkPolicy"]["enabled"], f"{name}: NetworkPolicy iff enabled")
    ingresses = kinds.get("Ingress", [])
    if check(bool(ingresses) == merged["ingress"]["enabled"], f"{name}: Ingress iff enabled") and ingresses:
        ann = ingresses[0]["metadata"]["annotations"]
        check(int(ann.get("nginx.ingress.kubernetes.io/proxy-read-timeout", "0")) >= 3600, f"{name}: Ingress read timeout fits WebSockets")
        check(ann.get("nginx.ingress.kubernetes.io/proxy-buffering") == "off", f"{name}: Ingress does not buffer SSE")
        if merged["stickySessions"]["enabled"]:
            check(ann.get("nginx.ingress.kubernetes.io/affinity") == "cookie", f"{name}: Ingress cookie affinity")
        check(ann.get("cert-manager.io/cluster-issuer") == "letsencrypt", f"{name}: user annotations kept")


def leaves(values, prefix=""):
    for k, v in values.items():
        path = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            yield from leaves(v, path + ".")
        else:
            yield path


def documented(chart_dir):
    """Every value of values.yaml is in the chart README (itself, or a parent as `a.b` / `a.b.*`)."""
    readme = open(os.path.join(chart_dir, "README.md")).read()
    values = yaml.safe_load(open(os.path.join(chart_dir, "values.yaml")))
    for leaf in leaves(values):
        parts = leaf.split(".")
        prefixes = [".".join(parts[:i]) for i in range(len(parts), 0, -1)]
        check(
            any(f"`{q}`" in readme or f"`{q}.*`" in readme for q in prefixes),
            f"README.md does not document the value {leaf}",
        )


def refused(chart, values, expect, what):
    try:
        render(chart, values)
    except helm_python.HelmError as e:
        check(expect in str(e), f"refuse {what}: message {str(e)!r} lacks {expect!r}")
        return
    failures.append(f"refuse {what}: the chart rendered anyway")


if __name__ == "__main__":
    if sys.argv[1:] == ["--check-tools"]:
        sys.exit(0)
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        sys.exit(64)
    chart_dir, out_dir = sys.argv[1], sys.argv[2]
    os.makedirs(out_dir, exist_ok=True)
    chart = helm_python.Chart.load(chart_dir)
    summary = {}
    for name, values in SCENARIOS.items():
        lint(chart_dir, name, values)
        try:
            objs = objects(render(chart, values))
        except helm_python.HelmError as e:
            failures.append(f"{name}: the chart does not render: {e}")
            continue
        for path, obj in objs:
            validate(name, path, obj)
        kinds = by_kind(objs)
        promises(name, values, kinds)
        [cm] = [c for c in kinds["ConfigMap"] if "helm.sh/hook" not in c["metadata"].get("annotations", {})]
        with open(os.path.join(out_dir, f"{name}.toml"), "w") as f:
            f.write(cm["data"]["rowcast.toml"])
        summary[name] = sorted(f"{o['kind']}/{o['metadata']['name']}" for _, o in objs)

    documented(chart_dir)
    refused(chart, {}, "database.url", "missing database")
    refused(chart, {"database": REQUIRED["database"]}, "jwt.secret", "missing JWT key")
    refused(chart, deep_merge(REQUIRED, {"jwt": {"publicKey": PEM}}), "not both", "two JWT keys")
    refused(chart, deep_merge(REQUIRED, {"terminationGracePeriodSeconds": 10}), "must exceed", "a grace period inside the shutdown deadline")
    refused(chart, deep_merge(REQUIRED, {"config": {"log": {"format": "xml"}}}), "format", "an unknown log format (schema)")
    refused(chart, deep_merge(REQUIRED, {"config": {"capture": {"batchsize": 5}}}), "batchsize", "a misspelt config key (schema)")
    refused(chart, deep_merge(REQUIRED, {"replicas": 3}), "replicas", "an unknown top-level value (schema)")

    print(json.dumps(summary))
    if failures:
        print("\n".join(["chart check failed:"] + [f"  - {f}" for f in failures]), file=sys.stderr)
        sys.exit(1)
