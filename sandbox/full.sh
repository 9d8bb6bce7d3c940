# shellcheck shell=bash
# The "full" profile of sandbox/sandbox: Flux, the CSI snapshot stack, an OCI
# registry + Helm chart repository, and Gitea, all built from their published
# Go modules and run as local processes on 127.0.0.1.
#
# Sourced by sandbox/sandbox (bash reads a sourced file completely before
# running it, so editing this file does not break a running build). Uses the
# helpers defined there: log, die, go_env, moddir, gobuild, build_component,
# start, wait_healthy, poll, k, pid_of, ...
# shellcheck disable=SC2154 # variables come from sandbox/sandbox and versions.env

# ---------------------------------------------------------------------------
# Ports: base+10 .. base+49 (reserved by the core profile for tier 2).
# ---------------------------------------------------------------------------
SOURCE_STORAGE_PORT=$((PORT_BASE + 10))  # source-controller artifacts (http)
SOURCE_METRICS_PORT=$((PORT_BASE + 11))
SOURCE_HEALTH_PORT=$((PORT_BASE + 12))   # /healthz /readyz
KUSTOMIZE_METRICS_PORT=$((PORT_BASE + 13))
KUSTOMIZE_HEALTH_PORT=$((PORT_BASE + 14))
HELM_METRICS_PORT=$((PORT_BASE + 15))
HELM_HEALTH_PORT=$((PORT_BASE + 16))
NOTIFICATION_EVENTS_PORT=$((PORT_BASE + 17)) # event receiver of every controller
NOTIFICATION_METRICS_PORT=$((PORT_BASE + 18))
NOTIFICATION_HEALTH_PORT=$((PORT_BASE + 19))
NOTIFICATION_RECEIVER_PORT=$((PORT_BASE + 20))
CSI_PROVISIONER_PORT=$((PORT_BASE + 21))  # --http-endpoint: /healthz/leader-election, /metrics
CSI_SNAPSHOTTER_PORT=$((PORT_BASE + 22))
SNAPSHOT_CONTROLLER_PORT=$((PORT_BASE + 23))
# base+24 is reserved for the hostpath driver (it listens on a unix socket only).
GITEA_PORT=$((PORT_BASE + 30))
DEX_PORT=$((PORT_BASE + 31))
REGISTRY_PORT=$((PORT_BASE + 32))         # OCI registry (distribution), http
REGISTRY_DEBUG_PORT=$((PORT_BASE + 33))   # registry /debug/health
HELMREPO_PORT=$((PORT_BASE + 34))         # static Helm repository (python3 -m http.server)
DEX_TELEMETRY_PORT=$((PORT_BASE + 35))    # Dex /healthz, /metrics
GITEA_SSH_PORT=$((PORT_BASE + 36))        # Gitea's built-in SSH server (git over ssh)
PLAIN_GIT_SSH_PORT=$((PORT_BASE + 37))    # git-ssh: OpenSSH's sshd serving bare repositories
REGISTRY_AUTH_PORT=$((PORT_BASE + 38))    # registry-auth: a second registry, HTTP basic auth (htpasswd)
REGISTRY_AUTH_DEBUG_PORT=$((PORT_BASE + 39)) # registry-auth /debug/health

# ---------------------------------------------------------------------------
# Cache directories (one per component and version).
# ---------------------------------------------------------------------------
FLUX_SC_DIR=$CACHE/source-controller-$FLUX_SOURCE_CONTROLLER_VERSION
FLUX_KC_DIR=$CACHE/kustomize-controller-$FLUX_KUSTOMIZE_CONTROLLER_VERSION
FLUX_HC_DIR=$CACHE/helm-controller-$FLUX_HELM_CONTROLLER_VERSION
FLUX_NC_DIR=$CACHE/notification-controller-$FLUX_NOTIFICATION_CONTROLLER_VERSION
SNAPSHOTTER_DIR=$CACHE/external-snapshotter-$EXTERNAL_SNAPSHOTTER_VERSION
PROVISIONER_DIR=$CACHE/external-provisioner-$EXTERNAL_PROVISIONER_VERSION
# Our CSI driver (sandbox/csi-driver, Rust): keyed by a hash of its sources, so an edit rebuilds it.
CSI_DRIVER_KEY=$(cd "$SANDBOX_DIR/csi-driver" && find Cargo.toml Cargo.lock build.rs proto src -type f -print0 |
  sort -z | xargs -0 sha256sum | sha256sum | cut -c1-12)
HOSTPATH_DIR=$CACHE/csi-hostpath-$CSI_DRIVER_KEY
REGISTRY_DIR=$CACHE/registry-$DISTRIBUTION_VERSION
HELM_DIR=$CACHE/helm-$HELM_VERSION
GITEA_DIR=$CACHE/gitea-$GITEA_VERSION
DEX_DIR=$CACHE/dex-$DEX_VERSION
# git-ssh is not built: it is Debian's OpenSSH server (package openssh-server, scripts/setup).
SSHD_BIN=${SANDBOX_SSHD:-/usr/sbin/sshd}

# ===========================================================================
# build
# ===========================================================================

# inplace_src <module@version> <name>: copy a module's source out of the
# read-only module cache into <cache>/src/<name> and cd into it. Used for
# modules whose go.mod replaces a nested module (./api, ./client) that the
# module zip does not contain: the build then keeps upstream's exact
# dependency set, with only that replace pointed at the published version.
inplace_src() {
  local dir src
  dir=$CACHE/src/$2
  src=$(moddir "$1")
  [[ -n $src ]] || die "cannot download $1"
  rm -rf "$dir"
  mkdir -p "$(dirname "$dir")"
  cp -r "$src" "$dir"
  chmod -R u+w "$dir"
  cd "$dir" || return 1
}

