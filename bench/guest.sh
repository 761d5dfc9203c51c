#!/bin/sh
# bench/guest.sh - the benchmark's guest half, run as root by scripts/bench inside the
# test VM (scripts/vm-run; busybox sh). Not meant to be run by hand on a host: it
# creates network namespaces and large IPVS tables.
#
# For each table size (BENCH_SIZES services, 10 destinations each; IPv4, TCP, wrr, DR):
#   create:    `ipvsadm -R`, `lvsctl restore`, `lvs-bench apply` (library bulk API),
#              each in its own FRESH network namespace; the result of each is checked
#              against the generated table (`ipvsadm -Sn | sort | sha256sum`);
#   dump:      in the namespace the library filled, BENCH_REPS rounds of `ipvsadm -Sn`,
#              `lvsctl save`, `lvs-bench dump`, `ipvsadm -Ln --stats`, `lvsctl list --stats`,
#              `lvs-bench dump --stats`; the save outputs are digest-checked too;
#   reconcile: for 0, 1 and 10 % of the services changed, a fresh namespace is filled with
#              the base table (untimed), one `lvsctl save` (`lvs-bench dump`) of it is timed
#              as the yardstick, then `lvsctl restore --replace` (or, in another fresh
#              namespace, `lvs-bench reconcile`) is timed and the result checked; at 0 %,
#              which leaves the table as it is, BENCH_REPS such pairs (medians reported);
#              at 0 % an extra untimed run counts the requests each tool sends, captured
#              on an nlmon device (`lvs-bench nlcount`): it must send no change request.
# Every timed command runs under `lvs-bench measure` (wall time, peak RSS via wait4).
# A namespace is flushed (`ipvsadm -C`) and deleted right after its last use, and the
# script waits a moment, so that no big table or its cleanup runs behind a measurement.
# The report goes to the console between @@BENCH-REPORT-BEGIN@@ and @@BENCH-REPORT-END@@.
#
# Environment: BENCH_SIZES (default "1000 10000"), BENCH_REPS (default 3),
# BENCH_DESTS (default 10).

set -u
SIZES="${BENCH_SIZES:-1000 10000}"
REPS="${BENCH_REPS:-3}"
DESTS="${BENCH_DESTS:-10}"
IP=/usr/sbin/ip
W=/tmp/bench
R=$W/results.tsv
N=$W/notes.md
mkdir -p $W
cd $W || exit 1
: >$R
: >$N
failures=0

note() { echo "$*" >>$N; echo "bench: $*"; }
fail() { failures=$((failures + 1)); note "- **FAILED**: $*"; }

# Which lvsctl commands exist (they may land later than the benchmark).
has_lvsctl() { command -v lvsctl >/dev/null 2>&1 && lvsctl "$@" --help >/dev/null 2>&1; }
LV_RESTORE=0; LV_SAVE=0; LV_LIST=0; LV_REPLACE=0
has_lvsctl restore && LV_RESTORE=1
has_lvsctl save && LV_SAVE=1
has_lvsctl list && LV_LIST=1
[ $LV_RESTORE = 1 ] && lvsctl restore --help 2>&1 | grep -q -- --replace && LV_REPLACE=1

