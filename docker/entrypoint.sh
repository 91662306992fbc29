#!/bin/sh
# Start a ringmpi cluster node, or check its health.
#
#   ringmpi-node head     make this cluster's ssh key, publish it, stay up
#   ringmpi-node worker   serve ssh for the user mpi (the default)
#   ringmpi-node health   exit 0 when this node is ready
#
# Every node makes its own ssh host key at start and publishes the public
# half, with its slot count, on the shared volume /cluster. Only the public
# half of the head's user key leaves the head (as /cluster/ssh/authorized_keys).
set -eu

# The Slurm image (docker/Dockerfile with FLAVOUR=slurm) runs Slurm, not sshd.
if [ -x /usr/sbin/slurmd ]; then
    exec /usr/local/bin/ringmpi-slurm-node "$@"
fi

shared=/cluster
host=$(hostname)
ready=/run/ringmpi-ready

publish() {  # publish FILE: write stdin to FILE atomically
    cat >"$1.tmp.$$" && mv -f "$1.tmp.$$" "$1"
}

start_node() {
    umask 022
    mkdir -p "$shared/ssh/known_hosts.d" "$shared/nodes"
    rm -f "$ready"
    if [ ! -f /etc/ssh/ssh_host_ed25519_key ]; then
        ssh-keygen -q -t ed25519 -N '' -C "root@$host" -f /etc/ssh/ssh_host_ed25519_key
    fi
    printf '%s %s\n' "$host" "$(cut -d' ' -f1,2 /etc/ssh/ssh_host_ed25519_key.pub)" \
        | publish "$shared/ssh/known_hosts.d/$host"
    echo "slots=${RINGMPI_SLOTS:-$(nproc)}" | publish "$shared/nodes/$host"
}

case ${1:-worker} in
    head)
        start_node
        key=/home/mpi/.ssh/id_ed25519
        if [ ! -f "$key" ]; then
            runuser -u mpi -- sh -c "umask 077; mkdir -p /home/mpi/.ssh; \
                ssh-keygen -q -t ed25519 -N '' -C 'mpi@$host ringmpi cluster' -f $key"
        fi
        publish "$shared/ssh/authorized_keys" <"$key.pub"
        echo head >"$ready"
        exec sleep infinity
        ;;
    worker)
        start_node
        echo worker >"$ready"
        exec /usr/sbin/sshd -D -e
        ;;
    health)
        test -s "$ready" && test -s "$shared/ssh/authorized_keys" || exit 1
        if [ "$(cat "$ready")" = worker ]; then
            # ready once sshd accepts connections
            [ -n "$(ss -Hltn 'sport = :22')" ] || exit 1
        fi
        exit 0
        ;;
    *)
        exec "$@"
        ;;
esac
