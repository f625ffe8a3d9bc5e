#!/usr/bin/env bash
# deploy/ and examples/ against the local cluster's real API server:
#
# 1. `kubectl apply --dry-run=server -k deploy/` is accepted, with no Pod
#    Security warning for the operator's Deployment;
# 2. the operator's RBAC, applied for real, lets its ServiceAccount do every
#    call the operator makes, and nothing it must not: no Secrets (except
#    headroom-notify in its own namespace, the notification webhooks, and the
#    one a team grants with examples/operator-secret-access.yaml), no delete
#    of anything but pods, no writes to workloads except their scale;
# 3. every examples/*.yaml is accepted by `kubectl apply --dry-run=server`.
#
# Needs the local cluster (make cluster-up). Applies for real only the
# namespace headroom-system, its ServiceAccount and the RBAC (left in place,
# as `kubectl apply -k deploy/` would), plus a scratch namespace for the
# Secret checks, deleted on exit. Runs no operator and never sets the global
# pause. Every failed check is named; the script exits non-zero if any failed.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ ! -f .cluster/env ]]; then
  echo "FAILED: .cluster/env is missing: start the local cluster first (make cluster-up)" >&2
  exit 1
fi
set -a
# shellcheck source=/dev/null
. .cluster/env
set +a

NS=headroom-system
SA_NAME=headroom
AS="system:serviceaccount:$NS:$SA_NAME"
failures=()

step() { printf '\n==> %s\n' "$*"; }
k() { "$KUBECTL" "$@"; }
failed() {
  echo "  FAILED: $*" >&2
  failures+=("$*")
}
# must CMD...: a setup step that the rest depends on; stop at once if it fails.
must() {
  if ! "$@"; then
    echo "FAILED: $*" >&2
    exit 1
  fi
}

# can_i yes|no VERB RESOURCE [kubectl flags]: the ServiceAccount's answer
# must be the expected one.
can_i() {
  local want="$1"; shift
  local got err
  err="$(mktemp)"
  if k auth can-i "$@" --as="$AS" >/dev/null 2>"$err"; then got=yes; else got=no; fi
  # "yes"/"no" is the exit status; anything other than a warning on stderr
  # (a CRD that is not installed) means the question itself failed.
  if grep -v '^Warning:' "$err" | grep -q .; then
    failed "kubectl auth can-i $* --as=$AS: $(cat "$err")"
  elif [[ "$got" == "$want" ]]; then
    printf '  ok   %-3s %s\n' "$want" "$*"
  else
    failed "the operator's account should answer '$want' but answers '$got' to: kubectl auth can-i $* --as=$AS"
  fi
  rm -f "$err"
}

step "CRDs (kubectl apply --server-side -f crds/)"
must k apply --server-side --force-conflicts -f crds/ >/dev/null
must k wait --for=condition=Established --timeout=60s -f crds/ >/dev/null

step "kubectl apply --dry-run=server -k deploy/"
# A server-side dry run of the namespaced objects fails with NotFound while
# the namespace does not exist (nothing is created by a dry run, including
# the namespace itself), so create the namespace for real first.
if ! k get namespace "$NS" >/dev/null 2>&1; then
  echo "  namespace $NS does not exist yet: applying deploy/namespace.yaml for real"
  must k apply -f deploy/namespace.yaml
fi
out="$(mktemp)"
trap 'rm -f "$out"' EXIT
if k apply --dry-run=server --validate=strict -k deploy/ >"$out" 2>&1; then
  sed 's/^/  /' "$out"
  # The namespace enforces the restricted Pod Security level; the API server
  # warns at once when a Deployment's pod template would violate it.
  if grep -qi 'would violate PodSecurity' "$out"; then
    failed "the operator's Deployment violates Pod Security 'restricted': $(grep -i 'PodSecurity' "$out")"
  fi
else
  failed "kubectl apply --dry-run=server -k deploy/ was refused: $(cat "$out")"
fi
rendered="$(k kustomize deploy/)"
for want in 'runAsNonRoot: true' 'readOnlyRootFilesystem: true' 'allowPrivilegeEscalation: false' \
  'path: /healthz' 'fieldPath: metadata.namespace' '--listen=0.0.0.0:9464' 'replicas: 2' '- --leader-elect' \
  '--notify-secret=headroom-notify'; do
  grep -qF -- "$want" <<<"$rendered" || failed "deploy/ renders without '$want'"
done

step "kubectl apply --dry-run=server -k examples/deploy-prometheus-auth/ (Prometheus credentials from a mounted Secret)"
if ! k apply --dry-run=server --validate=strict -k examples/deploy-prometheus-auth/ >"$out" 2>&1; then
  failed "kubectl apply --dry-run=server -k examples/deploy-prometheus-auth/ was refused: $(cat "$out")"
