#!/usr/bin/env python3
"""Asks a running emulated KVM host's QEMU, through its human monitor socket, what it is doing.

    monitor.py SOCKET diagnose   where each vCPU is (three samples a second apart), then the
                                 guest kernel's own account through sysrq keys (w, l)
    monitor.py SOCKET wake       when every vCPU is halted: prints each vCPU's local APIC
                                 state (its timer, and the interrupts it holds pending or in
                                 service), presses a key nothing reads (left ctrl), and prints
                                 "woke" as the last line; prints nothing when a vCPU runs

tests/kvm-host/run calls both from its watchdog (issue 15: the lost timer wake-up under TCG).
"""

import re
import socket
import sys
import time


class Monitor:
    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(3)
        self.sock.connect(path)
        self.read_to_prompt()  # the banner

    def read_to_prompt(self):
        out, deadline = b"", time.time() + 5
        while time.time() < deadline and not out.endswith(b"(qemu) "):
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                break
            out += chunk
        return out.decode(errors="replace")

    def hmp(self, command):
        self.sock.sendall(command.encode() + b"\n")
        return self.read_to_prompt()

    def vcpus(self):
        """(number, RIP, CPL, halted) of every vCPU."""
        found = []
        for cpu in re.split(r"(?=CPU#\d+)", self.hmp("info registers -a")):
            number = re.match(r"CPU#(\d+)", cpu)
            rip = re.search(r"RIP=([0-9a-f]+) .*?CPL=(\d) .*?HLT=(\d)", cpu)
            if number and rip:
                found.append(
                    (int(number.group(1)), int(rip.group(1), 16), rip.group(2), rip.group(3) == "1")
                )
        return found


def diagnose(monitor):
    for sample in range(3):
        for number, rip, cpl, halted in monitor.vcpus():
            print(f"sample {sample} vCPU {number}: RIP {rip:#x} CPL {cpl} halted {int(halted)}")
        time.sleep(1)
    # 7 first: /init keeps the console at log level 1, which would hide what w and l print.
    for key in ("7", "w", "l"):
        monitor.hmp(f"sendkey alt-sysrq-{key}")
    print("sysrq w and l sent; their output (if the kernel still runs) is in the console log")


def lapic_summary(text):
    """The lines of `info lapic` that say why a halted vCPU was not woken: the timer's
    mode and vector, its counts, and the pending (IRR) and in-service (ISR) vectors."""
    keep = {"LVTT", "Timer", "ISR", "IRR", "SPIV"}
    return "; ".join(
        " ".join(line.split())
        for line in text.splitlines()
        if line.split() and line.split()[0] in keep
    )


def wake(monitor):
    cpus = monitor.vcpus()
    if not cpus or not all(halted for *_, halted in cpus):
        return
    for number, *_ in cpus:
        monitor.hmp(f"cpu {number}")
        print(f"vCPU {number} LAPIC before the key: {lapic_summary(monitor.hmp('info lapic'))}")
    monitor.hmp("sendkey ctrl")
    print("woke")


def main():
    if len(sys.argv) != 3 or sys.argv[2] not in ("diagnose", "wake"):
        sys.exit("usage: monitor.py SOCKET diagnose|wake")
    monitor = Monitor(sys.argv[1])
    {"diagnose": diagnose, "wake": wake}[sys.argv[2]](monitor)


if __name__ == "__main__":
    main()