nsn=0
# newns: create a fresh namespace (lo up, a dummy interface with 10.0.0.254/8 so every
# real-server address of the generated tables is a reachable unicast address); sets NS.
newns() {
	nsn=$((nsn + 1))
	NS=bench$nsn
	$IP netns add $NS || exit 1
	$IP -n $NS link set lo up
	$IP -n $NS link add dum0 type dummy
	$IP -n $NS link set dum0 up
	$IP -n $NS addr add 10.0.0.254/8 dev dum0
}
# settle: wait (at most 90 s) until the guest's CPUs have been idle for a second: the
# kernel frees a deleted namespace's IPVS table in the background, which under
# emulation takes many seconds and would otherwise run behind the next measurement.
# (busy-box sh has no local variables: settle's names must not clash with the caller's)
cpu_busy() { awk '/^cpu / {print $2+$3+$4+$7+$8, $5+$6}' /proc/stat; }
settle() {
	st_t=0
	while [ $st_t -lt 90 ]; do
		st_a=$(cpu_busy)
		sleep 1
		st_b=$(cpu_busy)
		st_t=$((st_t + 1))
		# busy share of the last second, in %
		busy=$(echo "$st_a $st_b" | awk '{ db = $3 - $1; di = $4 - $2; print (db + di) ? int(100 * db / (db + di)) : 0 }')
		[ "$busy" -lt 5 ] && return
	done
	note "- (the guest was still busy after 90 s of waiting)"
}
# dropns NS: flush its table (synchronously, here), delete it, let the kernel settle.
dropns() {
	$IP netns exec "$1" ipvsadm -C
	$IP netns del "$1"
	settle
}
inns() { ns=$1; shift; $IP netns exec "$ns" "$@"; }
digest() { sort "$1" | sha256sum | cut -d' ' -f1; }
ns_digest() { $IP netns exec "$1" ipvsadm -Sn | sort | sha256sum | cut -d' ' -f1; }
# measure NS LABEL STDIN STDOUT CMD...
measure() {
	ns=$1 label=$2 in=$3 out=$4
	shift 4
	inns "$ns" lvs-bench measure --label "$label" --results $R --stdin "$in" --stdout "$out" --stderr $W/stderr -- "$@"
	rc=$?
	if [ $rc != 0 ]; then
		fail "$label exited with $rc: $(head -c 600 $W/stderr)"
	fi
	return $rc
}
check() { # check WHAT GOT WANT
	if [ "$2" = "$3" ]; then
		note "- $1: table OK"
	else
		fail "$1: table differs (sha256 $2, want $3)"
	fi
}

# count_requests NS WHAT STDIN CMD...: run CMD again (untimed; the table is already
# what it asks for) with its generic netlink traffic captured on an nlmon device, and
# require that it sends no change request.
count_requests() {
	ns=$1 what=$2 in=$3
	shift 3
	$IP -n "$ns" link add nlmon0 type nlmon && $IP -n "$ns" link set nlmon0 up || {
		fail "cannot create an nlmon device to count requests"
		return
	}
	counted=$(inns "$ns" lvs-bench nlcount --dev nlmon0 -- "$@" <"$in" 2>$W/stderr | grep '^requests:')
	note "- unchanged reconcile $size, $what, $counted"
	case "$counted" in
	*" 0 changes,"*) ;;
	*) fail "unchanged reconcile ($what) did not show 0 change requests: $counted $(head -c 300 $W/stderr)" ;;
	esac
	$IP -n "$ns" link del nlmon0
}

# daemon_bench: the health-daemon benchmark instead of the bulk one
# (BENCH_DAEMON=1, by `scripts/bench --daemon`): for each size (BENCH_SIZES services
# of 4 TCP-checked real servers), `lvsctl director run` then keepalived, each through
# `lvs-bench daemon` (fresh namespaces, see bench/src/daemon.rs), then the start's
# floor (`lvs-bench apply` of the same table), BENCH_REPS rounds.
daemon_bench() {
	DR=$W/daemon.tsv
	: >$DR
	r=0
	while [ $r -lt "$REPS" ]; do
		r=$((r + 1))
		for n in $SIZES; do
			for tool in lvsctl keepalived floor; do
				settle
				lvs-bench daemon --tool $tool --services "$n" --reals 4 --results $DR \
					--steady "${BENCH_STEADY:-60}" --failures "${BENCH_FAILURES:-10}" --work $W/d-$tool-$n 2>$W/stderr
				rc=$?
				cat $W/stderr
				[ $rc = 0 ] || fail "daemon $tool ${n}x4 exited with $rc: $(tail -c 600 $W/stderr)"
				tail -n 5 $W/d-$tool-$n/$tool.log
			done
		done
	done
	note "- failures: $failures"
	{ lvs-bench daemon-report $DR; echo; cat $N; } >$W/report.md
	echo "@@BENCH-REPORT-BEGIN@@"
	cat $W/report.md
	echo "@@BENCH-REPORT-END@@"
	echo "@@BENCH-RAW-BEGIN@@"
	cat $DR
	echo "@@BENCH-RAW-END@@"
	[ $failures = 0 ]
	exit
}

