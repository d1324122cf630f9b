#!/usr/bin/env bash
# slurm-local.sh: a one-node Slurm cluster on this machine, to try `srun --mpi=pmix`, `salloc … mpirun` and
# `sbatch` with bin/train (docs/distributed.md, "Slurm"; `make test-slurm`). For a sandbox or a throw-away VM,
# run as root: it installs Debian's Slurm 22.05 and munge, writes /etc/slurm/slurm.conf and starts the daemons
# without systemd.
#
#   scripts/slurm-local.sh install   # apt-get install slurmctld slurmd slurm-client munge (--no-install-recommends)
#   scripts/slurm-local.sh up        # install if needed, write the config, start munged, slurmctld, slurmd; wait idle
#   scripts/slurm-local.sh status    # the daemons' pids, sinfo, srun --mpi=list
#   scripts/slurm-local.sh down      # stop slurmd, slurmctld and a munged this script started (by their pid files)
#   scripts/slurm-local.sh purge     # down, then remove the state directory and the slurm.conf written here
#
# Every command can be repeated: `up` on a running cluster only checks it, `down` on a stopped one does nothing.
#
# The cluster: this host (hostname -s) is the controller and the only node, with the CPUs and memory `slurmd -C`
# reports, in partition "debug". Slurm runs as root (SlurmUser=root, SlurmdUser=root), tracks processes without
# cgroups (ProctrackType=proctrack/linuxproc, TaskPlugin=task/none), keeps no accounting and defaults to
# MpiDefault=none, so that `srun` without --mpi starts tasks without PMI (which bin/train refuses when there are
# several). The PMIx plugin (mpi_pmix_v4.so, built against PMIx 4) is in slurm-wlm-basic-plugins, which slurmd
# pulls in. State, spool, logs and pid files live in $SLURM_LOCAL_DIR (default /var/tmp/ddpm-slurm); munged uses
# the key the munge package created (/etc/munge/munge.key) and its socket in /run/munge.
set -euo pipefail

DIR=${SLURM_LOCAL_DIR:-/var/tmp/ddpm-slurm}
CONF=/etc/slurm/slurm.conf
MARK="# written by scripts/slurm-local.sh"
HOST=$(hostname -s)

say() { echo "slurm-local: $*" >&2; }
die() { say "$*"; exit 1; }

need_root() { [ "$(id -u)" = 0 ] || die "run as root (it installs packages, writes $CONF and starts daemons)"; }

installed() { command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v srun >/dev/null &&
	command -v munged >/dev/null; }

cmd_install() {
	need_root
	if installed; then return 0; fi
	say "installing slurmctld slurmd slurm-client munge"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
}

# alive PIDFILE: the process named in PIDFILE runs.
alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

write_conf() {
	if [ -e "$CONF" ] && ! grep -qxF "$MARK" "$CONF"; then
		die "$CONF exists and was not written by this script; move it away first"
	fi
	local node
	node=$(slurmd -C | head -1) # NodeName=<host> CPUs=… Boards=… SocketsPerBoard=… CoresPerSocket=… … RealMemory=…
	mkdir -p /etc/slurm "$DIR/state" "$DIR/spool" "$DIR/log"
	cat >"$CONF.tmp" <<EOF
$MARK
# (\`scripts/slurm-local.sh purge\` removes it)
ClusterName=ddpmlocal
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldTimeout=30
SlurmdTimeout=60
InactiveLimit=0
KillWait=5
$node State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
	if [ -e "$CONF" ] && cmp -s "$CONF" "$CONF.tmp"; then rm "$CONF.tmp"; else mv "$CONF.tmp" "$CONF" && CHANGED=1; fi
}
CHANGED=0