# build_flux <out> <repo name> <version>: one Flux controller.
build_flux() {
  local out=$1 name=$2 version=$3
  go_env
  mkdir -p "$out/bin"
  inplace_src "github.com/fluxcd/$name@$version" "$name-$version"
  # ./api is a nested module (not in the zip); its tags are api/<same version>.
  go mod edit "-replace=github.com/fluxcd/$name/api=github.com/fluxcd/$name/api@$version"
  # helm-controller replaces helm.sh/helm/v4 with Flux's fork (github.com/fluxcd/helm/v4
  # v4.2.4-flux.1), which the module proxy does not serve (403). Fall back to the upstream helm
  # release the fork is based on (v4.2.4 for v4.2.4-flux.1).
  local fork
  fork=$(go mod edit -json | sed -n 's/.*"Path": "\(github.com\/fluxcd\/helm\/v4\)".*/\1/p' | head -1)
  if [[ -n $fork ]]; then
    local forkver
    forkver=$(grep -o 'github.com/fluxcd/helm/v4 v[^ ]*' go.mod | head -1 | cut -d' ' -f2)
    if ! go mod download "github.com/fluxcd/helm/v4@$forkver" 2>/dev/null; then
      echo "github.com/fluxcd/helm/v4@$forkver is not served: using helm.sh/helm/v4@${forkver%%-flux*}"
      go mod edit -dropreplace=helm.sh/helm/v4 "-require=helm.sh/helm/v4@${forkver%%-flux*}"
      echo "build (helm.sh/helm/v4@${forkver%%-flux*} instead of the fork)" >"$out/.method"
    fi
  fi
  gobuild "" -o "$out/bin/$name" .
  [[ -f $out/.method ]] || echo build >"$out/.method"
}
build_flux_sc() { build_flux "$1" source-controller "$FLUX_SOURCE_CONTROLLER_VERSION"; }
build_flux_kc() { build_flux "$1" kustomize-controller "$FLUX_KUSTOMIZE_CONTROLLER_VERSION"; }
build_flux_hc() { build_flux "$1" helm-controller "$FLUX_HELM_CONTROLLER_VERSION"; }
build_flux_nc() { build_flux "$1" notification-controller "$FLUX_NOTIFICATION_CONTROLLER_VERSION"; }

# --- CSI snapshot stack ------------------------------------------------------
build_snapshotter() {
  local out=$1
  go_env
  mkdir -p "$out/bin"
  inplace_src "github.com/kubernetes-csi/external-snapshotter/v8@$EXTERNAL_SNAPSHOTTER_VERSION" \
    "external-snapshotter-$EXTERNAL_SNAPSHOTTER_VERSION"
  # client/v8 is a nested module (./client), published under the same tag.
  go mod edit "-replace=github.com/kubernetes-csi/external-snapshotter/client/v8=github.com/kubernetes-csi/external-snapshotter/client/v8@$EXTERNAL_SNAPSHOTTER_VERSION"
  gobuild "-X main.version=$EXTERNAL_SNAPSHOTTER_VERSION" -o "$out/bin/" ./cmd/snapshot-controller ./cmd/csi-snapshotter
  echo build >"$out/.method"
}

build_provisioner() {
  local out=$1
  go_env
  mkdir -p "$out/bin"
  # Its replaces already name published k8s.io/* versions.
  inplace_src "github.com/kubernetes-csi/external-provisioner/v6@$EXTERNAL_PROVISIONER_VERSION" \
    "external-provisioner-$EXTERNAL_PROVISIONER_VERSION"
  gobuild "-X main.version=$EXTERNAL_PROVISIONER_VERSION" -o "$out/bin/csi-provisioner" ./cmd/csi-provisioner
  echo build >"$out/.method"
}

# The upstream hostpath driver is not served by the module proxy (403 for every version), so the
# sandbox runs a small CSI driver of ours (sandbox/csi-driver/README.md) beside the upstream
# provisioner, snapshotter and snapshot-controller. Its target dir is shared across source
# hashes, so an edit recompiles only the driver.
build_hostpath() {
  local out=$1
  mkdir -p "$out/bin"
  CARGO_TARGET_DIR=$CACHE/csi-driver-target cargo build --release --locked \
    --manifest-path "$SANDBOX_DIR/csi-driver/Cargo.toml"
  cp "$CACHE/csi-driver-target/release/csi-hostpath" "$out/bin/"
  echo cargo >"$out/.method"
}

# --- OCI registry and helm: plain wrapper modules --------------------------
build_registry() {
  local out=$1
  go_env
  mkdir -p "$out/bin"
  new_wrapper "$CACHE/src/registry-$DISTRIBUTION_VERSION" registry
  go get "github.com/distribution/distribution/v3@$DISTRIBUTION_VERSION"
  gobuild "-X github.com/distribution/distribution/v3/version.version=$DISTRIBUTION_VERSION" \
    -o "$out/bin/registry" github.com/distribution/distribution/v3/cmd/registry
  echo build >"$out/.method"
}

build_helm() {
  local out=$1
  go_env
  mkdir -p "$out/bin"
  new_wrapper "$CACHE/src/helm-$HELM_VERSION" helm
  go get "helm.sh/helm/v3@$HELM_VERSION"
  gobuild "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" -o "$out/bin/helm" helm.sh/helm/v3/cmd/helm
  echo build >"$out/.method"
}

# --- Gitea -------------------------------------------------------------------
build_gitea() {
  local out=$1
  go_env
  mkdir -p "$out/bin"
  # 1.27.3 (pure-Go sqlite) needs gitea.dev/actions-proto-go and gitea.dev/sdk, which the module
  # proxy refuses (host not on its allowlist). 1.26.0 builds from the proxy, but its sqlite driver
  # is mattn/go-sqlite3: cgo (gcc) and the sqlite tags. Its replaces name published versions.
  inplace_src "code.gitea.io/gitea@$GITEA_VERSION" "gitea-$GITEA_VERSION"
  local tags="sqlite sqlite_unlock_notify"
  CGO_ENABLED=1 gobuild "-X main.Version=${GITEA_VERSION#v} -X 'main.Tags=$tags'" -tags "$tags" \
    -o "$out/bin/gitea" .
  # Without the bindata tag, templates, locales and options are read from
  # STATIC_ROOT_PATH at run time: keep them next to the binary.
  mkdir -p "$out/static"
  cp -r templates options public "$out/static/"
  echo build >"$out/.method"
}