fi
rendered="$(k kustomize examples/deploy-prometheus-auth/)"
for want in '--prometheus-url=https://' '--prometheus-basic-auth-file=/etc/headroom/prometheus-auth' \
  'mountPath: /etc/headroom/prometheus-auth' 'secretName: headroom-prometheus' '--leader-elect'; do
  grep -qF -- "$want" <<<"$rendered" || failed "examples/deploy-prometheus-auth/ renders without '$want'"
done
grep -q -- '--prometheus-url=http://prometheus-operated' <<<"$rendered" \
  && failed "examples/deploy-prometheus-auth/ replaced another argument than --prometheus-url"

step "the operator's RBAC, applied for real"
must k apply -f deploy/namespace.yaml -f deploy/serviceaccount.yaml -f deploy/clusterrole.yaml -f deploy/role.yaml

step "what the operator must be able to do (kubectl auth can-i --as=$AS)"
T=checkout # any namespace an experiment may live in
for r in servicelevelobjectives.headroom.dev chaosexperiments.headroom.dev; do
  for v in get list watch patch; do can_i yes "$v" "$r" -n "$T"; done
  for v in list watch; do can_i yes "$v" "$r" --all-namespaces; done
  can_i yes patch "$r" --subresource=status -n "$T"
  can_i yes update "$r" --subresource=finalizers -n "$T"
done
for v in get list watch create delete; do can_i yes "$v" experimentruns.headroom.dev -n "$T"; done
can_i yes list experimentruns.headroom.dev --all-namespaces
can_i yes patch experimentruns.headroom.dev --subresource=status -n "$T"
for v in create patch; do can_i yes "$v" events.events.k8s.io -n "$T"; done
for v in get list watch delete; do can_i yes "$v" pods -n "$T"; done
for r in deployments.apps statefulsets.apps replicasets.apps; do
  can_i yes get "$r" -n "$T"
  can_i yes get "$r" --subresource=scale -n "$T"
  can_i yes patch "$r" --subresource=scale -n "$T"
done
can_i yes get namespaces/"$T"
for v in get list patch; do can_i yes "$v" nodes/kwok-node-1; done
can_i yes create pods --subresource=eviction -n "$T"
can_i yes list poddisruptionbudgets.policy -n "$T"
can_i no delete poddisruptionbudgets.policy -n "$T"
can_i yes create selfsubjectaccessreviews.authorization.k8s.io
# manifest objects: only where a team grants a kind (none by default).
can_i no create networkpolicies.networking.k8s.io -n "$T"
can_i yes get services -n "$T"
for v in get list watch create patch; do can_i yes "$v" prometheusrules.monitoring.coreos.com -n "$T"; done
can_i yes create tokenreviews.authentication.k8s.io
can_i yes create subjectaccessreviews.authorization.k8s.io
can_i yes get configmaps/headroom-pause -n "$NS"
can_i yes get secrets/headroom-notify -n "$NS"
can_i yes create leases.coordination.k8s.io -n "$NS"
for v in get update; do can_i yes "$v" leases.coordination.k8s.io/headroom -n "$NS"; done

step "what the operator must not be able to do"
# Secrets: none cluster-wide, none in any namespace by default.
for v in get list watch; do can_i no "$v" secrets --all-namespaces; done
for ns in "$T" default kube-system "$NS"; do
  for v in get list watch create; do can_i no "$v" secrets -n "$ns"; done
done
# The notification Secret: read by name in the operator's namespace, and
# nothing more: no other Secret there, not that name elsewhere, no writes.
can_i no get secrets/other -n "$NS"
can_i no get secrets/headroom-notify -n "$T"
can_i no get secrets/headroom-notify -n default
for v in list watch update patch delete; do can_i no "$v" secrets/headroom-notify -n "$NS"; done
# Delete: nothing but pods and runs beyond their experiment's history limit.
for r in deployments.apps statefulsets.apps replicasets.apps services configmaps \
  servicelevelobjectives.headroom.dev chaosexperiments.headroom.dev \
  prometheusrules.monitoring.coreos.com events.events.k8s.io persistentvolumeclaims; do
  can_i no delete "$r" -n "$T"
done
can_i no delete namespaces/"$T"
can_i no delete nodes/kwok-node-1
can_i yes delete configmaps/headroom-pause -n "$NS"
can_i no delete configmaps/other -n "$NS"
can_i no deletecollection pods -n "$T"
can_i no delete leases.coordination.k8s.io/headroom -n "$NS"
# Workloads change only through their scale subresource.
for r in deployments.apps statefulsets.apps replicasets.apps; do
  for v in create update patch; do can_i no "$v" "$r" -n "$T"; done
