//! Real Linux (Debian's cloud kernel, bzImage) booted by petrel, nested inside QEMU/TCG because
//! this machine's KVM cannot run stock Linux: see `petrel_tests::nested`. Each run boots L0 and
//! L1 (about 4 s) and then L2 through petrel (about 8 s per boot), so checks that can share a
//! boot do.

use std::sync::OnceLock;
use std::time::Duration;

use petrel_tests::nested::{L2End, Nested, Transcript};

fn nested() -> Nested {
    Nested::new(env!("CARGO_BIN_EXE_petrel"))
}

/// `-cpu host,-xsave`: with XSAVE, L2 warns "XSAVE consistency problem: size 2696 !=
/// kernel_size 576" with a stack trace, and its CPUID dump shows leaf 0xD.0 EBX still 0x240
/// (the size for XCR0 = x87|SSE) after L2 enabled AVX and PKRU. L1's KVM updates that value
/// when it intercepts L2's XSETBV; under TCG's nested SVM the intercept apparently never
/// reaches L1 (the notes on nesting say the same). Not petrel's doing; masking XSAVE avoids it.
const CPU: [&str; 2] = ["-cpu", "host,-xsave"];

/// The L2 command of the shared `-smp 2 -m 512M` boot: facts as `key: value` lines, then
/// L2's kernel messages of level 0-4 (emergency to warning) as `dmesg: <level>[time] text`.
const FACTS: &str = r#"
echo "date: $(date +%s)"
echo "rtc-epoch: $(cat /sys/class/rtc/rtc0/since_epoch)"
echo "rtc-name: $(cat /sys/class/rtc/rtc0/name)"
echo "nproc: $(nproc)"
echo "cpus-online: $(cat /sys/devices/system/cpu/online)"
echo "memtotal-kib: $(awk '/^MemTotal:/ { print $2 }' /proc/meminfo)"
echo "memory-line: $(dmesg | grep -m1 'Memory: ')"
dmesg -r | grep '^<[0-4]>' | sed 's/^/dmesg: /'
"#;

/// One boot of L2 with two vCPUs and 512 MiB, shared by the tests that only look at it.
fn smp2_run() -> &'static Transcript {
    static RUN: OnceLock<Result<Transcript, String>> = OnceLock::new();
    let run = RUN.get_or_init(|| {
        std::panic::catch_unwind(|| {
            let run = nested()
                .petrel_args(["-smp", "2", "-m", "512M"])
                .petrel_args(CPU)
                .l2_command(FACTS)
                .l2_end(L2End::Poweroff)
                .spawn();
            let t = run.finish();
            eprintln!(
                "nested smp2 run: {:.1} s, petrel exit {:?}",
                t.elapsed.as_secs_f64(),
                t.petrel_exit()
            );
            t
        })
        .map_err(|e| {
            e.downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "the shared nested run panicked".to_string())
        })
    });
    match run {
        Ok(t) => t,
        Err(e) => panic!("the shared -smp 2 -m 512M run failed: {e}"),
    }
}

/// The single L2 boot of a run that must have booted L2 exactly once and finished its command.
fn only_boot(t: &Transcript) -> petrel_tests::nested::L2Boot {
    let boots = t.l2_boots();
    assert_eq!(boots.len(), 1, "expected one L2 boot\n{}", t.dump());
    let boot = boots.into_iter().next().unwrap();
    assert_eq!(boot.rc, Some(0), "L2 command failed\n{}", t.dump());
    boot
}

/// The value of L2's `key: value` line (the first), or a panic with the console.
fn value(boot: &petrel_tests::nested::L2Boot, key: &str, t: &Transcript) -> String {
    boot.value(&format!("{key}:"))
        .unwrap_or_else(|| panic!("no '{key}:' line\n{}", t.dump()))
        .to_string()
}

/// Asserts that `guest` (an L2 clock reading in whole seconds, printed on the line `line`)
/// is within 5 s of the host's time. The reading happened before the line reached the host,
/// at most `TRANSIT` earlier (the console path L2 -> petrel -> L1 -> L0 -> here carries a line
/// in tens of milliseconds; 1 s is generous), and `date +%s` truncates up to 1 s.
fn assert_near_host_time(
    what: &str,
    guest: u64,
    line: &petrel_tests::nested::Line,
    t: &Transcript,
) {
    const TOLERANCE: f64 = 5.0;
    const TRANSIT: f64 = 1.0;
    let arrival = line.wall_secs();
    let guest = guest as f64;
    // The reading's true time lies in [guest, guest + 1); it was taken at host time
    // [arrival - TRANSIT, arrival].
    let ahead = guest - arrival; // smallest possible (guest - host) is guest - arrival
    let behind = arrival - guest; // largest possible (host - guest) is arrival - guest
    assert!(
        ahead <= TOLERANCE && behind <= TOLERANCE + TRANSIT,
        "{what}: L2 says {guest}, the host's clock was {arrival:.2} when the line arrived \
         (allowed: {TOLERANCE} s either way plus {TRANSIT} s transit)\n{}",
        t.dump()
    );
}

#[test]
fn linux_sees_two_cpus_512m_and_the_host_time() {
    let t = smp2_run();
    t.assert_petrel_exit(0);
    let boot = only_boot(t);
    let get = |key: &str| value(&boot, key, t);

    assert_eq!(get("nproc"), "2", "{}", t.dump());
    assert_eq!(get("cpus-online"), "0-1", "{}", t.dump());

    // MemTotal is RAM the kernel can allocate: usable e820 RAM minus what the kernel reserves
    // at boot: its image (this kernel: ~31 MiB of code, data and bss), struct page for every
    // page (64 bytes per 4 KiB, 8 MiB for 512 MiB), page tables, per-CPU areas, the ACPI and
    // low-memory reservations. Measured: 480172 KiB (~469 MiB). The bound [448 MiB, 512 MiB)
    // leaves 64 MiB for the kernel's share and fails on a guest with a different RAM size.
    let memtotal: u64 = get("memtotal-kib").parse().expect("MemTotal in KiB");
    assert!(
        (448 * 1024..512 * 1024).contains(&memtotal),
        "MemTotal {memtotal} KiB is outside [448 MiB, 512 MiB) for -m 512M\n{}",
        t.dump()
    );
    // "Memory: 219956K/523896K available (...)": the second figure is all the RAM in the e820
    // map. petrel reserves 0x9fc00-0xfffff (EBDA and BIOS area) and the kernel page 0, so it
    // is 512 MiB minus less than 1 MiB.
    let memory_line = get("memory-line");
    let e820_kib: u64 = memory_line
        .split_once('/')
        .and_then(|(_, r)| r.split_once('K'))
        .and_then(|(n, _)| n.parse().ok())
        .unwrap_or_else(|| panic!("cannot parse '{memory_line}'"));
    assert!(
        (511 * 1024..=512 * 1024).contains(&e820_kib),
        "the kernel counted {e820_kib} KiB of RAM for -m 512M: {memory_line}\n{}",
        t.dump()
    );

    let date: u64 = get("date").parse().expect("date +%s");
    assert_near_host_time("date +%s", date, boot.line("date:").unwrap(), t);
    // The RTC (rtc_cmos on petrel's CMOS clock) read directly, not the system clock.
    assert_eq!(get("rtc-name"), "rtc_cmos 00:00", "{}", t.dump());
    let rtc: u64 = get("rtc-epoch").parse().expect("rtc since_epoch");
    assert_near_host_time("rtc0 since_epoch", rtc, boot.line("rtc-epoch:").unwrap(), t);
}

/// A kernel message of level warning or worse that does not point at petrel, and why.
struct Tolerated {
    /// Substring identifying the message.
    pattern: &'static str,
    /// Further condition on the whole dmesg line.
    accept: fn(&str) -> bool,
    /// Why it is not petrel's doing.
    reason: &'static str,
}