# --- Dex ---------------------------------------------------------------------
# github.com/dexidp/dex has no /v2 in its module path, so its v2.x tags are not
# module versions: the proxy serves the v2.45.1 commit as a pseudo-version (pinned in
# versions.env). ./api/v2 is a nested module, published as api/v2 $DEX_API_VERSION.
build_dex() {
  local out=$1
  go_env
  mkdir -p "$out/bin"
  inplace_src "github.com/dexidp/dex@$DEX_VERSION" "dex-$DEX_VERSION"
  go mod edit "-replace=github.com/dexidp/dex/api/v2=github.com/dexidp/dex/api/v2@$DEX_API_VERSION"
  # CGO_ENABLED=0 leaves out the sqlite storage (cgo only); the sandbox uses memory storage.
  gobuild "-X main.version=$DEX_RELEASE" -o "$out/bin/dex" ./cmd/dex
  # Templates, themes and static files are embedded (web/).
  [[ -f $out/.method ]] || echo build >"$out/.method"
}

# build_optional <args of build_component>: a failure is reported, not fatal,
# so one missing upstream module does not stop the rest of the profile.
build_optional() {
  # Not `(build_component ...) || ...`: on the left of || bash ignores `set -e` in everything the
  # subshell runs, so a failed `go build` would go unnoticed and the component be marked complete.
  (build_component "$@") &
  if ! wait $!; then
    log "WARNING: $1 not built; the full profile runs without it"
  fi
}

cmd_build_full() {
  # Most valuable first: Flux, then CSI, then registry + helm, then Gitea.
  build_component source-controller "$FLUX_SOURCE_CONTROLLER_VERSION" "$FLUX_SC_DIR" build_flux_sc
  build_component kustomize-controller "$FLUX_KUSTOMIZE_CONTROLLER_VERSION" "$FLUX_KC_DIR" build_flux_kc
  build_component helm-controller "$FLUX_HELM_CONTROLLER_VERSION" "$FLUX_HC_DIR" build_flux_hc
  build_component notification-controller "$FLUX_NOTIFICATION_CONTROLLER_VERSION" "$FLUX_NC_DIR" build_flux_nc
  build_optional external-snapshotter "$EXTERNAL_SNAPSHOTTER_VERSION" "$SNAPSHOTTER_DIR" build_snapshotter
  build_optional external-provisioner "$EXTERNAL_PROVISIONER_VERSION" "$PROVISIONER_DIR" build_provisioner
  build_optional csi-hostpath "$CSI_DRIVER_KEY" "$HOSTPATH_DIR" build_hostpath
  build_optional registry "$DISTRIBUTION_VERSION" "$REGISTRY_DIR" build_registry
  build_optional helm "$HELM_VERSION" "$HELM_DIR" build_helm
  build_optional gitea "$GITEA_VERSION" "$GITEA_DIR" build_gitea
  build_optional dex "$DEX_VERSION" "$DEX_DIR" build_dex
}


# ===========================================================================
# up (profile full)
# ===========================================================================

FULL_COMPONENTS=(
  source-controller kustomize-controller helm-controller notification-controller
  csi-hostpath csi-provisioner csi-snapshotter snapshot-controller
  registry registry-auth helm-repo gitea dex git-ssh
)
FLUX_NAMESPACE=flux-system
CSI_DRIVER=hostpath.sandbox.fluxup.dev
CSI_STATE=$STATE/csi-data # <volume id>/ per volume, <snapshot id>.snap/ per snapshot
CSI_SOCKET=$STATE/csi/csi.sock
GITEA_STATE=$STATE/gitea
GITEA_ADMIN=fluxup-admin
GITEA_ADMIN_PASSWORD=fluxup-sandbox
# Gitea's built-in SSH server: its host key (ed25519, generated once) and a known_hosts line for it.
GITEA_SSH_DIR=$GITEA_STATE/ssh
GITEA_SSH_HOST_KEY=$GITEA_SSH_DIR/host_ed25519
GITEA_SSH_KNOWN_HOSTS=$GITEA_SSH_DIR/known_hosts
# The SSH user of every Gitea URL (ssh://git@127.0.0.1:PORT/owner/name.git); Gitea refuses others.
GITEA_SSH_USER=git
# git-ssh: a plain Git server (not Gitea), sshd with its own config, host key and authorized_keys.
PLAIN_GIT_STATE=$STATE/git-ssh
PLAIN_GIT_ROOT=$PLAIN_GIT_STATE/repos
HELMREPO_STATE=$STATE/helm-repo
REGISTRY_STATE=$STATE/registry
# registry-auth: the same distribution binary, its own storage, and basic auth from an htpasswd
# file (bcrypt), as a private chart registry of a Flux user. One user, read and write.
REGISTRY_AUTH_STATE=$STATE/registry-auth
REGISTRY_AUTH_USER=fluxup-reader
REGISTRY_AUTH_PASSWORD=sandbox-registry-secret
DEX_STATE=$STATE/dex
OIDC_CLIENT_ID=fluxup
OIDC_CLIENT_SECRET=fluxup-sandbox-secret
DEMO_USER=demo@fluxup.dev
# A second user, for tests of what RBAC forbids (same password).
VIEWER_USER=viewer@fluxup.dev
# The port tests serve FluxUp on when they log in through Dex (a registered redirect URI).
FLUXUP_TEST_PORT=$((PORT_BASE + 50))
DEMO_PASSWORD=password
# bcrypt of "password" (cost 10), as in Dex's own example configuration.
# shellcheck disable=SC2016 # a literal hash, nothing to expand
DEMO_PASSWORD_HASH='$2a$10$2b2cU8CPhOTaGrs1HRQuAueS7JTT5ZHsHSzYiFPm1leZck7Mc8T4W'

