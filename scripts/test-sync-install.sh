#!/usr/bin/env bash
# Runs the install steps of docs/sync.md as written: every fenced block that follows a
# `<!-- test-sync-install: KIND [PATH] -->` line, in order, where KIND is
#   run      the block is run with bash (-euo pipefail), from the checkout;
#   file     the block is the content of PATH (the unit, the staleness check);
#   systemd  the block needs a running systemd (systemctl): it is checked with `bash -n`,
#            and in its place the unit's own ExecStart runs as the unit's user with the unit's
#            environment file, against a local HTTPS stand-in for LaunchDarkly
#            (scripts/fake_ld_https.py) trusted through --ca-file.
# The blocks run in a private mount namespace (unshare -m) over copies of /etc and
# /usr/local/bin and an empty /var/lib, so the host keeps no user, unit or binary. Where a
# namespace cannot be made (a container without CAP_SYS_ADMIN), they run on the host itself
# only with SEGSTORE_SYNC_INSTALL_ON_HOST=1 (CI sets it: its machine is thrown away), else the
# script fails saying so.
# Then: the sync without --ca-file refuses the stand-in's certificate and keeps retrying
# (synchronized_on stays unset); HTTPS_PROXY (and http_proxy alone) send it through a CONNECT
# proxy (scripts/connect_proxy.py), NO_PROXY past it; and the staleness check of docs/sync.md reports a store synced
# long ago, one never synced and a missing one. Needs root; installs jq, openssl, python3 and
# systemd (for systemd-analyze) with apt-get when missing. Bounded: every wait gives up after
# 30 s. SEGSTORE_SYNC_INSTALL_BINARY=/abs/path/segstore uses that binary in place of the first
# block's `cargo build --release` (CI sets it to the build its test suites used).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
DOC=$ROOT/docs/sync.md

step() { echo "== sync install: $*"; }
fail() { echo "error: $*" >&2; exit 1; }