/// The L2 warnings tolerated. Seen with 6.1.0-56-cloud-amd64 and `-cpu host,-xsave`: no
/// warn+ line at all on an idle machine (13 runs); with two CPU hogs on the two cores, this
/// one in 2 of 6 runs.
const TOLERATED_L2_WARNINGS: &[Tolerated] = &[Tolerated {
    pattern: "APIC calibration not consistent with PM-Timer: ",
    accept: apic_calibration_within_25_percent,
    reason: "seen only when the host is overloaded (two CPU hogs on two cores): the kernel \
             times 100 ms of LAPIC timer ticks against the ACPI PM timer; each PM-timer read \
             is an exit from L2 to petrel in L1 user space, and with L0 (TCG) starved of CPU \
             one of them is delayed by milliseconds (89 ms instead of 100 measured). The kernel \
             then trusts the PM timer. A PM timer of the wrong frequency would be off by far \
             more, every time: accepted only within 25 %.",
}];

/// "APIC calibration not consistent with PM-Timer: 89ms instead of 100ms": within 75-125 ms.
fn apic_calibration_within_25_percent(line: &str) -> bool {
    line.split("PM-Timer: ")
        .nth(1)
        .and_then(|r| r.split_once("ms instead of 100ms"))
        .and_then(|(n, _)| n.trim().parse::<u32>().ok())
        .is_some_and(|ms| (75..=125).contains(&ms))
}

#[test]
fn linux_dmesg_has_no_platform_warnings() {
    let t = smp2_run();
    let boot = only_boot(t);
    // The L2 command ran to its end: the dmesg list is complete.
    assert!(boot.line("memory-line:").is_some(), "{}", t.dump());
    assert_no_platform_warnings(&boot, t);
}

/// Asserts that the `dmesg: ` lines of `boot` (L2's kernel messages of level 0-4) are all
/// in [`TOLERATED_L2_WARNINGS`]; prints them with the verdicts.
fn assert_no_platform_warnings(boot: &petrel_tests::nested::L2Boot, t: &Transcript) {
    let mut unexpected = 0;
    let mut report = String::new();
    for w in boot.values("dmesg: ") {
        match TOLERATED_L2_WARNINGS
            .iter()
            .find(|t| w.contains(t.pattern) && (t.accept)(w))
        {
            Some(t) => report.push_str(&format!("tolerated:  {w}\n    because {}\n", t.reason)),
            None => {
                unexpected += 1;
                report.push_str(&format!("UNEXPECTED: {w}\n"));
            }
        }
    }
    if !report.is_empty() {
        eprintln!("L2 warn+ kernel messages:\n{report}");
    }
    assert_eq!(
        unexpected,
        0,
        "L2's kernel logged {unexpected} unexpected warning/error lines; all warn+ \
         lines:\n{report}\n{}",
        t.dump()
    );
}

#[test]
fn linux_poweroff_ends_petrel_with_status_0() {
    let t = smp2_run();
    let boot = only_boot(t);
    // L2's `poweroff -f` is the last thing it does; petrel then exits by itself.
    t.assert_petrel_exit(0);
    let end = t
        .line("L1-PETREL-EXIT")
        .expect("exit line")
        .at
        .saturating_sub(boot.output.last().map_or(Duration::ZERO, |l| l.at));
    assert!(
        end < Duration::from_secs(30),
        "petrel took {end:?} to exit after L2's command ended\n{}",
        t.dump()
    );
}

/// L2 command for the reboot tests: CMOS NVRAM byte 0x7e counts boots across resets (petrel
/// keeps CMOS on reset, like the test guest's `boot-count:`). First boot: 0 -> 1, and /init's
/// `l2end=reboot` reboots; second boot: reset to 0 and power off.
const REBOOT_ONCE: &str = r#"
n=$(cmos get 0x7e) || exit 1
echo "boot-counter: $n"
if [ "$n" = 0 ]; then
    cmos set 0x7e 1 || exit 1
    echo "next: reboot"
else
    cmos set 0x7e 0 || exit 1
    echo "next: poweroff"
    poweroff -f
fi
"#;

#[test]
fn linux_reboot_boots_again_then_poweroff_exits_0() {
    let t = nested()
        .petrel_args(["-smp", "1", "-m", "256M"])
        .petrel_args(CPU)
        .l2_command(REBOOT_ONCE)
        .l2_end(L2End::Reboot)
        .spawn()
        .finish();
    eprintln!("nested reboot run: {:.1} s", t.elapsed.as_secs_f64());
    t.assert_petrel_exit(0);
    let boots = t.l2_boots();
    assert_eq!(boots.len(), 2, "expected two L2 boots\n{}", t.dump());
    assert_eq!(boots[0].value("boot-counter:"), Some("0"), "{}", t.dump());
    assert_eq!(boots[0].value("next:"), Some("reboot"), "{}", t.dump());
    assert_eq!(boots[0].rc, Some(0), "{}", t.dump());
    // The second boot saw the byte the first wrote: CMOS survived the reset.
    assert_eq!(boots[1].value("boot-counter:"), Some("1"), "{}", t.dump());
    assert_eq!(boots[1].value("next:"), Some("poweroff"), "{}", t.dump());
}

#[test]
fn linux_reboot_with_no_reboot_exits_0() {
    let t = nested()
        .petrel_args(["-smp", "1", "-m", "256M", "-no-reboot"])
        .petrel_args(CPU)
        .l2_command("echo rebooting")
        .l2_end(L2End::Reboot)
        .spawn()
        .finish();
    eprintln!("nested -no-reboot run: {:.1} s", t.elapsed.as_secs_f64());
    t.assert_petrel_exit(0);
    let boots = t.l2_boots();
    assert_eq!(
        boots.len(),
        1,
        "-no-reboot must not boot L2 again\n{}",
        t.dump()
    );
    assert_eq!(boots[0].text(), "rebooting", "{}", t.dump());
    assert_eq!(boots[0].rc, Some(0), "{}", t.dump());
}

/// Harness plumbing that later tests (QMP, disks) build on, checked through petrel's serial
/// backends: a host file attached to L1 as a virtio disk and handed to petrel as
/// `-serial file:/dev/vda` (COM2) receives what L2 writes to ttyS1, and a TCP server petrel
/// opens in L1 for COM3 is reachable from the host through the forwarded port, both ways.
#[test]
fn host_disk_and_forwarded_port_reach_l2_serial_ports() {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::Instant;

    let dir = petrel_tests::TempDir::new("nested-plumbing");
    let disk = dir.path().join("disk.img");
    std::fs::write(&disk, vec![0u8; 1 << 20]).expect("create the disk image");
    let port = petrel_tests::nested::free_port();
    let run = nested()
        .petrel_args(["-smp", "1", "-m", "256M"])
        .petrel_args(CPU)
        .petrel_args([
            "-serial",
            &format!("file:{}", petrel_tests::nested::l1_disk(0)),
        ])
        .petrel_args([
            "-chardev",
            &format!("socket,id=net,host=0.0.0.0,port={port},server=on,wait=off"),
            "-serial",
            "chardev:net",
        ])
        .disk(&disk)
        .qmp_port(port)
        .l2_command(
            r#"
echo disk-ok > /dev/ttyS1
stty -F /dev/ttyS2 -echo
line=$(timeout 120 head -n1 /dev/ttyS2)
echo "ttyS2 got: $line"
echo net-ok > /dev/ttyS2
"#,
        )
        .spawn();

    // The forwarded port accepts as soon as L0 runs; until petrel listens in L1 the
    // connection is closed at once. Retry, and repeat the request until L2 answers.
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut received = String::new();
    'outer: while Instant::now() < deadline {
        let Ok(mut s) = TcpStream::connect(run.qmp_addr().unwrap()) else {
            std::thread::sleep(Duration::from_millis(200));
            continue;
        };
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let mut buf = [0u8; 256];
        loop {
            if s.write_all(b"go\n").is_err() {
                break;
            }
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    received.push_str(&String::from_utf8_lossy(&buf[..n]));
                    if received.contains("net-ok") {
                        break 'outer;
                    }
                }
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => break,
            }
            if Instant::now() >= deadline {
                break 'outer;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let t = run.finish();
    assert!(
        received.contains("net-ok"),
        "no 'net-ok' from L2's ttyS2 through 127.0.0.1:{port} (got {received:?})\n{}",
        t.dump()
    );
    t.assert_petrel_exit(0);
    let boot = only_boot(&t);
    assert_eq!(boot.value("ttyS2 got:"), Some("go"), "{}", t.dump());
    let written = std::fs::read(&disk).expect("read the disk image");
    let text = String::from_utf8_lossy(&written[..4096]);
    assert!(
        text.starts_with("disk-ok"),
        "the disk image does not start with L2's ttyS1 output: {:?}\n{}",
        text.trim_end_matches('\0'),
        t.dump()
    );
}