full_port_of() {
  case $1 in
    source-controller) echo "$SOURCE_HEALTH_PORT" ;;
    kustomize-controller) echo "$KUSTOMIZE_HEALTH_PORT" ;;
    helm-controller) echo "$HELM_HEALTH_PORT" ;;
    notification-controller) echo "$NOTIFICATION_HEALTH_PORT" ;;
    csi-hostpath) echo "" ;; # a unix socket
    csi-provisioner) echo "$CSI_PROVISIONER_PORT" ;;
    csi-snapshotter) echo "$CSI_SNAPSHOTTER_PORT" ;;
    snapshot-controller) echo "$SNAPSHOT_CONTROLLER_PORT" ;;
    registry) echo "$REGISTRY_PORT" ;;
    registry-auth) echo "$REGISTRY_AUTH_PORT" ;;
    helm-repo) echo "$HELMREPO_PORT" ;;
    gitea) echo "$GITEA_PORT" ;;
    dex) echo "$DEX_PORT" ;;
    git-ssh) echo "$PLAIN_GIT_SSH_PORT" ;;
  esac
}

# Every port a full-profile component listens on (checked before starting).
full_ports() {
  echo "$SOURCE_STORAGE_PORT $SOURCE_METRICS_PORT $SOURCE_HEALTH_PORT $KUSTOMIZE_METRICS_PORT"
  echo "$KUSTOMIZE_HEALTH_PORT $HELM_METRICS_PORT $HELM_HEALTH_PORT $NOTIFICATION_EVENTS_PORT"
  echo "$NOTIFICATION_METRICS_PORT $NOTIFICATION_HEALTH_PORT $NOTIFICATION_RECEIVER_PORT"
  echo "$CSI_PROVISIONER_PORT $CSI_SNAPSHOTTER_PORT $SNAPSHOT_CONTROLLER_PORT"
  echo "$REGISTRY_PORT $REGISTRY_DEBUG_PORT $HELMREPO_PORT $GITEA_PORT $DEX_PORT $DEX_TELEMETRY_PORT"
  echo "$GITEA_SSH_PORT $PLAIN_GIT_SSH_PORT $REGISTRY_AUTH_PORT $REGISTRY_AUTH_DEBUG_PORT"
}

# ssh_answers <port>: an SSH server on 127.0.0.1:<port> sends its version banner.
ssh_answers() {
  timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" && IFS= read -r line <&3 && [[ $line == SSH-* ]]' _ "$1"
}

full_health() {
  local c=(curl -fsS --max-time 2 -o /dev/null)
  case $1 in
    source-controller | kustomize-controller | helm-controller | notification-controller)
      "${c[@]}" "http://127.0.0.1:$(full_port_of "$1")/readyz" ;;
    csi-hostpath) [[ -S $CSI_SOCKET ]] ;;
    csi-provisioner | csi-snapshotter | snapshot-controller)
      "${c[@]}" "http://127.0.0.1:$(full_port_of "$1")/metrics" ;;
    registry) "${c[@]}" "http://127.0.0.1:$REGISTRY_PORT/v2/" ;;
    registry-auth) # refuses a client without credentials, answers one with them
      [[ $(curl -sS --max-time 2 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$REGISTRY_AUTH_PORT/v2/") == 401 ]] &&
        "${c[@]}" -u "$REGISTRY_AUTH_USER:$REGISTRY_AUTH_PASSWORD" "http://127.0.0.1:$REGISTRY_AUTH_PORT/v2/" ;;
    helm-repo) "${c[@]}" "http://127.0.0.1:$HELMREPO_PORT/index.yaml" ;;
    gitea) "${c[@]}" "http://127.0.0.1:$GITEA_PORT/api/healthz" && ssh_answers "$GITEA_SSH_PORT" ;;
    dex) "${c[@]}" "http://127.0.0.1:$DEX_PORT/dex/.well-known/openid-configuration" ;;
    git-ssh) ssh_answers "$PLAIN_GIT_SSH_PORT" ;;
  esac 2>/dev/null
}

# full_built <component>: is the binary behind a component in the cache?
full_built() {
  case $1 in
    source-controller) [[ -f $FLUX_SC_DIR/.complete ]] ;;
    kustomize-controller) [[ -f $FLUX_KC_DIR/.complete ]] ;;
    helm-controller) [[ -f $FLUX_HC_DIR/.complete ]] ;;
    notification-controller) [[ -f $FLUX_NC_DIR/.complete ]] ;;
    csi-hostpath) [[ -f $HOSTPATH_DIR/.complete ]] ;;
    csi-provisioner) [[ -f $PROVISIONER_DIR/.complete ]] ;;
    csi-snapshotter | snapshot-controller) [[ -f $SNAPSHOTTER_DIR/.complete ]] ;;
    registry | registry-auth) [[ -f $REGISTRY_DIR/.complete ]] ;;
    helm-repo) [[ -f $HELM_DIR/.complete ]] ;; # needs helm to index the charts
    gitea) [[ -f $GITEA_DIR/.complete ]] ;;
    dex) [[ -f $DEX_DIR/.complete ]] ;;
    git-ssh) [[ -x $SSHD_BIN ]] ;; # installed from Debian, not built
    *) return 1 ;;
  esac
}

full_all_built() {
  local c
  for c in "${FULL_COMPONENTS[@]}"; do
    [[ $c == git-ssh ]] && continue # nothing to build (Debian's sshd)
    full_built "$c" || return 1
  done
}

# The components of the full profile that run: those built, except the CSI sidecars when the
# driver they serve is not.
full_enabled() {
  local c
  for c in "${FULL_COMPONENTS[@]}"; do
    full_built "$c" || continue
    case $c in
      csi-provisioner | csi-snapshotter) full_built csi-hostpath || continue ;;
    esac
    echo "$c"
  done
}

full_healthy() {
  local c
  for c in $(full_enabled); do
    pid_of "$c" >/dev/null && full_health "$c" || return 1
  done
  [[ -f $STATE/env.full ]]
}

