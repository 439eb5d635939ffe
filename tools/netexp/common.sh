# Shared by tools/netexp/pod and tools/netexp/wiring: per-thread CPU and run-queue wait, KVM
# exit counters, before/after diffs.
threads() { for t in /proc/[0-9]*/task/[0-9]*; do
  read -r run wait slices 2>/dev/null <$t/schedstat || continue
  echo "${t#/proc/} $(cat $t/comm 2>/dev/null | tr ' ' _) $run $wait"; done; }
cpudiff() { python3 - "$1" "$2" <<'PY'
import sys
def load(p):
    d={}
    for l in open(p):
        f=l.split()
        if len(f)==4: d[f[0]]=(f[1],int(f[2]),int(f[3]))
    return d
a,b=load(sys.argv[1]),load(sys.argv[2])
rows=[]
for k,(c,r,w) in b.items():
    r0,w0=(a[k][1],a[k][2]) if k in a else (0,0)
    rows.append((r-r0,w-w0,k,c))
rows.sort(reverse=True)
tot=sum(x[0] for x in rows)
print("   total cpu %.2fs" % (tot/1e9))
for r,w,k,c in rows[:10]:
    print("   %-28s %-16s cpu %.2fs  runq-wait %.2fs" % (k,c,r/1e9,w/1e9))
PY
}
mountpoint -q /sys/kernel/debug || mount -t debugfs none /sys/kernel/debug
kvmstat() { for f in /sys/kernel/debug/kvm/*; do [[ -f $f ]] && echo "$(basename $f) $(cat $f)"; done 2>/dev/null; }
kvmdiff() { python3 - "$1" "$2" <<'PY2'
import sys
a=dict(l.split() for l in open(sys.argv[1]) if len(l.split())==2)
b=dict(l.split() for l in open(sys.argv[2]) if len(l.split())==2)
keys=["exits","io_exits","mmio_exits","halt_exits","halt_attempted_poll","halt_successful_poll","halt_poll_success_ns","halt_poll_fail_ns","halt_wait_ns","irq_injections","irq_exits","signal_exits","nmi_window_exits","preemption_reported"]
out=[]
for k in keys:
    if k in b and k in a:
        d=int(b[k])-int(a[k])
        out.append("%s=%s"%(k, ("%.2fs"%(d/1e9)) if k.endswith("_ns") else d))
print("   kvm:", " ".join(out))
PY2
}
