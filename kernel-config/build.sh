#!/usr/bin/env bash
# Build the rkt-kvm guest kernel from Debian's linux-source-6.1 and guest.config.
#
#   sudo kernel-config/build.sh
#
# Result: $RKT_KVM_CACHE/kernel/<key>/{vmlinux,bzImage,config}, linked from
# <repo>/target/guest/{vmlinux,bzImage,kernel.config}. The key is a sha256 of
# everything that decides the kernel (source package version, fragment, this
# script), so a warm cache returns at once and any change rebuilds.
#
# Environment: RKT_KVM_CACHE (default /var/cache/rkt-kvm), JOBS (default nproc).
set -euo pipefail

readonly SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
readonly REPO="$(dirname "$SCRIPT_DIR")"
readonly FRAGMENT="$SCRIPT_DIR/guest.config"
readonly SCRIPT="$SCRIPT_DIR/$(basename "${BASH_SOURCE[0]}")"
readonly CACHE_ROOT="${RKT_KVM_CACHE:-/var/cache/rkt-kvm}"
readonly SOURCE_PACKAGE=linux-source-6.1
readonly SOURCE_TARBALL=/usr/src/linux-source-6.1.tar.xz
readonly JOBS="${JOBS:-$(nproc)}"
# The build needs these; build-essential brings gcc, make and binutils
# (readelf for the PVH check), xz-utils unpacks the source tarball.
readonly BUILD_DEPS=(bc bison flex libelf-dev libssl-dev build-essential xz-utils "$SOURCE_PACKAGE")

say() { echo "kernel-config: $*" >&2; }
die() { say "error: $*"; exit 1; }

# --- Build dependencies ----------------------------------------------------
# dpkg-query is quick, so the warm path only pays for apt when something is
# really missing.
missing_packages() {
    local pkg
    for pkg in "${BUILD_DEPS[@]}"; do
        if [[ "$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null)" != installed ]]; then
            echo "$pkg"
        fi
    done
}

install_build_deps() {
    local missing
    missing="$(missing_packages)"
    [[ -z "$missing" ]] && return 0
    [[ $EUID -eq 0 ]] || die "missing packages: $(echo $missing); run this script as root (sudo) so it can install them"
    say "installing: $(echo $missing)"
    # shellcheck disable=SC2086 # one package per word is what apt wants
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $missing >&2 \
        || die "apt-get install failed; try 'apt-get update' first"
}

# --- Cache key -------------------------------------------------------------
cache_key() {
    local version
    version="$(dpkg-query -W -f='${Version}' "$SOURCE_PACKAGE")"
    # Labelled sections keep the hash input unambiguous.
    {
        echo "source $SOURCE_PACKAGE $version"
        echo "fragment"; cat "$FRAGMENT"
        echo "script"; cat "$SCRIPT"
    } | sha256sum | cut -d' ' -f1
}

# --- Fragment check --------------------------------------------------------
# Prints "SYMBOL value" for every assignment in a kconfig file; "# CONFIG_X
# is not set" becomes "CONFIG_X n".
config_assignments() {
    sed -n -e 's/^\(CONFIG_[A-Za-z0-9_]*\)=\(.*\)$/\1 \2/p' \
           -e 's/^# \(CONFIG_[A-Za-z0-9_]*\) is not set$/\1 n/p' "$1"
}

# kconfig silently drops a requested option whose dependencies are unmet, so
# compare every line of the fragment with the resulting .config. A symbol that
# is absent from .config is off (invisible symbols are not written out).
verify_fragment() {
    local config="$1" wrong=0 symbol wanted got
    declare -A actual=()
    while read -r symbol got; do
        actual[$symbol]="$got"
    done < <(config_assignments "$config")
    while read -r symbol wanted; do
        got="${actual[$symbol]:-n}"
        if [[ "$got" != "$wanted" ]]; then
            say "  $symbol: fragment wants '$wanted', kernel config has '$got'"
            wrong=$((wrong + 1))
        fi
    done < <(config_assignments "$FRAGMENT")
    if ((wrong > 0)); then
        die "$wrong option(s) of guest.config did not take effect (unmet dependencies or typos); fix guest.config, see the Kconfig 'depends on' lines"
    fi
}