start_flux() {
  local env=(env "KUBECONFIG=$KUBECONFIG_FILE" "RUNTIME_NAMESPACE=$FLUX_NAMESPACE")
  local events=http://127.0.0.1:$NOTIFICATION_EVENTS_PORT/
  mkdir -p "$STATE/flux-storage"
  # Artifacts are served and advertised on 127.0.0.1, so helm- and
  # kustomize-controller (local processes too) can download them.
  if full_built source-controller; then
    start source-controller "${env[@]}" "$FLUX_SC_DIR/bin/source-controller" \
      --storage-path="$STATE/flux-storage" \
      --storage-addr="127.0.0.1:$SOURCE_STORAGE_PORT" \
      --storage-adv-addr="127.0.0.1:$SOURCE_STORAGE_PORT" \
      --metrics-addr="127.0.0.1:$SOURCE_METRICS_PORT" \
      --health-addr="127.0.0.1:$SOURCE_HEALTH_PORT" \
      --events-addr="$events"
  fi
  if full_built kustomize-controller; then
    start kustomize-controller "${env[@]}" "$FLUX_KC_DIR/bin/kustomize-controller" \
      --metrics-addr="127.0.0.1:$KUSTOMIZE_METRICS_PORT" \
      --health-addr="127.0.0.1:$KUSTOMIZE_HEALTH_PORT" \
      --events-addr="$events" --no-remote-bases=true
  fi
  if full_built helm-controller; then
    start helm-controller "${env[@]}" "$FLUX_HC_DIR/bin/helm-controller" \
      --metrics-addr="127.0.0.1:$HELM_METRICS_PORT" \
      --health-addr="127.0.0.1:$HELM_HEALTH_PORT" \
      --events-addr="$events"
  fi
  if full_built notification-controller; then
    start notification-controller "${env[@]}" "$FLUX_NC_DIR/bin/notification-controller" \
      --metrics-addr="127.0.0.1:$NOTIFICATION_METRICS_PORT" \
      --health-addr="127.0.0.1:$NOTIFICATION_HEALTH_PORT" \
      --events-addr="127.0.0.1:$NOTIFICATION_EVENTS_PORT" \
      --receiverAddr="127.0.0.1:$NOTIFICATION_RECEIVER_PORT"
  fi
}

start_csi() {
  mkdir -p "$CSI_STATE" "$(dirname "$CSI_SOCKET")"
  rm -f "$CSI_SOCKET"
  # Topology off in the driver and the provisioner: only kubelet creates
  # CSINode objects, so with topology the provisioner would find no topology
  # ("no available topology found") and never provision.
  if full_built csi-hostpath; then
    start csi-hostpath "$HOSTPATH_DIR/bin/csi-hostpath" \
      --endpoint="unix://$CSI_SOCKET" \
      --driver-name="$CSI_DRIVER" \
      --state-dir="$CSI_STATE"
  fi
  # The sidecars talk to the driver's socket and exit without it: they run only beside it.
  if full_built csi-hostpath && full_built csi-provisioner; then
    start csi-provisioner "$PROVISIONER_DIR/bin/csi-provisioner" \
      --kubeconfig="$KUBECONFIG_FILE" \
      --csi-address="$CSI_SOCKET" \
      --immediate-topology=false \
      --extra-create-metadata=true \
      --leader-election=false \
      --http-endpoint="127.0.0.1:$CSI_PROVISIONER_PORT"
  fi
  if full_built csi-snapshotter; then
    if full_built csi-hostpath; then
      start csi-snapshotter "$SNAPSHOTTER_DIR/bin/csi-snapshotter" \
        --kubeconfig="$KUBECONFIG_FILE" \
        --csi-address="$CSI_SOCKET" \
        --leader-election=false \
        --http-endpoint="127.0.0.1:$CSI_SNAPSHOTTER_PORT"
    fi
    start snapshot-controller "$SNAPSHOTTER_DIR/bin/snapshot-controller" \
      --kubeconfig="$KUBECONFIG_FILE" \
      --leader-election=false \
      --http-endpoint="127.0.0.1:$SNAPSHOT_CONTROLLER_PORT"
  fi
}

csi_objects() {
  cat <<YAML
apiVersion: storage.k8s.io/v1
kind: CSIDriver
metadata:
  name: $CSI_DRIVER
spec:
  attachRequired: false
  podInfoOnMount: true
  volumeLifecycleModes: [Persistent]
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: csi-hostpath
  annotations:
    storageclass.kubernetes.io/is-default-class: "true"
provisioner: $CSI_DRIVER
reclaimPolicy: Delete
volumeBindingMode: Immediate
allowVolumeExpansion: false # the sandbox driver does not resize
---
apiVersion: snapshot.storage.k8s.io/v1
kind: VolumeSnapshotClass
metadata:
  name: csi-snapclass
  annotations:
    snapshot.storage.kubernetes.io/is-default-class: "true"
driver: $CSI_DRIVER
deletionPolicy: Delete
YAML
}

start_registry() {
  full_built registry || return 0
  mkdir -p "$REGISTRY_STATE/data"
  cat >"$REGISTRY_STATE/config.yml" <<YAML
version: 0.1
log:
  level: warn
  accesslog: {disabled: true}
storage:
  filesystem: {rootdirectory: $REGISTRY_STATE/data}
  delete: {enabled: true}
http:
  addr: 127.0.0.1:$REGISTRY_PORT
  debug: {addr: 127.0.0.1:$REGISTRY_DEBUG_PORT}
  headers: {X-Content-Type-Options: [nosniff]}
YAML
  start registry env OTEL_TRACES_EXPORTER=none "$REGISTRY_DIR/bin/registry" serve "$REGISTRY_STATE/config.yml"
}