#[test]
fn apic_calibration_tolerance_is_bounded() {
    let line = |ms: u32| {
        format!("<4>[    1.446959] APIC calibration not consistent with PM-Timer: {ms}ms instead of 100ms")
    };
    assert!(apic_calibration_within_25_percent(&line(94)));
    assert!(apic_calibration_within_25_percent(&line(89)));
    assert!(!apic_calibration_within_25_percent(&line(50)));
    assert!(!apic_calibration_within_25_percent(&line(200)));
    assert!(!apic_calibration_within_25_percent(
        "APIC calibration not consistent"
    ));
}

/// Size of the disk image of [`linux_writes_reach_a_host_raw_image_through_virtio_blk`].
const BLK_IMAGE_SIZE: u64 = 64 << 20;
/// The test's unit: dd's block size in L2.
const BLK: u64 = 4096;
/// Block the host fills with [`BLK_HOST_TEXT`] before the run; L2 reads it.
const BLK_HOST_BLOCK: u64 = 2048;
/// First block of the 1 MiB L2 writes ([`blk_l2_pattern`]).
const BLK_L2_BLOCK: u64 = 1024;
/// The disk's last block, where L2 writes [`blk_end_pattern`].
const BLK_END_BLOCK: u64 = BLK_IMAGE_SIZE / BLK - 1;
/// What the host writes at block [`BLK_HOST_BLOCK`] before the run.
const BLK_HOST_TEXT: &[u8] = b"petrel-host-block\n";

/// What L2 writes at block [`BLK_L2_BLOCK`]: `printf 'petrel-l2-%05d\n' $(seq 0 65535)`,
/// 65536 lines of 16 bytes (1 MiB, so the write is split into many requests).
fn blk_l2_pattern() -> Vec<u8> {
    (0..65536)
        .flat_map(|i| format!("petrel-l2-{i:05}\n").into_bytes())
        .collect()
}

/// What L2 writes to block [`BLK_END_BLOCK`]: `printf 'petrel-end-%04d\n' $(seq 0 255)`.
fn blk_end_pattern() -> Vec<u8> {
    (0..256)
        .flat_map(|i| format!("petrel-end-{i:04}\n").into_bytes())
        .collect()
}

/// L2 command for the virtio-blk test. Both writes use `conv=fsync`: on a raw block device
/// without a file system, `sync` writes L2's dirty pages but sends no FLUSH to the device, so
/// only fsync makes the data durable through petrel (petrel's writes to L1's /dev/vda sit
/// in L1's page cache until the flush; measured: an `oflag=direct` write followed by `sync`
/// was not on the host 2 s later). `l2-synced` follows the writes, `sync` and nothing else:
/// the host reads the image then, during the `sleep 1`. The read-back drops L2's page cache
/// first so that it comes from the device; the write one block past the end must fail.
fn blk_l2_command() -> String {
    format!(
        r#"
d=/dev/vda
echo "sys: $(ls -d /sys/block/vda)"
echo "size: $(cat /sys/block/vda/size)"
echo "lbs: $(cat /sys/block/vda/queue/logical_block_size)"
echo "ro: $(cat /sys/block/vda/ro)"
echo "host: $(dd if=$d bs={BLK} skip={BLK_HOST_BLOCK} count=1 2>/dev/null | head -n1)"
p() {{ printf 'petrel-l2-%05d\n' $(seq 0 65535); }}
e() {{ printf 'petrel-end-%04d\n' $(seq 0 255); }}
p | dd of=$d bs={BLK} seek={BLK_L2_BLOCK} conv=fsync 2>/dev/null || exit 1
e | dd of=$d bs={BLK} seek={BLK_END_BLOCK} conv=fsync 2>/dev/null || exit 2
sync
echo l2-synced
sleep 1
printf x | dd of=$d bs={BLK} seek={past_end} 2>/dev/null
echo "past-end-rc: $?"
echo 3 > /proc/sys/vm/drop_caches
a=$(dd if=$d bs={BLK} skip={BLK_L2_BLOCK} count=256 2>/dev/null | md5sum)
b=$(p | md5sum)
[ "$a" = "$b" ] && echo "readback: ok" || echo "readback: bad $a $b"
a=$(dd if=$d bs={BLK} skip={BLK_END_BLOCK} 2>/dev/null | md5sum)
b=$(e | md5sum)
[ "$a" = "$b" ] && echo "readback-end: ok" || echo "readback-end: bad $a $b"
dmesg -r | grep -iE 'virtio|vda|blk|I/O error' | sed 's/^/blk-dmesg: /'
dmesg -r | grep '^<[0-4]>' | sed 's/^/dmesg: /'
"#,
        past_end = BLK_END_BLOCK + 1
    )
}

/// Asserts that none of `dmesg` (L2 kernel lines with their `<level>` prefix, picked for one
/// device class, `what`) is a warning or worse or speaks of an error, a failure, a timeout or
/// a (transmit) watchdog.
fn assert_no_trouble(what: &str, dmesg: &[&str], t: &Transcript) {
    let bad: Vec<&&str> = dmesg
        .iter()
        .filter(|l| {
            let lower = l.to_lowercase();
            ["<0>", "<1>", "<2>", "<3>", "<4>"]
                .iter()
                .any(|lvl| l.starts_with(lvl))
                || ["error", "fail", "timeout", "timed out", "watchdog"]
                    .iter()
                    .any(|w| lower.contains(w))
        })
        .collect();
    assert!(
        bad.is_empty(),
        "L2's kernel logged {what} problems: {bad:#?}\n{}",
        t.dump()
    );
}

/// Reads `len` bytes of `path` at `offset`.
fn read_at(path: &std::path::Path, offset: u64, len: usize) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(path).expect("open the disk image");
    let mut buf = vec![0u8; len];
    f.read_exact_at(&mut buf, offset)
        .expect("read the disk image");
    buf
}

