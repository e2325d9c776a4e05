# bincache.sh is sourced by the e2e build-*.sh scripts: they keep what they
# build in one cache directory outside the repository, a subdirectory per
# pinned version.

bin_cache="${NODEXDS_BIN_CACHE:-${HOME}/.cache/nodexds/bin}"

# lock_build_dir <dir> <script name> creates dir and holds its lock until the
# script exits, so that concurrent invocations (e.g. several test packages
# starting at once) do not compile the same binary twice in parallel.
lock_build_dir() {
	mkdir -p "$1"
	exec 9>"$1/.lock"
	if ! flock -n 9; then
		echo "$2: another build holds $1/.lock; waiting" >&2
		flock 9
	fi
}