start_registry_auth() {
  full_built registry || return 0
  mkdir -p "$REGISTRY_AUTH_STATE/data"
  # bcrypt, the only hash distribution's htpasswd accepts; Debian's libxcrypt makes it. Cost 4
  # (rounds=16, bcrypt's minimum): the registry checks the hash on every request.
  python3 -W ignore -c 'import crypt, sys; print(sys.argv[1] + ":" + crypt.crypt(sys.argv[2], crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16)))' \
    "$REGISTRY_AUTH_USER" "$REGISTRY_AUTH_PASSWORD" >"$REGISTRY_AUTH_STATE/htpasswd"
  cat >"$REGISTRY_AUTH_STATE/config.yml" <<YAML
version: 0.1
log:
  level: warn
  accesslog: {disabled: true}
storage:
  filesystem: {rootdirectory: $REGISTRY_AUTH_STATE/data}
  delete: {enabled: true}
auth:
  htpasswd:
    realm: fluxup-sandbox
    path: $REGISTRY_AUTH_STATE/htpasswd
http:
  addr: 127.0.0.1:$REGISTRY_AUTH_PORT
  debug: {addr: 127.0.0.1:$REGISTRY_AUTH_DEBUG_PORT}
  headers: {X-Content-Type-Options: [nosniff]}
YAML
  start registry-auth env OTEL_TRACES_EXPORTER=none "$REGISTRY_DIR/bin/registry" serve "$REGISTRY_AUTH_STATE/config.yml"
}

start_helm_repo() {
  full_built helm-repo || return 0
  mkdir -p "$HELMREPO_STATE"
  [[ -f $HELMREPO_STATE/index.yaml ]] || "$HELM_DIR/bin/helm" repo index "$HELMREPO_STATE" \
    --url "http://127.0.0.1:$HELMREPO_PORT" >/dev/null
  start helm-repo python3 -m http.server --bind 127.0.0.1 --directory "$HELMREPO_STATE" "$HELMREPO_PORT"
}

gitea_ini() {
  local secret internal jwt
  secret=$(openssl rand -hex 32)
  internal=$(openssl rand -hex 52)
  jwt=$(openssl rand -base64 32 | tr '+/' '-_' | tr -d '=')
  cat <<INI
APP_NAME = FluxUp sandbox
RUN_MODE = prod
WORK_PATH = $GITEA_STATE
; The sandbox (and CI) runs as root; Gitea refuses that unless told.
I_AM_BEING_UNSAFE_RUNNING_AS_ROOT = true

[server]
PROTOCOL = http
HTTP_ADDR = 127.0.0.1
HTTP_PORT = $GITEA_PORT
DOMAIN = 127.0.0.1
ROOT_URL = http://127.0.0.1:$GITEA_PORT/
$(gitea_ssh_ini)
OFFLINE_MODE = true
STATIC_ROOT_PATH = $GITEA_DIR/static
APP_DATA_PATH = $GITEA_STATE/data
LFS_START_SERVER = false

[database]
DB_TYPE = sqlite3
PATH = $GITEA_STATE/data/gitea.db
SQLITE_JOURNAL_MODE = WAL

[repository]
ROOT = $GITEA_STATE/repositories
DEFAULT_BRANCH = main

[security]
INSTALL_LOCK = true
SECRET_KEY = $secret
INTERNAL_TOKEN = $internal
PASSWORD_HASH_ALGO = pbkdf2_hi

[oauth2]
JWT_SECRET = $jwt

[service]
DISABLE_REGISTRATION = true
REQUIRE_SIGNIN_VIEW = false

[webhook]
; The default ("external") blocks 127.0.0.1, where every sandbox receiver lives.
ALLOWED_HOST_LIST = loopback,private

[log]
MODE = console
LEVEL = Warn
ROOT_PATH = $GITEA_STATE/log

[cron]
ENABLED = false

[indexer]
REPO_INDEXER_ENABLED = false

[mailer]
ENABLED = false

[migrations]
ALLOW_LOCALNETWORKS = true
INI
}

# The [server] keys of Gitea's built-in SSH server. gitea_ssh_patch puts them into an app.ini made
# before they existed, so the sandbox needs no purge for them.
GITEA_SSH_KEYS='DISABLE_SSH|START_SSH_SERVER|SSH_DOMAIN|SSH_LISTEN_HOST|SSH_PORT|SSH_LISTEN_PORT|SSH_SERVER_HOST_KEYS|BUILTIN_SSH_SERVER_USER|SSH_USER'
gitea_ssh_ini() {
  cat <<INI
DISABLE_SSH = false
START_SSH_SERVER = true
SSH_DOMAIN = 127.0.0.1
SSH_LISTEN_HOST = 127.0.0.1
SSH_PORT = $GITEA_SSH_PORT
SSH_LISTEN_PORT = $GITEA_SSH_PORT
SSH_SERVER_HOST_KEYS = $GITEA_SSH_HOST_KEY
; The built-in server accepts this user name only (default: RUN_USER, root here).
BUILTIN_SSH_SERVER_USER = $GITEA_SSH_USER
SSH_USER = $GITEA_SSH_USER
INI
}