/// The acceptance test for disks: a 64 MiB raw image on the host is L1's /dev/vda, which L1
/// hands to petrel as `-drive file=/dev/vda,format=raw,if=virtio`; L2 Linux sees /dev/vda
/// with the image's size and the host's data, writes patterns with dd (`conv=fsync`) in the
/// middle and at the last block, syncs, and the host finds them in the image while L2 still
/// runs (so L2's flush went through petrel and L1 to the host file) and again at the end.
#[test]
fn linux_writes_reach_a_host_raw_image_through_virtio_blk() {
    use std::os::unix::fs::FileExt;

    let dir = petrel_tests::TempDir::new("nested-blk");
    let disk = dir.path().join("disk.raw");
    {
        let f = std::fs::File::create(&disk).expect("create the disk image");
        f.set_len(BLK_IMAGE_SIZE).expect("size the disk image");
        f.write_all_at(BLK_HOST_TEXT, BLK_HOST_BLOCK * BLK)
            .expect("write the host block");
    }
    let l1_disk = petrel_tests::nested::l1_disk(0);
    let run = nested()
        .petrel_args(["-smp", "1", "-m", "256M"])
        .petrel_args(CPU)
        .petrel_args(["-drive", &format!("file={l1_disk},format=raw,if=virtio")])
        .disk(&disk)
        .l2_command(&blk_l2_command())
        .spawn();

    let l2_pattern = blk_l2_pattern();
    let end_pattern = blk_end_pattern();
    let end_offset = BLK_END_BLOCK * BLK;
    run.wait_for_line("l2-synced", Duration::from_secs(180));
    let mid_run_data = read_at(&disk, BLK_L2_BLOCK * BLK, l2_pattern.len());
    let mid_run_end = read_at(&disk, end_offset, BLK as usize);
    let t_mid = run.transcript();
    let t = run.finish();
    eprintln!("nested virtio-blk run: {:.1} s", t.elapsed.as_secs_f64());
    t.assert_petrel_exit(0);
    let boot = only_boot(&t);
    let get = |key: &str| value(&boot, key, &t);

    // What L2 saw of the disk.
    assert_eq!(get("sys"), "/sys/block/vda", "{}", t.dump());
    assert_eq!(
        get("size"),
        (BLK_IMAGE_SIZE / 512).to_string(),
        "/sys/block/vda/size (512-byte sectors)\n{}",
        t.dump()
    );
    assert_eq!(get("lbs"), "512", "{}", t.dump());
    assert_eq!(get("ro"), "0", "{}", t.dump());
    assert_eq!(
        get("host").as_bytes(),
        BLK_HOST_TEXT.trim_ascii_end(),
        "L2 did not read what the host wrote at block {BLK_HOST_BLOCK}\n{}",
        t.dump()
    );
    assert_eq!(get("readback"), "ok", "{}", t.dump());
    assert_eq!(get("readback-end"), "ok", "{}", t.dump());
    // A write past the end fails (ENOSPC from the block layer, nothing sent to the device).
    assert_ne!(get("past-end-rc"), "0", "{}", t.dump());

    // The flush reached the host file while L2 was still running: L1 only syncs after
    // petrel exits, so the data cannot have come from L1's final `sync`.
    assert!(
        t_mid.line("L1-PETREL-EXIT").is_none(),
        "petrel had already exited when the host read the image: the mid-run check proves \
         nothing\n{}",
        t.dump()
    );
    assert!(
        mid_run_data == l2_pattern,
        "after L2's fsync the image at {} does not hold L2's 1 MiB pattern (first bytes: \
         {:?})\n{}",
        BLK_L2_BLOCK * BLK,
        String::from_utf8_lossy(&mid_run_data[..64]),
        t.dump()
    );
    assert!(
        mid_run_end == end_pattern,
        "after L2's fsync the image's last block does not hold L2's pattern (first bytes: \
         {:?})\n{}",
        String::from_utf8_lossy(&mid_run_end[..64]),
        t.dump()
    );

    // And after everything ended, the whole image: the patterns, the host's block, zeroes
    // elsewhere, the same size.
    let image = std::fs::read(&disk).expect("read the disk image");
    assert_eq!(image.len() as u64, BLK_IMAGE_SIZE, "image size changed");
    let mut expected = vec![0u8; BLK_IMAGE_SIZE as usize];
    let at = |b: u64| (b * BLK) as usize;
    expected[at(BLK_HOST_BLOCK)..at(BLK_HOST_BLOCK) + BLK_HOST_TEXT.len()]
        .copy_from_slice(BLK_HOST_TEXT);
    expected[at(BLK_L2_BLOCK)..at(BLK_L2_BLOCK) + l2_pattern.len()].copy_from_slice(&l2_pattern);
    expected[end_offset as usize..].copy_from_slice(&end_pattern);
    if let Some(first) = image.iter().zip(&expected).position(|(a, b)| a != b) {
        panic!(
            "the image differs from what L2 and the host wrote at byte {first} (block {}): \
             {:?}\n{}",
            first as u64 / BLK,
            String::from_utf8_lossy(&image[first..(first + 64).min(image.len())]),
            t.dump()
        );
    }

    // L2's kernel found the disk and logged no virtio-blk trouble.
    let blk_dmesg = boot.values("blk-dmesg: ");
    eprintln!("L2 virtio/block kernel messages:\n{}", blk_dmesg.join("\n"));
    let capacity = format!("[vda] {} 512-byte logical blocks", BLK_IMAGE_SIZE / 512);
    assert!(
        blk_dmesg.iter().any(|l| l.contains(&capacity)),
        "no virtio_blk capacity message for vda\n{}",
        t.dump()
    );
    assert_no_trouble("virtio/block", &blk_dmesg, &t);
    // The first boot with a PCI device: the platform check of the shared run applies too.
    assert_no_platform_warnings(&boot, &t);
}

/// Port of the HTTP server in L1 for [`linux_fetches_a_file_over_user_networking`]: L1's
/// loopback, which L2 reaches through petrel's slirp as 10.0.2.2 (nothing else listens in L1).
const NET_HTTP_PORT: u16 = 8080;
/// Size of the file L2 fetches: 4 MiB, about 2900 full TCP segments, so L2's 256-entry rx
/// queue wraps many times (measured: about 1.5 s of L2's time).
const NET_BLOB_SIZE: usize = 4 << 20;

/// The file L2 fetches: xorshift64* bytes, so that no offset, truncation or repeated segment
/// goes unnoticed (a pattern with a short period would hide a shifted copy).
fn net_blob() -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut out = Vec::with_capacity(NET_BLOB_SIZE);
    while out.len() < NET_BLOB_SIZE {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(NET_BLOB_SIZE);
    out
}

/// The host's `sha256sum` of `data`, in hex.
fn sha256_hex(data: &[u8]) -> String {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run sha256sum");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(data)
        .expect("write to sha256sum");
    let out = child.wait_with_output().expect("sha256sum");
    assert!(out.status.success(), "sha256sum failed");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("sha256sum output")
        .to_string()
}

/// L2 command for the network test: eth0 up, a lease from petrel's DHCP server (busybox
/// udhcpc with a script of our own: the initramfs has no default one), then a wget of the
/// file L1's httpd serves on the user network's host address. Times are L2's uptime.
fn net_l2_command() -> String {
    format!(
        r#"
up() {{ cut -d' ' -f1 /proc/uptime; }}
cat > /tmp/u.sh <<'E'
#!/bin/sh
[ "$1" = bound ] || exit 0
ip addr add $ip/$mask dev $interface
ip route add default via $router dev $interface
echo "lease: ip=$ip mask=$mask router=$router dns=$dns server=$serverid"
E
chmod +x /tmp/u.sh
echo "driver: $(basename $(readlink /sys/class/net/eth0/device/driver))"
echo "mac: $(cat /sys/class/net/eth0/address)"
t0=$(up)
ip link set eth0 up
udhcpc -i eth0 -f -q -n -t 10 -T 1 -s /tmp/u.sh >/tmp/dhcp.log 2>&1
echo "udhcpc-rc: $?"
grep lease: /tmp/dhcp.log
t1=$(up)
echo "route: $(ip route | grep "^default")"
wget -q -O /tmp/blob http://10.0.2.2:{NET_HTTP_PORT}/blob
echo "wget-rc: $?"
t2=$(up)
echo "size: $(wc -c < /tmp/blob)"
echo "sha256: $(sha256sum /tmp/blob | cut -d' ' -f1)"
awk "BEGIN {{ printf \"l2-secs: dhcp=%.2f fetch=%.2f\n\", $t1-$t0, $t2-$t1 }}"
echo "eth0: $(grep eth0: /proc/net/dev)"
dmesg -r | grep -E 'virtio|eth0|failover' | sed 's/^/net-dmesg: /'
dmesg -r | grep '^<[0-4]>' | sed 's/^/dmesg: /'
"#
    )
}