# --- PVH entry point check ---------------------------------------------------
# Our VMM enters vmlinux through the PVH entry point, which the kernel
# advertises with a Xen ELF note of type XEN_ELFNOTE_PHYS32_ENTRY (18).
# Depending on the binutils version readelf names it or prints the number.
verify_pvh_note() {
    readelf -n "$1" | grep -E '^\s*Xen\s' | grep -qE 'PHYS32_ENTRY|\(0x0*12\)' \
        || die "$1 has no PVH entry note (Xen PHYS32_ENTRY); is CONFIG_PVH=y in guest.config?"
}

# --- Build -----------------------------------------------------------------
# Everything happens in a scratch dir next to the cache entry; the finished
# entry is renamed into place, so a killed build never leaves half an entry.
build_into() {
    local entry="$1" key="$2" scratch log started
    scratch="$(mktemp -d "$CACHE_ROOT/kernel/.build-$key.XXXXXX")"
    # shellcheck disable=SC2064 # expand now: the path is fixed
    trap "rm -rf '$scratch'" EXIT
    log="$scratch/build.log"
    started=$SECONDS

    say "unpacking $SOURCE_TARBALL"
    mkdir "$scratch/src"
    tar -xJf "$SOURCE_TARBALL" -C "$scratch/src" --strip-components=1

    # allnoconfig + fragment: only what guest.config names gets switched on.
    local make_args=(-C "$scratch/src" ARCH=x86_64 KBUILD_BUILD_USER=rkt-kvm KBUILD_BUILD_HOST=rkt-kvm)
    make "${make_args[@]}" KCONFIG_ALLCONFIG="$FRAGMENT" allnoconfig >"$log" 2>&1 \
        || { tail -n 30 "$log" >&2; die "make allnoconfig failed (log above)"; }
    # Fail before the long compile when the fragment does not apply.
    verify_fragment "$scratch/src/.config"

    say "compiling with -j$JOBS (log: $log)"
    make "${make_args[@]}" -j"$JOBS" bzImage >>"$log" 2>&1 \
        || { tail -n 40 "$log" >&2; die "kernel build failed (log above)"; }

    mkdir "$scratch/entry"
    cp "$scratch/src/vmlinux" "$scratch/entry/vmlinux"
    cp "$scratch/src/arch/x86/boot/bzImage" "$scratch/entry/bzImage"
    cp "$scratch/src/.config" "$scratch/entry/config"
    verify_fragment "$scratch/entry/config"
    verify_pvh_note "$scratch/entry/vmlinux"

    mv -T "$scratch/entry" "$entry"
    say "built in $((SECONDS - started))s"
}

link_into_checkout() {
    local entry="$1" out="$REPO/target/guest"
    mkdir -p "$out"
    ln -sfn "$entry/vmlinux" "$out/vmlinux"
    ln -sfn "$entry/bzImage" "$out/bzImage"
    ln -sfn "$entry/config" "$out/kernel.config"
}

main() {
    [[ -f "$FRAGMENT" ]] || die "missing $FRAGMENT"
    install_build_deps
    [[ -f "$SOURCE_TARBALL" ]] || die "missing $SOURCE_TARBALL; reinstall $SOURCE_PACKAGE"

    local key entry
    key="$(cache_key)"
    entry="$CACHE_ROOT/kernel/$key"

    if [[ ! -f "$entry/vmlinux" ]]; then
        mkdir -p "$CACHE_ROOT/kernel" || die "cannot create $CACHE_ROOT/kernel; run as root or set RKT_KVM_CACHE"
        # One builder per key: a second run waits, then finds the entry ready.
        exec 9>"$CACHE_ROOT/kernel/.lock-$key"
        flock 9
        if [[ ! -f "$entry/vmlinux" ]]; then
            # Scratch dirs of this key left by a killed build: nobody else
            # holds the lock, so they are garbage.
            rm -rf "$CACHE_ROOT/kernel/.build-$key".*
            build_into "$entry" "$key"
        fi
    fi

    link_into_checkout "$entry"
    say "guest kernel: $entry"
    echo "$entry"
}

main "$@"