if [ "${1:-}" != --inside ]; then
    [ "$(id -u)" = 0 ] || fail "run as root: the steps create a system user and files under /etc"
    missing=()
    command -v jq >/dev/null || missing+=(jq)
    command -v openssl >/dev/null || missing+=(openssl)
    command -v python3 >/dev/null || missing+=(python3)
    command -v systemd-analyze >/dev/null || missing+=(systemd)
    command -v useradd >/dev/null || missing+=(passwd)
    command -v setpriv >/dev/null || missing+=(util-linux)
    if [ ${#missing[@]} -gt 0 ]; then
        step "apt-get install ${missing[*]}"
        DEBIAN_FRONTEND=noninteractive apt-get update -q
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
    fi

    WORK=$(mktemp -d)
    export WORK
    trap 'rm -rf "$WORK"' EXIT

    step "extracting the marked blocks of docs/sync.md"
    mkdir "$WORK/blocks"
    awk -v out="$WORK/blocks" '
        /^<!-- test-sync-install: .* -->$/ {
            if (pending != "") { print "a marker without a block: " pending > "/dev/stderr"; exit 1 }
            pending = $0
            sub(/^<!-- test-sync-install: /, "", pending); sub(/ -->$/, "", pending)
            next
        }
        pending != "" && /^```/ {
            n++; file = sprintf("%s/%02d", out, n)
            print pending > (file ".kind"); close(file ".kind")
            printf "" > file
            pending = ""; inblock = 1; next
        }
        pending != "" && NF > 0 { print "text between a marker and its block: " $0 > "/dev/stderr"; exit 1 }
        inblock && /^```$/ { inblock = 0; close(file); next }
        inblock { print > file }
    ' "$DOC"
    for kind in "$WORK"/blocks/*.kind; do echo "  $(basename "$kind" .kind): $(cat "$kind")"; done
    n_run=$(cat "$WORK"/blocks/*.kind | grep -c '^run$' || true)
    n_file=$(cat "$WORK"/blocks/*.kind | grep -c '^file ' || true)
    n_systemd=$(cat "$WORK"/blocks/*.kind | grep -c '^systemd$' || true)
    [ "$n_run" -ge 5 ] && [ "$n_file" -ge 2 ] && [ "$n_systemd" = 1 ] \
        || fail "docs/sync.md has $n_run run, $n_file file and $n_systemd systemd blocks: the markers are broken"

    if unshare -m --propagation private true 2>/dev/null; then
        step "running them in a private mount namespace"
        unshare -m --propagation private "$0" --inside namespace
    elif [ "${SEGSTORE_SYNC_INSTALL_ON_HOST:-}" = 1 ]; then
        step "no mount namespace here (unshare -m: not permitted); SEGSTORE_SYNC_INSTALL_ON_HOST=1: on the host"
        "$0" --inside host
    else
        fail "unshare -m is not permitted here, and SEGSTORE_SYNC_INSTALL_ON_HOST=1 (install on this host for real) is not set"
    fi
    step "all passed"
    exit 0
fi

# ---- inside: the namespace (or the host, when allowed) ----
if [ "${2:-}" = namespace ]; then
    cp -a /etc "$WORK/etc"
    mkdir -p /usr/local/bin "$WORK/var-lib"
    cp -a /usr/local/bin "$WORK/usr-local-bin"
    mount --bind "$WORK/etc" /etc
    mount --bind "$WORK/usr-local-bin" /usr/local/bin
    mount --bind "$WORK/var-lib" /var/lib
fi
export PATH=/usr/local/bin:$PATH
[ ! -e /usr/local/bin/segstore ] || [ "${2:-}" = host ] || fail "/usr/local/bin/segstore exists before the install"

SYNC_PID=
cleanup_inside() {
    local pid
    for pid in "$SYNC_PID" "${FAKE_PID:-}" "${PROXY_PID:-}"; do
        if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; fi
    done
}
trap cleanup_inside EXIT

# Waits up to 30 s for the command "$@" to succeed.
wait_for() {
    local what=$1; shift
    for _ in $(seq 300); do
        if "$@"; then return 0; fi
        sleep 0.1
    done
    fail "gave up after 30 s waiting for $what"
}

# "${as_user[@]}" PROGRAM...: runs PROGRAM as the segstore user, exec'd in place as systemd
# does (a simple command, so $! is the program itself and its exit status is the program's).
as_user=(setpriv --reuid=segstore --regid=segstore --init-groups --)

synced_at() { segstore --dir "$1" meta --json | jq -r '.synchronized_on // empty'; }
is_synced() { [ -n "$(synced_at "$1" 2>/dev/null)" ]; }

# The stand-in for LaunchDarkly: a CA, a certificate for 127.0.0.1 signed by it, the server.
start_fake_ld() {
    local pki=$WORK/pki
    mkdir -p "$pki"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
        -subj /CN=segstore-test-ca -keyout "$pki/ca.key" -out "$pki/ca.pem" 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -subj /CN=127.0.0.1 -keyout "$pki/server.key" -out "$pki/server.csr" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\n' >"$pki/ext"
    openssl x509 -req -in "$pki/server.csr" -CA "$pki/ca.pem" -CAkey "$pki/ca.key" -CAcreateserial \
        -days 2 -extfile "$pki/ext" -out "$pki/server.pem" 2>/dev/null
    chmod 0644 "$pki/ca.pem"
    chmod 0755 "$WORK" "$pki"
    python3 "$ROOT/scripts/fake_ld_https.py" "$pki/server.pem" "$pki/server.key" "$1" "$WORK/port" \
        2>"$WORK/fake-ld.log" &
    FAKE_PID=$!
    wait_for "the stand-in to listen" test -s "$WORK/port"
    FAKE_URI=https://127.0.0.1:$(cat "$WORK/port")
    CA_FILE=$pki/ca.pem
}

# The systemd block's stand-in: what `systemctl start segstore-sync@production` would run.
start_instance() {
    local instance=production unit=/etc/systemd/system/segstore-sync@.service
    local exec_start env_file user
    exec_start=$(sed -n 's/^ExecStart=//p' "$unit" | sed "s/%i/$instance/g")
    env_file=$(sed -n 's/^EnvironmentFile=//p' "$unit" | sed "s/%i/$instance/g")
    user=$(sed -n 's/^User=//p' "$unit")
    [ -n "$exec_start" ] && [ -f "$env_file" ] && [ -n "$user" ] || fail "the unit lacks ExecStart, EnvironmentFile or User"
    [ "$(stat -c '%a %U' "$env_file")" = "600 root" ] || fail "$env_file is not mode 0600, owned by root"
    local key
    key=$(sed -n 's/^LD_SDK_KEY=//p' "$env_file")
    start_fake_ld "$key"
    # StateDirectory=segstore/%i, StateDirectoryMode=0755: what systemd makes before starting.
    install -d -m 0755 /var/lib/segstore
    install -d -o "$user" -g "$user" -m 0755 "/var/lib/segstore/$instance"
    [ "$user" = segstore ] || fail "the unit runs as $user, not segstore"
    echo "+ setpriv --reuid=$user --regid=$user --init-groups -- env -i \$(<$env_file) $exec_start --base-uri $FAKE_URI --stream-uri $FAKE_URI --ca-file $CA_FILE"
    # shellcheck disable=SC2046,SC2086 # the environment file's lines and ExecStart are words
    "${as_user[@]}" env -i PATH=/usr/local/bin:/usr/bin:/bin $(grep -v '^#' "$env_file") \
        $exec_start --base-uri "$FAKE_URI" --stream-uri "$FAKE_URI" --ca-file "$CA_FILE" \
        2>"$WORK/sync.log" &
    SYNC_PID=$!
    STORE=/var/lib/segstore/$instance
    wait_for "the sync to catch up" is_synced "$STORE"
    wait_for "the stream to go live" grep -qs 'live (streaming)' "$WORK/sync.log"
    [ "$(segstore --dir "$STORE" meta --json | jq -r .cursor)" = 1700000000000 ] || fail "wrong cursor"
    [ "$(segstore --dir "$STORE" check --hash-key --json beta.g1 user-key | jq -r .status)" = included ] \
        || fail "user-key is not in beta.g1 after the sync"
    [ "$(stat -c %U "$STORE/MANIFEST")" = "$user" ] || fail "the store is not owned by $user"
    echo "sync as $user through the stand-in (trusted with --ca-file): $(segstore --dir "$STORE" meta --json | jq -c .)"
}

cd "$ROOT"
for kind_file in "$WORK"/blocks/*.kind; do
    block=${kind_file%.kind}
    read -r kind path <"$kind_file"
    case "$kind" in
        run)
            step "run docs/sync.md block $(basename "$block")"
            sed 's/^/  | /' "$block"
            if [ -n "${SEGSTORE_SYNC_INSTALL_BINARY:-}" ]; then
                # A binary built already (CI: the one the test suites ran), in place of the
                # block's own release build, which would add minutes; the rest runs as written.
                PREBUILT=$SEGSTORE_SYNC_INSTALL_BINARY bash -euo pipefail -c '
                    export CARGO_TARGET_DIR=$1
                    cargo() {
                        if [ "$1" = build ]; then
                            echo "  (cargo $*: not run; SEGSTORE_SYNC_INSTALL_BINARY=$PREBUILT instead)"
                            install -D -m 0755 "$PREBUILT" "$CARGO_TARGET_DIR/release/segstore"
                        else
                            command cargo "$@"
                        fi
                    }
                    . "$2"' _ "$WORK/prebuilt-target" "$block"
            else
                bash -euo pipefail "$block"
            fi
            ;;
        file)
            step "write $path (docs/sync.md block $(basename "$block"))"
            install -D -m 0644 "$block" "$path"
            ;;
        systemd)
            step "docs/sync.md block $(basename "$block") needs a running systemd: checked with bash -n, not run"
            sed 's/^/  | /' "$block"
            bash -n "$block"
            if [ "$(cat /proc/1/comm 2>/dev/null)" = systemd ]; then
                echo "  (PID 1 is systemd, but starting a unit would leave this namespace: not run)"
            else
                echo "  (PID 1 is $(cat /proc/1/comm 2>/dev/null || echo unknown), not systemd)"
            fi
            step "instead: the unit's ExecStart as its user, with its environment file"
            start_instance
            ;;
        *) fail "unknown marker kind '$kind'" ;;
    esac
done

step "SIGTERM: the sync stops after the batch in hand, exit 0"
kill -TERM "$SYNC_PID"
rc=0
wait "$SYNC_PID" || rc=$?
SYNC_PID=
[ "$rc" = 0 ] || fail "sync exited $rc after SIGTERM: $(tail -n 5 "$WORK/sync.log")"

step "without --ca-file the stand-in's certificate is refused, and retried"
OTHER=$WORK/no-ca-store
install -d -o segstore -g segstore -m 0755 "$OTHER"
"${as_user[@]}" env -i PATH=/usr/local/bin:/usr/bin:/bin "$(grep '^LD_SDK_KEY=' /etc/segstore/production.env)" \
    segstore --dir "$OTHER" sync --init --base-uri "$FAKE_URI" --stream-uri "$FAKE_URI" 2>"$WORK/no-ca.log" &
SYNC_PID=$!
wait_for "a TLS failure in the log" grep -qs 'backing off' "$WORK/no-ca.log"
grep -i 'certificate\|UnknownIssuer' "$WORK/no-ca.log" >/dev/null || fail "the failure names no certificate: $(cat "$WORK/no-ca.log")"
grep 'WARN' "$WORK/no-ca.log" | head -n 1
[ -z "$(synced_at "$OTHER")" ] || fail "a store synced through an untrusted certificate"
kill -TERM "$SYNC_PID"
wait "$SYNC_PID" || fail "sync without --ca-file did not exit 0 on SIGTERM"
SYNC_PID=

step "HTTPS_PROXY: the sync tunnels through a CONNECT proxy; NO_PROXY: it does not"
python3 "$ROOT/scripts/connect_proxy.py" "$WORK/proxy-port" "$WORK/proxy.log" 2>"$WORK/proxy.err" &
PROXY_PID=$!
wait_for "the proxy to listen" test -s "$WORK/proxy-port"
PROXY_URI=http://127.0.0.1:$(cat "$WORK/proxy-port")
: >"$WORK/proxy.log"
# Runs a sync into a new store with the environment "$@" until it is synced, then stops it.
sync_with_env() {
    local dir
    dir=$(mktemp -d "$WORK/store-XXXX")
    env "$@" LD_SDK_KEY="$(sed -n 's/^LD_SDK_KEY=//p' /etc/segstore/production.env)" \
        segstore --dir "$dir" sync --init --base-uri "$FAKE_URI" --stream-uri "$FAKE_URI" \
        --ca-file "$CA_FILE" 2>"$WORK/proxied.log" &
    SYNC_PID=$!
    wait_for "a sync with $* to catch up" is_synced "$dir"
    kill -TERM "$SYNC_PID"
    wait "$SYNC_PID" || fail "sync with $* did not exit 0 on SIGTERM"
    SYNC_PID=
}
sync_with_env HTTPS_PROXY="$PROXY_URI"
grep -qx "CONNECT 127.0.0.1:${FAKE_URI##*:}" "$WORK/proxy.log" || fail "no CONNECT through HTTPS_PROXY: $(cat "$WORK/proxy.log")"
echo "HTTPS_PROXY=$PROXY_URI: $(sort "$WORK/proxy.log" | uniq -c | tr -s ' ')"
: >"$WORK/proxy.log"
sync_with_env http_proxy="$PROXY_URI"
grep -q CONNECT "$WORK/proxy.log" || fail "http_proxy alone did not proxy the HTTPS requests"
echo "http_proxy alone (HTTPS requests): tunnelled too"
: >"$WORK/proxy.log"
sync_with_env HTTPS_PROXY="$PROXY_URI" NO_PROXY=localhost,127.0.0.1
[ ! -s "$WORK/proxy.log" ] || fail "NO_PROXY=127.0.0.1 still went through the proxy: $(cat "$WORK/proxy.log")"
echo "NO_PROXY=localhost,127.0.0.1: direct"
kill "$PROXY_PID"

step "--ca-file with no certificate in it is a usage error"
echo 'not a certificate' >"$WORK/empty.pem"
rc=0
LD_SDK_KEY=sdk-test segstore --dir "$WORK/unused" sync --init --ca-file "$WORK/empty.pem" 2>"$WORK/bad-ca.log" || rc=$?
[ "$rc" = 2 ] && grep -q 'no PEM certificate' "$WORK/bad-ca.log" || fail "exit $rc: $(cat "$WORK/bad-ca.log")"
cat "$WORK/bad-ca.log"

step "the staleness check: synced long ago, never synced, no store"
check_stale() { # expected exit, expected text, args...
    local want_rc=$1 want=$2 out rc=0
    shift 2
    out=$(segstore-check-stale "$@") || rc=$?
    echo "segstore-check-stale $*: exit $rc: $out"
    [ "$rc" = "$want_rc" ] || fail "exit $rc, not $want_rc"
    case "$out" in *"$want"*) ;; *) fail "the message does not say '$want'" ;; esac
}
OLD=$WORK/old-store
segstore --dir "$OLD" init >/dev/null
check_stale 2 "never synced" "$OLD"
segstore --dir "$OLD" mark-synced --at "$(( ($(date +%s) - 600) * 1000 ))" >/dev/null
check_stale 2 "last synced 60" "$OLD" 120
check_stale 0 "OK: $OLD synced 60" "$OLD" 900
check_stale 2 "segstore meta failed" "$WORK/absent" 2>/dev/null
check_stale 0 "OK: /var/lib/segstore/production synced" /var/lib/segstore/production