# floor_bench: the dump against its floor instead of the bulk benchmark (BENCH_FLOOR=1, by
# `scripts/bench --floor`): for each size, one namespace filled by the library (untimed),
# then BENCH_REPS rounds of `ipvsadm -Sn`, `lvsctl save`, `lvs-bench dump` and `lvs-floor`
# (bench/floor.c: the same netlink requests, no formatting), interleaved so that a load
# change touches every tool alike. The outputs are checked: the saves against the table,
# the floor's counts against the table's size.
floor_bench() {
	for n in $SIZES; do
		size="${n}x$DESTS"
		base=$W/t$n.rules
		lvs-bench gen --services "$n" --dests "$DESTS" --out "$base" || exit 1
		want=$(digest "$base")
		newns
		inns $NS lvs-bench apply "$base" >/dev/null || fail "setup of floor $size"
		settle
		r=0
		while [ $r -lt "$REPS" ]; do
			r=$((r + 1))
			measure $NS "$size|floor|ipvsadm -Sn" /dev/null $W/save.ipvsadm ipvsadm -Sn
			[ $LV_SAVE = 1 ] && measure $NS "$size|floor|lvsctl save" /dev/null $W/save.lvsctl lvsctl save -n
			measure $NS "$size|floor|library dump" /dev/null $W/save.lib lvs-bench dump
			measure $NS "$size|floor|floor" /dev/null $W/floor.out lvs-floor
		done
		check "floor run $size ipvsadm -Sn" "$(digest $W/save.ipvsadm)" "$want"
		[ $LV_SAVE = 1 ] && check "floor run $size lvsctl save" "$(digest $W/save.lvsctl)" "$want"
		check "floor run $size library dump" "$(digest $W/save.lib)" "$want"
		check "floor run $size floor counts" "$(cat $W/floor.out)" "services: $n destinations: $((n * DESTS))"
		dropns $NS
	done
	note "- failures: $failures"
	lvs-bench floor-report $R --notes $N >$W/report.md
	echo "@@BENCH-REPORT-BEGIN@@"
	cat $W/report.md
	echo "@@BENCH-REPORT-END@@"
	echo "@@BENCH-RAW-BEGIN@@"
	cat $R
	echo "@@BENCH-RAW-END@@"
	[ $failures = 0 ]
	exit
}

modprobe nlmon 2>/dev/null
note "- guest: kernel $(uname -r), $(grep -c ^processor /proc/cpuinfo) vCPU(s), $(awk '/MemTotal/ {print int($2/1024)}' /proc/meminfo) MiB"
note "- ipvsadm: $(ipvsadm --version 2>&1 | head -1); lvsctl commands present: restore=$LV_RESTORE save=$LV_SAVE list=$LV_LIST restore--replace=$LV_REPLACE"
if [ "${BENCH_DAEMON:-0}" = 1 ]; then
	note "- keepalived: $(keepalived --version 2>&1 | head -1)"
	daemon_bench
fi
settle
[ "${BENCH_FLOOR:-0}" = 1 ] && floor_bench
# The measuring wrapper's own floor: the peak RSS it reports for /bin/true.
newns
measure $NS "floor|true|/bin/true" /dev/null /dev/null /bin/true
$IP netns del $NS