# gitea_ssh_patch: rewrite the SSH keys of app.ini's [server] section (the rest, secrets
# included, is kept), generate the host key once, and write the known_hosts file.
gitea_ssh_patch() {
  local ini=$GITEA_STATE/app.ini
  mkdir -p "$GITEA_SSH_DIR"
  [[ -f $GITEA_SSH_HOST_KEY ]] || ssh-keygen -q -t ed25519 -N '' -C gitea-sandbox -f "$GITEA_SSH_HOST_KEY"
  echo "[127.0.0.1]:$GITEA_SSH_PORT $(cut -d' ' -f1,2 "$GITEA_SSH_HOST_KEY.pub")" >"$GITEA_SSH_KNOWN_HOSTS"
  # awk -v would interpret escapes: pass the pattern and the block through the environment.
  KEYS="^($GITEA_SSH_KEYS)[ \t]*=" BLOCK=$(gitea_ssh_ini) awk '
    /^[ \t]*\[/ { section = $0 }
    section == "[server]" && ($0 ~ ENVIRON["KEYS"] || $0 ~ /^; The built-in server accepts/) { next }
    { print }
    $0 == "[server]" { print ENVIRON["BLOCK"] }
  ' "$ini" >"$ini.tmp"
  if cmp -s "$ini" "$ini.tmp"; then rm -f "$ini.tmp"; else mv "$ini.tmp" "$ini"; fi
}

gitea_cmd() {
  env "GITEA_WORK_DIR=$GITEA_STATE" HOME="$GITEA_STATE" "$GITEA_DIR/bin/gitea" --config "$GITEA_STATE/app.ini" "$@"
}

# gitea_setup: first run only: config, database, admin user, API token.
gitea_setup() {
  [[ -f $GITEA_STATE/.complete ]] && return 0
  rm -rf "$GITEA_STATE"
  mkdir -p "$GITEA_STATE/data" "$GITEA_STATE/log"
  gitea_ini >"$GITEA_STATE/app.ini"
  {
    gitea_cmd migrate
    gitea_cmd admin user create --admin --username "$GITEA_ADMIN" --password "$GITEA_ADMIN_PASSWORD" \
      --email "$GITEA_ADMIN@sandbox.local" --must-change-password=false
    # --raw prints the token, but Gitea also logs its running-as-root warning to stdout.
    gitea_cmd admin user generate-access-token --username "$GITEA_ADMIN" --token-name sandbox \
      --scopes all --raw | grep -E '^[0-9a-f]{40}$' | tail -n 1 >"$GITEA_STATE/token"
  } >>"$STATE/logs/gitea-setup.log" 2>&1 || {
    tail -n 30 "$STATE/logs/gitea-setup.log" >&2
    die "Gitea setup failed (log: $STATE/logs/gitea-setup.log)"
  }
  [[ -s $GITEA_STATE/token ]] || die "Gitea gave no API token (log: $STATE/logs/gitea-setup.log)"
  touch "$GITEA_STATE/.complete"
}

start_gitea() {
  full_built gitea || return 0
  gitea_setup
  gitea_ssh_patch
  start gitea env "GITEA_WORK_DIR=$GITEA_STATE" HOME="$GITEA_STATE" "$GITEA_DIR/bin/gitea" web \
    --config "$GITEA_STATE/app.ini"
}

start_dex() {
  full_built dex || return 0
  mkdir -p "$DEX_STATE"
  cat >"$DEX_STATE/config.yaml" <<YAML
# Dex for the sandbox: static client "$OIDC_CLIENT_ID", static demo user, in-memory storage.
issuer: http://127.0.0.1:$DEX_PORT/dex
storage:
  type: memory
web:
  http: 127.0.0.1:$DEX_PORT
telemetry:
  http: 127.0.0.1:$DEX_TELEMETRY_PORT
logger:
  level: warn
oauth2:
  skipApprovalScreen: true
  # Enables grant_type=password against the static users, for headless tests.
  passwordConnector: local
  responseTypes: [code]
enablePasswordDB: true
staticClients:
  - id: $OIDC_CLIENT_ID
    secret: $OIDC_CLIENT_SECRET
    name: FluxUp
    redirectURIs:
      - http://127.0.0.1:3000/auth/callback
      - http://localhost:3000/auth/callback
      - http://127.0.0.1:$FLUXUP_TEST_PORT/auth/callback
# FluxUp names people by email only when the issuer verified it (Dex's default for static
# users; said here since FluxUp depends on it).
staticPasswords:
  - email: $DEMO_USER
    emailVerified: true
    hash: "$DEMO_PASSWORD_HASH"
    username: demo
    userID: 5d1f0a0e-7b5c-4c53-9a54-2f5b0c1d9e01
  - email: $VIEWER_USER
    emailVerified: true
    hash: "$DEMO_PASSWORD_HASH"
    username: viewer
    userID: 5d1f0a0e-7b5c-4c53-9a54-2f5b0c1d9e02
YAML
  start dex "$DEX_DIR/bin/dex" serve "$DEX_STATE/config.yaml"
}

# git-ssh: OpenSSH's sshd on 127.0.0.1, key-only login for the user running the sandbox, no
# ForceCommand: `git-upload-pack '<abs path>'` and `git-receive-pack` run in that user's shell, on
# the bare repositories under $PLAIN_GIT_ROOT. Host key generated once; authorized_keys is ours.
start_git_ssh() {
  full_built git-ssh || { log "WARNING: $SSHD_BIN missing (apt-get install openssh-server): no git-ssh"; return 0; }
  local d=$PLAIN_GIT_STATE user
  user=$(id -un)
  mkdir -p "$PLAIN_GIT_ROOT"
  [[ -f $d/host_ed25519 ]] || ssh-keygen -q -t ed25519 -N '' -C git-ssh-sandbox -f "$d/host_ed25519"
  touch "$d/authorized_keys"
  chmod 600 "$d/authorized_keys"
  echo "[127.0.0.1]:$PLAIN_GIT_SSH_PORT $(cut -d' ' -f1,2 "$d/host_ed25519.pub")" >"$d/known_hosts"
  cat >"$d/sshd_config" <<CONF
# Generated by sandbox/full.sh on every start.
Port $PLAIN_GIT_SSH_PORT
ListenAddress 127.0.0.1
HostKey $d/host_ed25519
PidFile $d/sshd.pid
AuthorizedKeysFile $d/authorized_keys
AllowUsers $user
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PermitRootLogin prohibit-password
StrictModes no
PermitUserEnvironment no
# git sends GIT_PROTOCOL (SendEnv) to ask for protocol v2, as real Git hosts speak it.
AcceptEnv GIT_PROTOCOL
PermitTTY no
X11Forwarding no
AllowTcpForwarding no
AllowAgentForwarding no
AllowStreamLocalForwarding no
PrintMotd no
LogLevel INFO
CONF
  # As root, sshd needs its privilege-separation directory.
  if [[ $(id -u) -eq 0 ]]; then mkdir -p /run/sshd && chmod 755 /run/sshd; fi
  "$SSHD_BIN" -t -f "$d/sshd_config" || die "sshd rejects $d/sshd_config"
  # -D: stay in the foreground (the pid is sshd's), -e: log to stderr, i.e. logs/git-ssh.log.
  start git-ssh "$SSHD_BIN" -D -e -f "$d/sshd_config"
}

write_env_full() {
  {
    echo "SANDBOX_PROFILE=full"
    echo "FLUX_NAMESPACE=$FLUX_NAMESPACE"
    echo "FLUX_SOURCE_STORAGE=http://127.0.0.1:$SOURCE_STORAGE_PORT"
    echo "FLUX_EVENTS_URL=http://127.0.0.1:$NOTIFICATION_EVENTS_PORT/"
    echo "FLUX_RECEIVER_URL=http://127.0.0.1:$NOTIFICATION_RECEIVER_PORT"
    if full_built csi-hostpath; then
      echo "CSI_DRIVER=$CSI_DRIVER"
      echo "CSI_STATE_DIR=$CSI_STATE"
      echo "CSI_SOCKET=$CSI_SOCKET"
      echo "CSI_STORAGE_CLASS=csi-hostpath"
      echo "CSI_SNAPSHOT_CLASS=csi-snapclass"
    fi
    if full_built registry; then
      echo "REGISTRY_HOST=127.0.0.1:$REGISTRY_PORT"
      echo "REGISTRY_URL=http://127.0.0.1:$REGISTRY_PORT"
      echo "OCI_CHARTS=oci://127.0.0.1:$REGISTRY_PORT/charts"
      echo "REGISTRY_AUTH_HOST=127.0.0.1:$REGISTRY_AUTH_PORT"
      echo "REGISTRY_AUTH_USER=$REGISTRY_AUTH_USER"
      echo "REGISTRY_AUTH_PASSWORD=$REGISTRY_AUTH_PASSWORD"
      echo "OCI_CHARTS_AUTH=oci://127.0.0.1:$REGISTRY_AUTH_PORT/charts"
    fi
    if full_built helm-repo; then
      echo "HELM_REPO_URL=http://127.0.0.1:$HELMREPO_PORT"
      echo "HELM_REPO_DIR=$HELMREPO_STATE"
      echo "SANDBOX_HELM=$HELM_DIR/bin/helm"
    fi
    if full_built gitea; then
      echo "GITEA_URL=http://127.0.0.1:$GITEA_PORT"
      echo "GITEA_TOKEN=$(<"$GITEA_STATE/token")"
      echo "GITEA_ADMIN_USER=$GITEA_ADMIN"
      echo "GITEA_ADMIN_PASSWORD=$GITEA_ADMIN_PASSWORD"
      echo "GITEA_SSH_PORT=$GITEA_SSH_PORT"
      echo "GITEA_SSH_USER=$GITEA_SSH_USER"
      echo "GITEA_SSH_KNOWN_HOSTS=$GITEA_SSH_KNOWN_HOSTS"
    fi
    if full_built git-ssh; then
      echo "PLAIN_GIT_SSH_PORT=$PLAIN_GIT_SSH_PORT"
      echo "PLAIN_GIT_ROOT=$PLAIN_GIT_ROOT"
      echo "PLAIN_GIT_KNOWN_HOSTS=$PLAIN_GIT_STATE/known_hosts"
      echo "PLAIN_GIT_AUTHORIZED_KEYS=$PLAIN_GIT_STATE/authorized_keys"
      echo "PLAIN_GIT_USER=$(id -un)"
    fi
    if full_built dex; then
      echo "OIDC_ISSUER=http://127.0.0.1:$DEX_PORT/dex"
      echo "OIDC_CLIENT_ID=$OIDC_CLIENT_ID"
      echo "OIDC_CLIENT_SECRET=$OIDC_CLIENT_SECRET"
      echo "DEMO_USER=$DEMO_USER"
      echo "DEMO_PASSWORD=$DEMO_PASSWORD"
      echo "VIEWER_USER=$VIEWER_USER"
      echo "FLUXUP_TEST_PORT=$FLUXUP_TEST_PORT"
    fi
  } >"$STATE/env.full"
}

stop_full() {
  # Consumers of the API and of each other first, the servers last.
  stop_group kustomize-controller helm-controller notification-controller \
    csi-provisioner csi-snapshotter snapshot-controller
  stop_group source-controller csi-hostpath registry registry-auth helm-repo gitea dex git-ssh
}

# up_full: the tier-2 components, on a control plane that is up.
up_full() {
  local t0 c p
  t0=$(now_ms)
  # SANDBOX_SKIP_BUILD=1: run what is built, build nothing (e.g. while a build runs elsewhere).
  if ! full_all_built && [[ ${SANDBOX_SKIP_BUILD:-} != 1 ]]; then
    exec 9>"$CACHE/.build.lock"
    if ! flock -n 9; then
      log "another build is running in $CACHE: waiting for it"
      flock 9
    fi
    cmd_build_full
    exec 9>&-
  fi
  stop_full >/dev/null
  for p in $(full_ports); do
    ! port_in_use "$p" || die "port $p (full profile) is already in use (another sandbox? set SANDBOX_PORT_BASE)"
  done
  k create namespace "$FLUX_NAMESPACE" --dry-run=client -o yaml | k apply -f - >/dev/null

  start_flux
  start_csi
  start_registry
  start_registry_auth
  start_helm_repo
  start_gitea
  start_dex
  start_git_ssh
  if full_built csi-hostpath; then
    csi_objects | k apply --server-side --force-conflicts --field-manager=sandbox -f - >/dev/null
  fi
  for c in $(full_enabled); do
    wait_healthy "$c" 120
  done
  write_env_full
  # The demo charts and images: published once per state dir, and again when the charts change.
  local charts_hash
  charts_hash=$(cd "$SANDBOX_DIR/demo" && find charts publish -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16)
  if full_built registry && full_built helm-repo && [[ $(cat "$STATE/.published" 2>/dev/null) != "$charts_hash" ]]; then
    SANDBOX_STATE=$STATE SANDBOX_ENV_FILE=$STATE/env.full "$SANDBOX_DIR/demo/publish" >>"$STATE/logs/publish.log" 2>&1 || {
      tail -n 30 "$STATE/logs/publish.log" >&2
      die "publishing the demo charts and images failed (log: $STATE/logs/publish.log)"
    }
    echo "$charts_hash" >"$STATE/.published"
  fi
  log "full profile up in $(elapsed "$t0") s: $(full_enabled | tr '\n' ' ')"
}
