#!/bin/sh
# Starts, stops and checks the local lab's real services (PostgreSQL, Redis,
# nginx from Debian's packages, and a small app) on 127.0.0.1, each with its
# data under $LAB_DIR. Called by playbooks/local-lab.yaml:
#   lab.sh start|stop postgres PORT | redis PORT | app PORT PG_PORT REDIS_PORT | web PORT UPSTREAM_PORT
set -eu
: "${LAB_DIR:?set LAB_DIR to a directory for the lab's data}"
here=$(cd "$(dirname "$0")" && pwd)
action=$1 service=$2 port=$3
mkdir -p "$LAB_DIR"

root() { [ "$(id -u)" = 0 ]; }
# PostgreSQL refuses to run as root; the Debian package made a user for it.
as_postgres() { if root; then runuser -u postgres -- "$@"; else "$@"; fi; }
pgbin() { ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1; }

case "$action $service" in
"start postgres")
    data=$LAB_DIR/postgres
    if [ ! -f "$data/PG_VERSION" ]; then
        mkdir -p "$data"
        if root; then chmod 755 "$LAB_DIR"; chown postgres "$data"; fi
        as_postgres "$(pgbin)/initdb" -D "$data" -A trust -U postgres > "$LAB_DIR/initdb.log"
    fi
    as_postgres "$(pgbin)/pg_ctl" -D "$data" -l "$data/server.log" -w -t 60 \
        -o "-p $port -k $data -c listen_addresses=127.0.0.1" start
    ;;
"stop postgres")
    as_postgres "$(pgbin)/pg_ctl" -D "$LAB_DIR/postgres" -m fast -w stop
    ;;
"start redis")
    redis-server --port "$port" --bind 127.0.0.1 --daemonize yes --save "" --appendonly no \
        --dir "$LAB_DIR" --pidfile "$LAB_DIR/redis.pid" --logfile "$LAB_DIR/redis.log"
    ;;
"stop redis")
    redis-cli -p "$port" shutdown nosave || true
    ;;
"start app")
    # Output to a file: the start step ends when its output pipes close.
    nohup python3 "$here/app.py" "$port" "$4" "$5" > "$LAB_DIR/app.log" 2>&1 < /dev/null &
    echo $! > "$LAB_DIR/app.pid"
    ;;
"stop app")
    kill "$(cat "$LAB_DIR/app.pid")" 2> /dev/null || true
    rm -f "$LAB_DIR/app.pid"
    ;;
"start web")
    mkdir -p "$LAB_DIR/nginx"
    cat > "$LAB_DIR/nginx/nginx.conf" <<CONF
daemon on;
worker_processes 1;
pid $LAB_DIR/nginx/nginx.pid;
error_log $LAB_DIR/nginx/error.log;
events { worker_connections 64; }
http {
    access_log off;
    client_body_temp_path $LAB_DIR/nginx/body;
    proxy_temp_path $LAB_DIR/nginx/proxy;
    fastcgi_temp_path $LAB_DIR/nginx/fastcgi;
    uwsgi_temp_path $LAB_DIR/nginx/uwsgi;
    scgi_temp_path $LAB_DIR/nginx/scgi;
    server {
        listen 127.0.0.1:$port;
        location / { proxy_pass http://127.0.0.1:$4; }
    }
}
CONF
    nginx -p "$LAB_DIR/nginx" -c "$LAB_DIR/nginx/nginx.conf" 2> "$LAB_DIR/nginx/start.log"
    ;;
"stop web")
    nginx -p "$LAB_DIR/nginx" -c "$LAB_DIR/nginx/nginx.conf" -s quit
    ;;
*)
    echo "usage: lab.sh start|stop postgres|redis|app|web PORT ..." >&2
    exit 2
    ;;
esac