/// The acceptance test for networking: L2 Linux on petrel's user networking (`-netdev
/// user,id=n0 -device virtio-net-pci,netdev=n0`) brings eth0 up by DHCP and fetches a 4 MiB
/// file over HTTP from 10.0.2.2, the user network's host address. "The host" is L1 here:
/// slirp inside petrel connects to L1's loopback, where busybox httpd serves a file the test
/// put into L1's initramfs (forwarding on to L0 would add L0's own slirp and L1's network
/// under TCG to the path without testing more of petrel). The host compares size and SHA-256
/// with what L2 printed. petrel in L1 is dynamically linked against libslirp and glib: the
/// harness carries the libraries `ldd` lists, so this run also proves they load in L1.
#[test]
fn linux_fetches_a_file_over_user_networking() {
    let blob = net_blob();
    let want_sha = sha256_hex(&blob);
    let run = nested()
        .petrel_args(["-smp", "1", "-m", "256M"])
        .petrel_args(CPU)
        .petrel_args([
            "-netdev",
            "user,id=n0",
            "-device",
            "virtio-net-pci,netdev=n0,mac=52:54:00:12:34:56,id=nic0",
        ])
        .l1_file("nested/www/blob", &blob)
        .l1_httpd(NET_HTTP_PORT)
        .l2_command(&net_l2_command())
        .spawn();
    let t = run.finish();
    t.assert_petrel_exit(0);
    let boot = only_boot(&t);
    let get = |key: &str| value(&boot, key, &t);
    let at = |key: &str| {
        boot.line(&format!("{key}:"))
            .map_or(f64::NAN, |l| l.at.as_secs_f64())
    };
    eprintln!(
        "nested virtio-net run: {:.1} s (L2 /init at {:.1} s, lease at {:.1} s, fetched at \
         {:.1} s since L0 started; L2's own clock: {})",
        t.elapsed.as_secs_f64(),
        boot.init.as_ref().map_or(f64::NAN, |l| l.at.as_secs_f64()),
        at("lease"),
        at("wget-rc"),
        boot.value("l2-secs:").unwrap_or("?"),
    );
    assert!(
        t.line("L1-HTTPD failed").is_none(),
        "L1's httpd did not start\n{}",
        t.dump()
    );

    // What L2 printed, line by line: the device and its driver; the lease slirp's DHCP
    // server gives (QEMU's defaults: 10.0.2.15/24 via 10.0.2.2, DNS 10.0.2.3, server
    // 10.0.2.2); the file, whole and intact.
    let size = NET_BLOB_SIZE.to_string();
    let expected = [
        ("driver", "virtio_net"),
        ("mac", "52:54:00:12:34:56"),
        ("udhcpc-rc", "0"),
        (
            "lease",
            "ip=10.0.2.15 mask=24 router=10.0.2.2 dns=10.0.2.3 server=10.0.2.2",
        ),
        ("wget-rc", "0"),
        ("size", size.as_str()),
        ("sha256", want_sha.as_str()),
    ];
    for (key, want) in expected {
        assert_eq!(get(key), want, "L2's '{key}:' line\n{}", t.dump());
    }
    assert!(
        get("route").starts_with("default via 10.0.2.2 dev eth0"),
        "{}",
        t.dump()
    );

    // eth0's counters: /proc/net/dev "eth0: rx_bytes rx_packets rx_errs rx_drop rx_fifo
    // rx_frame rx_compressed rx_multicast tx_bytes tx_packets tx_errs tx_drop ...".
    let counters: Vec<u64> = get("eth0")
        .trim_start_matches("eth0:")
        .split_whitespace()
        .map(|n| n.parse().expect("a /proc/net/dev counter"))
        .collect();
    assert!(counters.len() >= 12, "{counters:?}\n{}", t.dump());
    assert!(
        counters[0] >= NET_BLOB_SIZE as u64,
        "eth0 received only {} bytes\n{}",
        counters[0],
        t.dump()
    );
    assert_eq!(
        (counters[2], counters[10], counters[11]),
        (0, 0, 0),
        "eth0 rx errors, tx errors, tx drops: {counters:?}\n{}",
        t.dump()
    );

    // L2's kernel logged no virtio or network trouble.
    let net_dmesg = boot.values("net-dmesg: ");
    eprintln!(
        "L2 virtio/network kernel messages:\n{}",
        net_dmesg.join("\n")
    );
    assert_no_trouble("virtio/network", &net_dmesg, &t);
    assert_no_platform_warnings(&boot, &t);
}

/// A QMP client on the host end of the port forwarded to petrel's monitor in L1 (`-qmp
/// tcp:0.0.0.0:PORT,server=on,wait=off` with [`Nested::qmp_port`]): one command at a time,
/// events kept as they arrive. Every failure panics with the run's console.
struct Qmp<'a> {
    run: &'a petrel_tests::nested::NestedRun,
    reader: std::io::BufReader<std::net::TcpStream>,
    /// Events read so far, oldest first.
    events: Vec<serde_json::Value>,
}

/// How long one QMP command may take (a dump of 256 MiB included).
const QMP_REPLY_TIMEOUT: Duration = Duration::from_secs(120);

