# shellcheck shell=bash
#
# scripts/lib.sh - helpers shared by scripts/vm-run, scripts/privileged-tests and
# scripts/test. Sourced, never executed. Needs bash 4+.
#
# Everything here is prefixed `lv_` so it cannot clash with the sourcing script.

# Absolute path of the repository root (the parent of this scripts/ folder), so the
# scripts work from any current directory.
LV_REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export LV_REPO_ROOT

# Messages go to stderr so that stdout stays the test output proper.
lv_info() { printf '>>> %s\n' "$*" >&2; }
lv_warn() { printf '!!! WARNING: %s\n' "$*" >&2; }
lv_die() {
	printf '!!! ERROR: %s\n' "$*" >&2
	exit 1
}

# A big banner, used for section headers and for errors that must not be missed.
lv_banner() {
	local line='=============================================================================='
	printf '\n%s\n== %s\n%s\n' "$line" "$*" "$line"
}

# lv_have CMD: true when CMD is runnable. Also looks in the sbin folders, which a
# non-root PATH often lacks.
lv_have() {
	command -v "$1" >/dev/null 2>&1 && return 0
	local d
	for d in /usr/local/sbin /usr/sbin /sbin; do
		[[ -x "$d/$1" ]] && return 0
	done
	return 1
}

# lv_which CMD: print the absolute path of CMD (see lv_have), or fail.
lv_which() {
	local p
	if p="$(command -v "$1" 2>/dev/null)" && [[ "$p" == /* ]]; then
		printf '%s\n' "$p"
		return 0
	fi
	local d
	for d in /usr/local/sbin /usr/sbin /sbin; do
		if [[ -x "$d/$1" ]]; then
			printf '%s\n' "$d/$1"
			return 0
		fi
	done
	return 1
}

# lv_apt_install PKG...: install Debian packages non-interactively. Runs
# `apt-get update` once and retries when the first attempt fails (a fresh machine
# may have empty package lists). Must be root.
lv_apt_install() {
	((EUID == 0)) || lv_die "need the Debian packages: $* (run as root, or: sudo apt-get install -y $*)"
	lv_have apt-get || lv_die "need the packages $* but apt-get is not available"
	lv_info "installing Debian packages: $*"
	export DEBIAN_FRONTEND=noninteractive
	if ! apt-get install -y --no-install-recommends "$@" </dev/null; then
		lv_info "apt-get install failed; running apt-get update and retrying"
		apt-get update </dev/null
		apt-get install -y --no-install-recommends "$@" </dev/null
	fi
}

# lv_ensure CMD:PKG...: make sure every CMD exists, installing the Debian package
# PKG that provides it when it does not (as root). Dies when that is impossible.
lv_ensure() {
	local pair cmd pkg
	local -a missing=()
	for pair in "$@"; do
		cmd="${pair%%:*}"
		pkg="${pair#*:}"
		if ! lv_have "$cmd"; then
			# Skip duplicates (several commands can come from one package).
			if [[ " ${missing[*]-} " != *" $pkg "* ]]; then
				missing+=("$pkg")
			fi
		fi
	done
	((${#missing[@]} == 0)) && return 0
	lv_apt_install "${missing[@]}"
	for pair in "$@"; do
		cmd="${pair%%:*}"
		lv_have "$cmd" || lv_die "'$cmd' is still missing after installing ${pair#*:}"
	done
}

# Debian's PostgreSQL server, for the postgres health check tests: its
# version, its programs' folder, and its package.
# shellcheck disable=SC2034 # used by the scripts that source this file
LV_PG_VERSION=15
# shellcheck disable=SC2034
LV_PG_BIN="/usr/lib/postgresql/$LV_PG_VERSION/bin"
# shellcheck disable=SC2034
LV_PG_PKG="postgresql-$LV_PG_VERSION"

# The host tools the test VM needs, as CMD:PKG pairs for lv_ensure.
# shellcheck disable=SC2034 # used by the scripts that source this file
LV_VM_TOOLS=(
	qemu-system-x86_64:qemu-system-x86
	busybox:busybox-static
	cpio:cpio
	gzip:gzip
	depmod:kmod
	modprobe:kmod
	ip:iproute2
	ipvsadm:ipvsadm
	keepalived:keepalived
	bird:bird2
	"$LV_PG_BIN/postgres:$LV_PG_PKG"
	setsid:util-linux
	strace:strace
	ldd:libc-bin
	dpkg-deb:dpkg
	apt-cache:apt
	flock:util-linux
	timeout:coreutils
	sha256sum:coreutils
)

# lv_sh_quote WORD: print WORD quoted for a POSIX shell (busybox ash included).
lv_sh_quote() {
	local s="${1//\'/\'\\\'\'}"
	printf "'%s'" "$s"
}

# lv_now: seconds since the epoch with sub-second precision (bash 5), for timings.
lv_now() {
	if [[ -n "${EPOCHREALTIME:-}" ]]; then
		printf '%s\n' "${EPOCHREALTIME/,/.}"
	else
		date +%s.%N
	fi
}

# lv_elapsed START: seconds elapsed since START (from lv_now), one decimal.
lv_elapsed() {
	local now
	now="$(lv_now)"
	awk -v a="$1" -v b="$now" 'BEGIN { printf "%.1f\n", b - a }'
}
