# Shared by the benchmarks in this directory (sourced, not run).

# measure CMD...: runs CMD (its output discarded) and prints "WALL CPU USER":
# its wall time, its user+system CPU time and its user CPU time, in seconds.
# On a shared machine the file system's contention shows in wall and system
# time; user time is what rkt's own algorithms cost.
measure() {
    python3 - "$@" <<'PY'
import resource, subprocess, sys, time
start = time.monotonic()
subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, check=True)
wall = time.monotonic() - start
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
print(f"{wall:.2f} {usage.ru_utime + usage.ru_stime:.2f} {usage.ru_utime:.2f}")
PY
}

# seconds CMD...: the wall time of CMD, in seconds.
seconds() {
    measure "$@" | cut -d' ' -f1
}