done
# It cannot opt a namespace in to experiments, nor set or clear the pause.
for v in update patch; do can_i no "$v" namespaces/"$T"; done
can_i yes create configmaps -n "$NS"
can_i no create configmaps -n "$T"
can_i no get configmaps/other -n "$NS"
can_i no get configmaps -n "$T"
can_i no create pods -n "$T"
can_i no create pods --subresource=exec -n "$T"
can_i no update experimentruns.headroom.dev -n "$T"
can_i no create leases.coordination.k8s.io -n "$T"
# No way to widen its own rights.
can_i no create rolebindings.rbac.authorization.k8s.io -n "$T"
can_i no create clusterrolebindings.rbac.authorization.k8s.io
can_i no escalate clusterroles.rbac.authorization.k8s.io
can_i no impersonate serviceaccounts -n "$T"

# Every rule the account holds in an experiment namespace, as the API server
# lists them: delete (or a wildcard verb or resource) only on pods, and on
# runs (finished ones beyond their experiment's history limits).
listing="$(k auth can-i --list -n "$T" --as="$AS" 2>/dev/null)" || failed "kubectl auth can-i --list -n $T --as=$AS failed"
while IFS= read -r row; do
  resource="${row%% *}"
  case "$row" in
    *'[*]'* | '*'*) failed "a wildcard in the operator's rights: $row" ;;
    *delete*) [[ "$resource" == pods || "$resource" == experimentruns.headroom.dev ]] || failed "the operator may delete something other than pods and runs: $row" ;;
  esac
done < <(tail -n +2 <<<"$listing")
echo "  ok   kubectl auth can-i --list: delete only on pods, no wildcards"

step "one named Secret, granted by examples/operator-secret-access.yaml"
scratch="headroom-rbac-check-$$"
trap 'rm -f "$out"; "$KUBECTL" delete namespace "$scratch" --wait=false >/dev/null 2>&1 || true' EXIT
must k create namespace "$scratch" >/dev/null
for s in checkout-db other-secret; do
  must k -n "$scratch" create secret generic "$s" --from-literal=username=u --from-literal=password=p >/dev/null
done
can_i no get secrets/checkout-db -n "$scratch"
# The example, moved to the scratch namespace (it names namespace checkout).
role_yaml="$(sed "s/namespace: checkout\$/namespace: $scratch/" examples/operator-secret-access.yaml)"
grep -q "namespace: $scratch" <<<"$role_yaml" || failed "examples/operator-secret-access.yaml has no 'namespace: checkout' to move"
must k apply -f - <<<"$role_yaml"
can_i yes get secrets/checkout-db -n "$scratch"
can_i no get secrets/other-secret -n "$scratch"
for v in list watch; do can_i no "$v" secrets -n "$scratch"; done
for v in update patch delete; do can_i no "$v" secrets/checkout-db -n "$scratch"; done
can_i no get secrets/checkout-db -n default
can_i no list secrets --all-namespaces
# And the real requests, as the operator would make them.
if k -n "$scratch" get secret checkout-db --as="$AS" -o name >/dev/null 2>"$out"; then
  echo "  ok   GET secret $scratch/checkout-db as the operator"
else
  failed "GET secret $scratch/checkout-db as the operator was refused: $(cat "$out")"
fi
if k -n "$scratch" get secret other-secret --as="$AS" -o name >/dev/null 2>"$out"; then
  failed "GET secret $scratch/other-secret as the operator succeeded; only checkout-db is granted"
elif grep -q Forbidden "$out"; then
  echo "  ok   GET secret $scratch/other-secret as the operator: Forbidden"
else
  failed "GET secret $scratch/other-secret as the operator failed, but not with Forbidden: $(cat "$out")"
fi

step "the notification Secret, read as the operator does (GET by name)"
# Allowed means found or NotFound (the Secret is optional); Forbidden means
# the Role does not grant it.
if k -n "$NS" get secret headroom-notify --as="$AS" -o name >/dev/null 2>"$out" || grep -q NotFound "$out"; then
  echo "  ok   GET secret $NS/headroom-notify as the operator: allowed"
else
  failed "GET secret $NS/headroom-notify as the operator was refused: $(cat "$out")"
fi

step "examples/*.yaml (kubectl apply --dry-run=server)"
for f in examples/*.yaml; do
  if k apply --dry-run=server --validate=strict -f "$f" >"$out" 2>&1; then
    sed "s|^|  $f: |" "$out"
  else
    failed "$f was refused by the API server: $(cat "$out")"
  fi
done

echo
if ((${#failures[@]})); then
  echo "deploy-check: ${#failures[@]} check(s) FAILED:" >&2
  printf '  - %s\n' "${failures[@]}" >&2
  exit 1
fi
echo "deploy-check: all checks passed"