start_munge() {
	if [ -S /run/munge/munge.socket.2 ] && munge -n </dev/null | unmunge >/dev/null 2>&1; then return 0; fi
	mkdir -p /run/munge /var/log/munge /var/lib/munge
	chown munge:munge /run/munge /var/log/munge /var/lib/munge
	chmod 0755 /run/munge
	[ -s /etc/munge/munge.key ] || { mungekey --create --keyfile=/etc/munge/munge.key; }
	chown munge:munge /etc/munge/munge.key
	chmod 0400 /etc/munge/munge.key
	runuser -u munge -- munged --force
	mkdir -p "$DIR" && touch "$DIR/munged.started" # so that down stops it (and only a munged started here)
	for _ in $(seq 50); do munge -n </dev/null | unmunge >/dev/null 2>&1 && return 0; sleep 0.1; done
	die "munged did not start (see /var/log/munge/munged.log)"
}

cmd_up() {
	need_root
	cmd_install
	write_conf
	if [ "$CHANGED" = 1 ]; then # daemons of an older slurm.conf: restart them with the new one
		stop "$DIR/slurmd.pid" slurmd
		stop "$DIR/slurmctld.pid" slurmctld
	fi
	start_munge
	if ! alive "$DIR/slurmctld.pid"; then
		say "starting slurmctld (log $DIR/log/slurmctld.log)"
		slurmctld
	fi
	for _ in $(seq 100); do scontrol ping >/dev/null 2>&1 && break; sleep 0.2; done
	scontrol ping | grep -q UP || die "slurmctld does not answer (see $DIR/log/slurmctld.log)"
	if ! alive "$DIR/slurmd.pid"; then
		say "starting slurmd (log $DIR/log/slurmd.log)"
		slurmd
	fi
	local st=""
	for _ in $(seq 100); do
		st=$(sinfo -h -n "$HOST" -o %T 2>/dev/null || true)
		case $st in idle* | mixed* | allocated*) break ;; esac
		sleep 0.2
	done
	case $st in
	idle* | mixed* | allocated*) ;;
	down* | drain*)
		scontrol update nodename="$HOST" state=resume >/dev/null 2>&1 || true
		sleep 1
		st=$(sinfo -h -n "$HOST" -o %T)
		;;
	esac
	case $st in
	idle* | mixed* | allocated*) say "up: node $HOST $st; srun --mpi=list: $(srun --mpi=list 2>&1 | tr -s '\n ' ' ')" ;;
	*) die "node $HOST is '$st' (see $DIR/log/slurmd.log, $DIR/log/slurmctld.log)" ;;
	esac
}

cmd_status() {
	for d in slurmctld slurmd; do
		if alive "$DIR/$d.pid"; then echo "$d: pid $(cat "$DIR/$d.pid")"; else echo "$d: not running"; fi
	done
	if munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then echo "munged: up"; else echo "munged: not running"; fi
	sinfo 2>&1 || true
	srun --mpi=list 2>&1 || true
}

# stop PIDFILE NAME: SIGTERM the daemon, wait up to 10 s for it to go.
stop() {
	alive "$1" || return 0
	local pid
	pid=$(cat "$1")
	say "stopping $2 (pid $pid)"
	kill "$pid"
	for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
	say "$2 (pid $pid) did not stop after SIGTERM"
	return 1
}

cmd_down() {
	need_root
	stop "$DIR/slurmd.pid" slurmd
	stop "$DIR/slurmctld.pid" slurmctld
	# munged: only if this script started it (a munged that ran before is left alone).
	if [ -e "$DIR/munged.started" ]; then
		stop /run/munge/munged.pid munged
		rm -f "$DIR/munged.started"
	fi
}

cmd_purge() {
	cmd_down
	rm -rf "$DIR"
	if [ -e "$CONF" ] && grep -qxF "$MARK" "$CONF" 2>/dev/null; then rm -f "$CONF"; fi
}

case ${1:-} in
install) cmd_install ;;
up) cmd_up ;;
status) cmd_status ;;
down) cmd_down ;;
purge) cmd_purge ;;
*)
	sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//' >&2
	exit 2
	;;
esac
