#!/usr/bin/env bash
# Starts or stops a Redis server that speaks only TLS on loopback, for the Redis store tests.
#
#   scripts/redis-tls.sh start [PORT]   # prints the server's URL on its last line
#   scripts/redis-tls.sh stop  [PORT]
#
# `start` makes a throwaway CA and a server certificate it signs (for 127.0.0.1 and
# localhost) with openssl, then starts redis-server on 127.0.0.1:PORT (default 7320, or
# $REDIS_TLS_PORT) with TLS and no plain-text port. Everything lives in a temporary directory
# that `stop` removes; the CA's key is deleted once the certificate is signed. The URL names
# the CA: rediss://127.0.0.1:PORT?tls_ca_file=DIR/ca.pem. `start` first stops a server an
# earlier run of it left, refuses a port that something else holds, and stops what it started
# if it fails half-way. `stop` only ever stops the server this script started (by its
# pidfile).
set -euo pipefail

command=${1:?usage: $0 start|stop [PORT]}
port=${2:-${REDIS_TLS_PORT:-7320}}
dir="${TMPDIR:-/tmp}/session-engine-redis-tls-$port"

script=redis-tls
# shellcheck source=scripts/redis-servers.sh
source "$(dirname "$0")/redis-servers.sh"

certificates() { # a CA, and a certificate it signs for 127.0.0.1 and localhost
    local ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
    openssl req -x509 "${ec[@]}" -days 2 -subj "/CN=session-engine test CA" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -keyout "$dir/ca.key" -out "$dir/ca.pem"
    openssl req -new "${ec[@]}" -subj "/CN=localhost" \
        -keyout "$dir/server.key" -out "$dir/server.csr"
    printf '%s\n' "basicConstraints=CA:FALSE" "keyUsage=critical,digitalSignature" \
        "extendedKeyUsage=serverAuth" "subjectAltName=IP:127.0.0.1,DNS:localhost" \
        >"$dir/server.ext"
    openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
        -CAcreateserial -days 2 -extfile "$dir/server.ext" -out "$dir/server.pem"
    rm -f "$dir/ca.key" "$dir/ca.srl" "$dir/server.csr" "$dir/server.ext"
}

case $command in
start)
    begin "$port"
    certificates >"$dir/openssl.log" 2>&1 || { cat "$dir/openssl.log" >&2; exit 1; }
    redis-server --port 0 --tls-port "$port" --bind 127.0.0.1 \
        --tls-cert-file "$dir/server.pem" --tls-key-file "$dir/server.key" \
        --tls-ca-cert-file "$dir/ca.pem" --tls-auth-clients no \
        --save "" --appendonly no --dir "$dir" --daemonize yes \
        --logfile "$dir/$port.log" --pidfile "$dir/$port.pid"
    wait_for "the server answering over TLS" \
        redis-cli --tls --cacert "$dir/ca.pem" -h 127.0.0.1 -p "$port" ping
    echo "rediss://127.0.0.1:$port?tls_ca_file=$dir/ca.pem"
    ;;
stop)
    stop
    ;;
*)
    echo "usage: $0 start|stop [PORT]" >&2
    exit 2
    ;;
esac