for n in $SIZES; do
	size="${n}x$DESTS"
	base=$W/t$n.rules
	lvs-bench gen --services "$n" --dests "$DESTS" --out "$base" || exit 1
	for pct in 1 10; do
		lvs-bench gen --services "$n" --dests "$DESTS" --change $pct --out "$W/t$n.c$pct.rules" || exit 1
	done
	want=$(digest "$base")
	note "- table $size: $(wc -l <"$base") lines, sha256 of sorted save $want"

	# ---- create ---------------------------------------------------------------
	newns
	measure $NS "$size|create|ipvsadm -R" "$base" /dev/null ipvsadm -R
	check "create $size ipvsadm -R" "$(ns_digest $NS)" "$want"
	dropns $NS
	if [ $LV_RESTORE = 1 ]; then
		newns
		measure $NS "$size|create|lvsctl restore" "$base" /dev/null lvsctl restore
		check "create $size lvsctl restore" "$(ns_digest $NS)" "$want"
		dropns $NS
	fi
	newns
	measure $NS "$size|create|library apply" /dev/null $W/out lvs-bench apply "$base"
	check "create $size library apply ($(cat $W/out))" "$(ns_digest $NS)" "$want"

	# ---- dump (in the namespace the library filled) ---------------------------
	full=$NS
	r=0
	while [ $r -lt "$REPS" ]; do
		r=$((r + 1))
		measure $full "$size|save|ipvsadm -Sn" /dev/null $W/save.ipvsadm ipvsadm -Sn
		if [ $LV_SAVE = 1 ]; then
			measure $full "$size|save|lvsctl save" /dev/null $W/save.lvsctl lvsctl save -n
		fi
		measure $full "$size|save|library dump" /dev/null $W/save.lib lvs-bench dump
		measure $full "$size|stats|ipvsadm -Ln --stats" /dev/null $W/stats.ipvsadm ipvsadm -Ln --stats
		if [ $LV_LIST = 1 ]; then
			measure $full "$size|stats|lvsctl list --stats" /dev/null $W/stats.lvsctl lvsctl list -n --stats
		fi
		measure $full "$size|stats|library dump --stats" /dev/null $W/stats.lib lvs-bench dump --stats
	done
	check "dump $size ipvsadm -Sn" "$(digest $W/save.ipvsadm)" "$want"
	[ $LV_SAVE = 1 ] && check "dump $size lvsctl save" "$(digest $W/save.lvsctl)" "$want"
	check "dump $size library dump" "$(digest $W/save.lib)" "$want"
	note "- list --stats $size: ipvsadm $(wc -l <$W/stats.ipvsadm) lines$([ $LV_LIST = 1 ] && echo ", lvsctl $(wc -l <$W/stats.lvsctl) lines")"
	dropns $full

	# ---- reconcile ----------------------------------------------------------
	for pct in 0 1 10; do
		if [ $pct = 0 ]; then target=$base; else target=$W/t$n.c$pct.rules; fi
		twant=$(digest "$target")
		rounds=1
		[ $pct = 0 ] && rounds=$REPS
		if [ $LV_REPLACE = 1 ]; then
			newns
			inns $NS lvs-bench apply "$base" >/dev/null || fail "setup of reconcile $pct % $size"
			# One dump of the same table right before, the yardstick of this reconcile.
			# At 0 % the pair leaves the table as it was: REPS pairs (medians).
			r=0
			while [ $r -lt "$rounds" ]; do
				r=$((r + 1))
				measure $NS "$size|reconcile$pct|lvsctl save" /dev/null /dev/null lvsctl save -n
				measure $NS "$size|reconcile$pct|lvsctl restore --replace" "$target" /dev/null lvsctl restore --replace
				check "reconcile $pct % $size lvsctl restore --replace" "$(ns_digest $NS)" "$twant"
			done
			[ $pct = 0 ] && count_requests $NS "lvsctl restore --replace" "$base" lvsctl restore --replace
			dropns $NS
		fi
		newns
		inns $NS lvs-bench apply "$base" >/dev/null || fail "setup of reconcile $pct % $size"
		r=0
		while [ $r -lt "$rounds" ]; do
			r=$((r + 1))
			measure $NS "$size|reconcile$pct|library dump" /dev/null /dev/null lvs-bench dump
			measure $NS "$size|reconcile$pct|library reconcile" /dev/null $W/out lvs-bench reconcile "$target"
			check "reconcile $pct % $size library reconcile ($(cat $W/out))" "$(ns_digest $NS)" "$twant"
		done
		[ $pct = 0 ] && count_requests $NS "library reconcile" /dev/null lvs-bench reconcile "$base"
		dropns $NS
	done
done

note "- failures: $failures"
lvs-bench report $R --notes $N >$W/report.md
echo "@@BENCH-REPORT-BEGIN@@"
cat $W/report.md
echo "@@BENCH-REPORT-END@@"
echo "@@BENCH-RAW-BEGIN@@"
cat $R
echo "@@BENCH-RAW-END@@"
[ $failures = 0 ]
