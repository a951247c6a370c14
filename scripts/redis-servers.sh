# What scripts/redis-cluster.sh, redis-sentinel.sh and redis-tls.sh share; sourced, never run.
# Each sets `script` (its name, for messages) and `dir` (where its servers keep their pidfiles,
# logs and files) before sourcing this.

stop() { # stops only the servers this script started: those with a pidfile in $dir
    local pidfile pid
    for pidfile in "$dir"/*.pid; do
        [ -e "$pidfile" ] || continue
        pid=$(cat "$pidfile")
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$pid" 2>/dev/null || true
    done
    rm -rf "$dir"
}

wait_for() { # DESCRIPTION COMMAND...: retries COMMAND for up to 10 s
    local what=$1
    shift
    for _ in $(seq 100); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.1
    done
    echo "$script: $what did not happen within 10 s; logs in $dir" >&2
    return 1
}

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

begin() { # PORT...: what every start does first
    # An earlier run's servers go; a port that something else holds is an error; from here on,
    # a start that fails half-way stops what it started.
    stop
    local port
    for port in "$@"; do
        if listening "$port"; then
            echo "$script: port $port is taken by a server this script did not start" >&2
            exit 1
        fi
    done
    trap 'status=$?; [ "$status" = 0 ] || stop; exit "$status"' EXIT
    mkdir -p "$dir"
}