impl<'a> Qmp<'a> {
    /// Connects once petrel listens in L1 (at most 180 s: L1 and petrel have to start) and
    /// leaves negotiation mode.
    fn connect(run: &'a petrel_tests::nested::NestedRun) -> Qmp<'a> {
        let (reader, greeting) = run.connect_forwarded(Duration::from_secs(180));
        let mut q = Qmp {
            run,
            reader,
            events: Vec::new(),
        };
        let g: serde_json::Value = serde_json::from_str(&greeting)
            .unwrap_or_else(|e| q.fail(&format!("greeting {greeting:?}: {e}")));
        if g.get("QMP").is_none() {
            q.fail(&format!("not a QMP greeting: {greeting}"));
        }
        q.ok("qmp_capabilities", serde_json::json!({}));
        q
    }

    fn fail(&self, why: &str) -> ! {
        panic!("QMP: {why}\n{}", self.run.transcript().dump())
    }

    /// The next message, or a panic at `deadline`.
    fn read(&mut self, deadline: std::time::Instant) -> serde_json::Value {
        use std::io::BufRead;
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            self.fail("timed out waiting for a message");
        }
        let _ = self.reader.get_ref().set_read_timeout(Some(left));
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => self.fail("petrel closed the connection"),
            Ok(_) => serde_json::from_str(&line)
                .unwrap_or_else(|e| self.fail(&format!("bad message {line:?}: {e}"))),
            Err(e) => self.fail(&format!("reading (partial {line:?}): {e}")),
        }
    }

    /// Runs `cmd`; its `return` value or its `error` object.
    fn execute(
        &mut self,
        cmd: &str,
        args: serde_json::Value,
    ) -> Result<serde_json::Value, serde_json::Value> {
        use std::io::Write;
        let msg = serde_json::json!({ "execute": cmd, "arguments": args }).to_string();
        if let Err(e) = self
            .reader
            .get_mut()
            .write_all(format!("{msg}\n").as_bytes())
        {
            self.fail(&format!("sending {msg}: {e}"));
        }
        let deadline = std::time::Instant::now() + QMP_REPLY_TIMEOUT;
        loop {
            let mut m = self.read(deadline);
            if m.get("event").is_some() {
                self.events.push(m);
            } else if let Some(r) = m.get_mut("return") {
                return Ok(r.take());
            } else if let Some(e) = m.get_mut("error") {
                return Err(e.take());
            } else {
                self.fail(&format!("unexpected message {m} after {cmd}"));
            }
        }
    }

    /// Runs `cmd`, which must succeed; its `return` value.
    fn ok(&mut self, cmd: &str, args: serde_json::Value) -> serde_json::Value {
        self.execute(cmd, args)
            .unwrap_or_else(|e| self.fail(&format!("{cmd} failed: {e}")))
    }

    /// The first event called `name` (seen before or arriving within `timeout`) for which
    /// `pred` holds on its `data`.
    fn event(
        &mut self,
        name: &str,
        timeout: Duration,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let matches = |e: &serde_json::Value| e["event"] == name && pred(&e["data"]);
        let deadline = std::time::Instant::now() + timeout;
        let mut checked = 0;
        loop {
            if let Some(e) = self.events[checked..].iter().find(|e| matches(e)) {
                return e.clone();
            }
            checked = self.events.len();
            if std::time::Instant::now() >= deadline {
                self.fail(&format!(
                    "no {name} event as expected; events: {:?}",
                    self.events
                ));
            }
            let m = self.read(deadline);
            if m.get("event").is_none() {
                self.fail(&format!("unexpected message {m} while waiting for {name}"));
            }
            self.events.push(m);
        }
    }

    /// Repeats `query` every 100 ms until `pred` holds on its answer (within `timeout`);
    /// returns that answer.
    fn poll(
        &mut self,
        query: &str,
        timeout: Duration,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let r = self.ok(query, serde_json::json!({}));
            if pred(&r) {
                return r;
            }
            if std::time::Instant::now() >= deadline {
                self.fail(&format!("{query} still answers {r} after {timeout:?}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// `-qmp` for a monitor in L1 that the host reaches through [`Nested::qmp_port`]`(port)`.
fn qmp_tcp_args(port: u16) -> [String; 2] {
    [
        "-qmp".to_string(),
        format!("tcp:0.0.0.0:{port},server=on,wait=off"),
    ]
}

const MIB: u64 = 1 << 20;
/// L2's RAM in [`linux_balloon_inflates_to_the_qmp_target_and_deflates_back`].
const BALLOON_RAM: u64 = 256 * MIB;
/// The `balloon` target: half of it (more would only make the run longer: inflating costs
/// about 35 ms per 1 MiB batch of the driver here).
const BALLOON_TARGET: u64 = 128 * MIB;
/// 4 KiB pages the balloon holds at that target.
const BALLOON_PAGES: u64 = (BALLOON_RAM - BALLOON_TARGET) / 4096;

/// L2 command for the balloon test. Every 100 ms it samples MemTotal and the pages in the
/// balloon (`balloon_inflate - balloon_deflate` of /proc/vmstat, the driver's own count), and
/// prints `mem: balloon=<pages> total=<KiB>` when two samples in a row agree on a state it has
/// not printed yet: the idle state first, then where inflating and deflating settle (a pause
/// of the driver halfway may print a state in between). It stops once the balloon is empty
/// again after having held pages (at most about 3 minutes), then prints the driver's and
/// the warn+ kernel messages; L2 then stays up until the host quits.
const BALLOON_L2: &str = r#"
mt() { awk '/^MemTotal:/ { print $2 }' /proc/meminfo; }
bp() { awk '$1 == "balloon_inflate" { i = $2 } $1 == "balloon_deflate" { d = $2 } END { print i - d }' /proc/vmstat; }
for v in /sys/bus/virtio/drivers/virtio_balloon/virtio*; do
    echo "balloon-dev: ${v##*/} $(cat $v/features)"
done
prev=; said=; held=0; n=0
while [ $n -lt 1800 ]; do
    now="balloon=$(bp) total=$(mt)"
    if [ "$now" = "$prev" ] && [ "$now" != "$said" ]; then
        echo "mem: $now"
        said=$now
        case $now in
            balloon=0\ *) [ $held = 1 ] && break ;;
            *) held=1 ;;
        esac
    fi
    prev=$now
    n=$((n + 1))
    sleep 0.1
done
dmesg -r | grep -i balloon | sed 's/^/balloon-dmesg: /'
dmesg -r | grep '^<[0-4]>' | sed 's/^/dmesg: /'
"#;

/// Parses `mem: balloon=<pages> total=<KiB>`.
fn mem_line(line: &str, t: &Transcript) -> (u64, u64) {
    let field = |key: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {key} in {line:?}\n{}", t.dump()))
    };
    (field("balloon="), field("total="))
}

/// Sets the balloon's `target` with QMP `balloon`, then waits for L2's `nth` `mem:` line with
/// `pages` pages in the balloon, for `query-balloon` to report the target (the driver tells
/// the device each batch of pages before it updates `actual`) and for a BALLOON_CHANGE
/// saying so. Returns the seconds from the command to L2's line and MemTotal (KiB) then.
fn balloon_to(
    qmp: &mut Qmp,
    run: &petrel_tests::nested::NestedRun,
    target: u64,
    pages: u64,
    nth: usize,
) -> (f64, u64) {
    let asked = std::time::Instant::now();
    qmp.ok("balloon", serde_json::json!({ "value": target }));
    let line = run.wait_for_nth_line(
        &format!("mem: balloon={pages} "),
        nth,
        Duration::from_secs(120),
    );
    let secs = asked.elapsed().as_secs_f64();
    let (_, total) = mem_line(&line.text, &run.transcript());
    qmp.poll("query-balloon", Duration::from_secs(10), |r| {
        r["actual"] == target
    });
    qmp.event("BALLOON_CHANGE", Duration::from_secs(5), |d| {
        d["actual"] == target
    });
    (secs, total)
}

/// The acceptance test for the balloon: L2 Linux with petrel's `virtio-balloon-pci`
/// (`deflate-on-oom=off`, QEMU's default) and 256 MiB. The host, through the forwarded QMP
/// port, asks for 128 MiB with `balloon`; Linux's virtio_balloon inflates by 32768 pages and,
/// without VIRTIO_BALLOON_F_DEFLATE_ON_OOM, takes each from the managed pages
/// (`adjust_managed_page_count(page, -1)` in fill_balloon), so MemTotal drops by exactly
/// 128 MiB; `query-balloon` reports `actual` = 128 MiB and BALLOON_CHANGE says so. Then the
/// target goes back to 256 MiB: the driver deflates, MemTotal returns to its value before,
/// and `actual` to 256 MiB. The host ends the run with `quit`.
#[test]
fn linux_balloon_inflates_to_the_qmp_target_and_deflates_back() {
    use serde_json::json;

    let port = petrel_tests::nested::free_port();
    let run = nested()
        .petrel_args(["-smp", "1", "-m", "256M"])
        .petrel_args(CPU)
        .petrel_args([
            "-device",
            "virtio-balloon-pci,id=balloon0,deflate-on-oom=off",
        ])
        .petrel_args(qmp_tcp_args(port))
        .qmp_port(port)
        .l2_command(BALLOON_L2)
        .l2_end(L2End::None)
        .spawn();

    let idle = run.wait_for_line("mem: ", Duration::from_secs(180));
    let t0 = run.transcript();
    let (pages0, total0) = mem_line(&idle.text, &t0);
    assert_eq!(
        pages0,
        0,
        "the balloon holds pages before any request\n{}",
        t0.dump()
    );

    let mut qmp = Qmp::connect(&run);
    assert_eq!(
        qmp.ok("query-balloon", json!({})),
        json!({ "actual": BALLOON_RAM }),
        "query-balloon before inflating"
    );

    let (inflate_secs, total1) = balloon_to(&mut qmp, &run, BALLOON_TARGET, BALLOON_PAGES, 1);
    // Deflate back to all of RAM (L2's second line with an empty balloon).
    let (deflate_secs, total2) = balloon_to(&mut qmp, &run, BALLOON_RAM, 0, 2);
    let status = qmp.ok("query-status", json!({}));
    let change_events = qmp
        .events
        .iter()
        .filter(|e| e["event"] == "BALLOON_CHANGE")
        .count();
    // L2's loop ends after the deflation and L2 stays up (a power-off right away could end
    // petrel before the rate-limited last BALLOON_CHANGE): quit once its command has ended.
    run.wait_for_line("L2-END", Duration::from_secs(30));
    qmp.ok("quit", json!({}));
    drop(qmp);
    let t = run.finish();
    eprintln!(
        "nested balloon run: {:.1} s (L2 /init at {:.1} s; inflate by {} MiB took {inflate_secs:.1} \
         s, deflate {deflate_secs:.1} s, from the QMP command to L2's line; {change_events} \
         BALLOON_CHANGE events)",
        t.elapsed.as_secs_f64(),
        t.line("L2-INIT").map_or(f64::NAN, |l| l.at.as_secs_f64()),
        (BALLOON_RAM - BALLOON_TARGET) / MIB,
    );
    t.assert_petrel_exit(0);
    let boot = only_boot(&t);
    assert_eq!(status["status"], "running", "{status}\n{}", t.dump());

    // The driver bound petrel's device, and the device did not offer DEFLATE_ON_OOM (bit 2 of
    // the feature string, which virtio prints as one digit per bit from bit 0).
    let dev = value(&boot, "balloon-dev", &t);
    let features = dev.split_whitespace().nth(1).unwrap_or("");
    assert_eq!(
        features.as_bytes().get(2),
        Some(&b'0'),
        "DEFLATE_ON_OOM offered: {dev}\n{}",
        t.dump()
    );
    assert_eq!(
        features.as_bytes().get(32),
        Some(&b'1'),
        "VIRTIO_F_VERSION_1 not negotiated: {dev}\n{}",
        t.dump()
    );

    // MemTotal: down by exactly the balloon (one managed page per 4 KiB page), then back.
    let kib = (BALLOON_RAM - BALLOON_TARGET) / 1024;
    assert_eq!(
        total0 - total1,
        kib,
        "MemTotal went from {total0} to {total1} KiB with {BALLOON_PAGES} pages ballooned \
         (expected {kib} KiB less)\n{}",
        t.dump()
    );
    assert_eq!(
        total2,
        total0,
        "MemTotal after deflating is not what it was before\n{}",
        t.dump()
    );

    let balloon_dmesg = boot.values("balloon-dmesg: ");
    if !balloon_dmesg.is_empty() {
        eprintln!("L2 balloon kernel messages:\n{}", balloon_dmesg.join("\n"));
    }
    assert_no_trouble("balloon", &balloon_dmesg, &t);
    // L2's other warn+ messages are shown, not judged: on a host starved of CPU this boot
    // sees the clock warnings (TSC marked unstable against kvm-clock, APIC calibration far
    // off) that `linux_dmesg_has_no_platform_warnings` is there to judge on its own boot.
    let warnings = boot.values("dmesg: ");
    if !warnings.is_empty() {
        eprintln!(
            "L2 warn+ kernel messages (not judged here):\n{}",
            warnings.join("\n")
        );
    }
}

/// L2's RAM in [`linux_guest_memory_dump_opens_in_gdb`].
const DUMP_RAM: u64 = 256 * MIB;
/// Size of each disk image the dumps go to: the RAM and 1 MiB for the headers and notes.
const DUMP_DISK_SIZE: u64 = DUMP_RAM + MIB;

/// L2 command for the dump test: what the host checks the vmcores against (kernel symbols
/// from /proc/kallsyms, KASLR included; the kernel image's physical start from /proc/iomem;
/// /proc/version, which is the text of `linux_banner`), then `dump-ready`. L2 stays up.
const DUMP_L2: &str = r#"
echo "cpus: $(cat /sys/devices/system/cpu/online)"
grep -E ' (_text|_stext|_etext|linux_banner)$' /proc/kallsyms | while read a x n; do
    echo "sym-$n: $a"
done
echo "kcode: $(grep 'Kernel code' /proc/iomem)"
echo "version: $(cat /proc/version)"
echo dump-ready
"#;

/// An ELF64 core's program headers and notes, as `tests/qmp/test_qmp_dump.py` reads them.
struct Core {
    data: Vec<u8>,
    /// (p_type, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz)
    phdrs: Vec<(u32, u64, u64, u64, u64, u64)>,
    /// (owner, type, descriptor)
    notes: Vec<(String, u32, Vec<u8>)>,
}

fn u16_at(d: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(d[at..at + 2].try_into().unwrap())
}
fn u32_at(d: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(d[at..at + 4].try_into().unwrap())
}
fn u64_at(d: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(d[at..at + 8].try_into().unwrap())
}

impl Core {
    /// The core at the start of `image` (a disk the dump was streamed to), cut to its end:
    /// the furthest of its program headers, section headers and segments.
    fn from_image(image: &[u8]) -> Result<Core, String> {
        if image.len() < 64 || &image[..4] != b"\x7fELF" || image[4] != 2 || image[5] != 1 {
            return Err(format!(
                "not an ELF64 LE file: {:02x?}",
                &image[..16.min(image.len())]
            ));
        }
        let phoff = u64_at(image, 32) as usize;
        let shoff = u64_at(image, 40) as usize;
        let phnum = u16_at(image, 56) as usize;
        let shnum = u16_at(image, 60) as usize;
        let mut end = (phoff + 56 * phnum).max(shoff + 64 * shnum);
        let mut phdrs = Vec::new();
        for i in 0..phnum {
            let at = phoff + 56 * i;
            let ph = (
                u32_at(image, at),
                u64_at(image, at + 8),
                u64_at(image, at + 16),
                u64_at(image, at + 24),
                u64_at(image, at + 32),
                u64_at(image, at + 40),
            );
            end = end.max((ph.1 + ph.4) as usize);
            phdrs.push(ph);
        }
        if end > image.len() {
            return Err(format!(
                "the core ends at {end}, after the image ({})",
                image.len()
            ));
        }
        let data = image[..end].to_vec();
        let mut notes = Vec::new();
        for &(_, off, _, _, filesz, _) in phdrs.iter().filter(|p| p.0 == 4) {
            let (mut at, stop) = (off as usize, (off + filesz) as usize);
            while at + 12 <= stop {
                let (namesz, descsz) = (u32_at(&data, at) as usize, u32_at(&data, at + 4) as usize);
                let name = String::from_utf8_lossy(&data[at + 12..at + 12 + namesz])
                    .trim_end_matches('\0')
                    .to_string();
                let desc_at = at + 12 + namesz.next_multiple_of(4);
                notes.push((
                    name,
                    u32_at(&data, at + 8),
                    data[desc_at..desc_at + descsz].to_vec(),
                ));
                at = desc_at + descsz.next_multiple_of(4);
            }
        }
        Ok(Core { data, phdrs, notes })
    }

    /// The PT_LOADs: (offset, vaddr, paddr, filesz, memsz).
    fn loads(&self) -> Vec<(u64, u64, u64, u64, u64)> {
        self.phdrs
            .iter()
            .filter(|p| p.0 == 1)
            .map(|p| (p.1, p.2, p.3, p.4, p.5))
            .collect()
    }

    /// `len` bytes at virtual address `vaddr`, through the PT_LOADs.
    fn at_vaddr(&self, vaddr: u64, len: usize) -> Option<&[u8]> {
        self.loads()
            .into_iter()
            .find_map(|(off, va, _, filesz, _)| {
                (va <= vaddr && vaddr + len as u64 <= va + filesz).then(|| {
                    let at = (off + vaddr - va) as usize;
                    &self.data[at..at + len]
                })
            })
    }

    /// (pid, rip) of each NT_PRSTATUS note (x86-64 `elf_prstatus`: pid at 32, the 27
    /// registers of `user_regs_struct` from 112, rip the 17th).
    fn prstatus(&self) -> Vec<(u32, u64)> {
        self.notes
            .iter()
            .filter(|(name, ty, _)| name == "CORE" && *ty == 1)
            .map(|(_, _, d)| (u32_at(d, 32), u64_at(d, 112 + 16 * 8)))
            .collect()
    }
}

/// Runs a host tool; its stdout and stderr. Panics if it cannot start.
fn tool(cmd: &str, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// What `gdb -batch -c CORE` says about the core's threads and the string at `addr`.
fn gdb_on_core(core: &std::path::Path, addr: u64) -> String {
    let (ok, out, err) = tool(
        "gdb",
        &[
            "-nx",
            "-batch",
            "-c",
            &core.to_string_lossy(),
            "-ex",
            "info threads",
            "-ex",
            &format!("x/s {addr:#x}"),
        ],
    );
    assert!(ok, "gdb failed on {}: {err}\n{out}", core.display());
    out
}

/// The thread rows of gdb's `info threads`: (LWP number, frame address).
fn gdb_threads(out: &str) -> Vec<(u32, u64)> {
    out.lines()
        .filter_map(|l| {
            let l = l.trim_start_matches('*').trim();
            let lwp = l
                .split("LWP ")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()?;
            let addr = l
                .split_whitespace()
                .find_map(|w| w.strip_prefix("0x"))
                .and_then(|h| u64::from_str_radix(h, 16).ok())?;
            Some((lwp, addr))
        })
        .collect()
}

/// The acceptance test for dumps: L2 Linux with `-smp 2 -m 256M`; the host asks, through
/// the forwarded QMP port, for `dump-guest-memory` without paging to `file:/dev/vda` and with
/// paging to `file:/dev/vdb` (L1's virtio disks, host image files read after the run; petrel
/// streams into a block device). Each vmcore: `readelf` reads it without complaint and finds
/// two NT_PRSTATUS notes and two QEMU CPU-state notes; without paging one PT_LOAD holds all
/// of RAM at virtual = physical; with paging the PT_LOADs are the kernel's virtual mappings;
/// `gdb -c` lists two threads (LWP 1 and 2) stopped in the kernel's text, and reads
/// `linux_banner`, equal to L2's /proc/version, at its physical address (computed from
/// /proc/iomem's "Kernel code") in the first core and at its virtual address (from
/// /proc/kallsyms) in the second.
#[test]
fn linux_guest_memory_dump_opens_in_gdb() {
    use serde_json::json;
    use std::time::Instant;

    let dir = petrel_tests::TempDir::new("nested-dump");
    let disks = [dir.path().join("phys.img"), dir.path().join("paging.img")];
    for d in &disks {
        std::fs::File::create(d)
            .and_then(|f| f.set_len(DUMP_DISK_SIZE))
            .expect("create a disk image");
    }
    let port = petrel_tests::nested::free_port();
    let run = nested()
        .petrel_args(["-smp", "2", "-m", "256M"])
        .petrel_args(CPU)
        .petrel_args(qmp_tcp_args(port))
        .qmp_port(port)
        .disk(&disks[0])
        .disk(&disks[1])
        .l2_command(DUMP_L2)
        .l2_end(L2End::None)
        .spawn();
    run.wait_for_line("dump-ready", Duration::from_secs(180));
    let mut qmp = Qmp::connect(&run);
    assert_eq!(
        qmp.ok("query-dump", json!({})),
        json!({ "status": "none", "completed": 0, "total": 0 })
    );
    let done = json!({ "status": "completed", "completed": DUMP_RAM, "total": DUMP_RAM });
    let mut secs = Vec::new();
    for (i, paging) in [false, true].into_iter().enumerate() {
        let started = Instant::now();
        let protocol = format!("file:{}", petrel_tests::nested::l1_disk(i));
        assert_eq!(
            qmp.ok(
                "dump-guest-memory",
                json!({ "paging": paging, "protocol": protocol })
            ),
            json!({})
        );
        secs.push(started.elapsed().as_secs_f64());
        let ev = qmp.event("DUMP_COMPLETED", Duration::from_secs(10), |d| {
            d["result"]["status"] != "active"
        });
        assert_eq!(ev["data"], json!({ "result": done }), "paging={paging}");
        qmp.events.clear();
        assert_eq!(qmp.ok("query-dump", json!({})), done, "paging={paging}");
    }
    // The guest ran on (petrel's writer works on a snapshot).
    let status = qmp.ok("query-status", json!({}));
    qmp.ok("quit", json!({}));
    drop(qmp);
    let t = run.finish();
    eprintln!(
        "nested dump run: {:.1} s (L2 /init at {:.1} s; dump-guest-memory of {} MiB took \
         {:.1} s without paging, {:.1} s with, to the reply)",
        t.elapsed.as_secs_f64(),
        t.line("L2-INIT").map_or(f64::NAN, |l| l.at.as_secs_f64()),
        DUMP_RAM / MIB,
        secs[0],
        secs[1],
    );
    t.assert_petrel_exit(0);
    assert_eq!(status["status"], "running", "{status}\n{}", t.dump());
    let boots = t.l2_boots();
    assert_eq!(boots.len(), 1, "expected one L2 boot\n{}", t.dump());
    let boot = &boots[0];
    let get = |key: &str| value(boot, key, &t);
    assert_eq!(get("cpus"), "0-1", "{}", t.dump());
    let sym = |name: &str| {
        u64::from_str_radix(&get(&format!("sym-{name}")), 16)
            .unwrap_or_else(|e| panic!("sym-{name}: {e}\n{}", t.dump()))
    };
    let (text, stext, etext, banner) = (
        sym("_text"),
        sym("_stext"),
        sym("_etext"),
        sym("linux_banner"),
    );
    assert!(
        text >= 0xffff_ffff_8000_0000 && stext < etext,
        "kallsyms gave no addresses: _text {text:#x}\n{}",
        t.dump()
    );
    // "kcode: 01000000-01c00ee6 : Kernel code": the physical address of _text.
    let kcode = get("kcode");
    let kcode_phys = kcode
        .split('-')
        .next()
        .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
        .unwrap_or_else(|| panic!("cannot parse {kcode:?}\n{}", t.dump()));
    let banner_phys = kcode_phys + (banner - text);
    let version = format!("{}\n", get("version"));
    let release = petrel_tests::nested::artifacts().kernel_release;
    assert!(
        version.starts_with(&format!("Linux version {release} ")),
        "{version}"
    );

    for (i, paging) in [false, true].into_iter().enumerate() {
        let what = if paging { "paging" } else { "physical" };
        let image = std::fs::read(&disks[i]).expect("read the dump disk");
        let elf =
            Core::from_image(&image).unwrap_or_else(|e| panic!("{what} dump: {e}\n{}", t.dump()));
        let core = dir.path().join(format!("vmcore-{what}"));
        std::fs::write(&core, &elf.data).expect("write the core");

        let (ok, out, err) = tool(
            "readelf",
            &["-h", "-l", "-n", "-W", &core.to_string_lossy()],
        );
        assert!(
            ok && err.is_empty(),
            "readelf on the {what} dump: {err}\n{out}"
        );
        assert!(
            out.contains("CORE (Core file)") && out.contains("X86-64"),
            "{what} dump: {out}"
        );
        assert_eq!(out.matches("NT_PRSTATUS").count(), 2, "{what} dump: {out}");
        // QEMU's CPU-state notes (owner "QEMU", type 0), one per vCPU.
        let qemu_notes = elf
            .notes
            .iter()
            .filter(|n| n.0 == "QEMU" && n.1 == 0)
            .count();
        assert_eq!(qemu_notes, 2, "{what} dump: {out}");

        let loads = elf.loads();
        let loads_shown = out
            .lines()
            .filter(|l| l.trim_start().starts_with("LOAD"))
            .count();
        assert_eq!(loads_shown, loads.len(), "{what} dump: {out}");
        if paging {
            // The mappings of the page tables the vCPUs were on: the kernel's (upper half)
            // and those of the process that was current (lower half). Each is backed by RAM
            // stored once, in physical order after the headers: file offset - physical
            // address is the same for all.
            let base = loads[0].0.wrapping_sub(loads[0].2);
            for &(off, va, pa, filesz, memsz) in &loads {
                assert!(
                    pa + memsz <= DUMP_RAM && filesz == memsz && off.wrapping_sub(pa) == base,
                    "{what} dump: PT_LOAD at {va:#x}\n{out}"
                );
            }
            assert!(
                loads.iter().filter(|l| l.1 >> 63 == 1).count() > 1,
                "{what} dump: no kernel mappings\n{out}"
            );
        } else {
            assert_eq!(
                loads
                    .iter()
                    .map(|l| (l.1, l.2, l.3, l.4))
                    .collect::<Vec<_>>(),
                vec![(0, 0, DUMP_RAM, DUMP_RAM)],
                "{what} dump: {out}"
            );
        }

        // linux_banner in the dump, where the kernel says it is.
        let addr = if paging { banner } else { banner_phys };
        let bytes = elf
            .at_vaddr(addr, version.len())
            .unwrap_or_else(|| panic!("{what} dump: no PT_LOAD holds {addr:#x}\n{out}"));
        assert_eq!(
            String::from_utf8_lossy(bytes),
            version,
            "{what} dump: linux_banner at {addr:#x}"
        );

        // Registers: two vCPUs (pids 1 and 2), both in the kernel's text (idle or the
        // shell's system call).
        let regs = elf.prstatus();
        assert_eq!(
            regs.iter().map(|r| r.0).collect::<Vec<_>>(),
            vec![1, 2],
            "{what} dump"
        );
        for &(pid, rip) in &regs {
            assert!(
                (stext..etext).contains(&rip),
                "{what} dump: vCPU {pid}'s rip {rip:#x} is outside the kernel's text \
                 [{stext:#x}, {etext:#x})"
            );
        }

        // gdb opens the core without the kernel: two threads, the same rips, the banner.
        let gdb = gdb_on_core(&core, addr);
        eprintln!("gdb on the {what} dump:\n{gdb}");
        assert_eq!(gdb_threads(&gdb), regs, "{what} dump: gdb says\n{gdb}");
        let head = format!("\"Linux version {release} ");
        assert!(
            gdb.lines()
                .any(|l| l.starts_with(&format!("{addr:#x}")) && l.contains(&head)),
            "{what} dump: gdb does not read linux_banner at {addr:#x}:\n{gdb}"
        );
    }
}
