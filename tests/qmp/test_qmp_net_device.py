"""The properties of `-device virtio-net-pci` that shape the device: `rx_queue_size`,
`tx_queue_size` and `host_mtu`. Their command-line errors are QEMU 7.2's (recorded from
Debian's QEMU 7.2.22, and checked against it where it is installed, as test_qmp_net does), and
a guest runs on a NIC that sets all three. The queue sizes and the MTU the guest sees in the
device's registers are checked by the device's unit tests
(devices/src/virtio/net/tests/transport.rs): the test guest takes at most 256 entries per queue
and does not negotiate VIRTIO_NET_F_MTU."""

import subprocess

import pytest

import conftest
from conftest import TIMEOUT
# `vmm` is a fixture: petrel, or QEMU 7.2 to check the recorded answers.
from test_qmp_net import QEMU, QEMU_ARGS, nic, one_line, vmm  # noqa: F401

RX_RANGE = "must be a power of 2 between 256 and 1024."
TX_RANGE = "must be a power of 2 between 256 and 1024"

# The properties, and QEMU 7.2's words for them (after "<program>: -device <arg>: ").
ERRORS = {
    "rx-too-small": ("rx_queue_size=128", f"Invalid rx_queue_size (= 128), {RX_RANGE}"),
    "rx-too-large": ("rx_queue_size=2048", f"Invalid rx_queue_size (= 2048), {RX_RANGE}"),
    "rx-not-power-of-2": ("rx_queue_size=384", f"Invalid rx_queue_size (= 384), {RX_RANGE}"),
    "tx-too-small": ("tx_queue_size=100", f"Invalid tx_queue_size (= 100), {TX_RANGE}"),
    "tx-too-large": ("tx_queue_size=2048", f"Invalid tx_queue_size (= 2048), {TX_RANGE}"),
    # Both wrong: the receive queue is checked first.
    "rx-before-tx": ("tx_queue_size=3,rx_queue_size=5", f"Invalid rx_queue_size (= 5), {RX_RANGE}"),
}


@pytest.mark.parametrize("case", ERRORS)
def test_queue_size_errors(vmm, case):
    props, message = ERRORS[case]
    device = f"virtio-net-pci,netdev=n0,{props}"
    args = ["-kernel", conftest.KERNEL, "-nodefaults", "-display", "none",
            "-netdev", "user,id=n0", "-device", device]
    argv0, cmd = "petrel", [conftest.PETREL, *args]
    if vmm == "qemu":
        argv0, cmd = "qemu-system-x86_64", [QEMU, *QEMU_ARGS, *args]
    r = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       timeout=TIMEOUT)
    # QEMU warns about the host's CPU features first.
    err = [l for l in r.stderr.splitlines() if ": warning: " not in l]
    assert (r.returncode, err) == (1, [f"{argv0}: -device {device}: {message}"])


def test_a_guest_on_a_nic_with_all_three(vmm, petrel):
    """Larger queues and an MTU change nothing for a driver that takes neither (the test
    guest uses 256 entries and leaves VIRTIO_NET_F_MTU): it gets its DHCP lease as on a
    default NIC, with the features and queue sizes QEMU 7.2 gives it."""
    device = nic("n0")
    device[1] += ",rx_queue_size=1024,tx_queue_size=1024,host_mtu=9000"
    p = petrel(["-netdev", "user,id=n0", *device], append="petrel.test=netdhcp")
    assert p.wait_line("status: ") == "status: 0", p.console()
    one_line(p, r"virtio: 00:[0-9a-f]{2}\.0 1af4:10(00|41) features=0x100078020 "
                r"queue=256,256,16 msix=on")
    one_line(p, r"netdhcp: lease ip=10\.0\.2\.15 gw=10\.0\.2\.2 dns=10\.0\.2\.3")
    assert p.wait_exit() == 0
