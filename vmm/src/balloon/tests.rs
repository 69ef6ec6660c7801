//! The QEMU arithmetic of targets and `actual`, and requests without a device.

use super::*;

const MIB: u64 = 1 << 20;

#[test]
fn targets_as_qemu_computes_them() {
    let ram = 256 * MIB;
    assert_eq!(target_pages(ram, 192 * MIB), 16384);
    assert_eq!(target_pages(ram, ram), 0);
    // Above the RAM size: the whole RAM, an empty balloon.
    assert_eq!(target_pages(ram, 1 << 40), 0);
    // One byte: everything but that byte, rounded down to pages.
    assert_eq!(target_pages(ram, 1), 65535);
}

#[test]
fn memory_left_as_qemu_reports_it() {
    let ram = 256 * MIB;
    assert_eq!(memory_left(ram, 0), 256 * MIB as i64);
    assert_eq!(memory_left(ram, 16384), 192 * MIB as i64);
    // A driver claiming more than the RAM: negative, as in QEMU.
    assert_eq!(memory_left(ram, 65537), -4096);
}

#[test]
fn without_a_device() {
    let mem = Arc::new(
        GuestMemoryMmap::from_ranges(&[(vm_memory::GuestAddress(0), (16 * MIB) as usize)]).unwrap(),
    );
    let mut layer = BalloonLayer::new(mem, None);
    assert_eq!(layer.ram_size(), 16 * MIB);
    for value in [1, 0, -5] {
        let req = BalloonRequest::SetTarget { value };
        assert_eq!(layer.serve(req).unwrap_err(), BalloonError::NotActive);
    }
    assert_eq!(
        layer.serve(BalloonRequest::Query).unwrap_err(),
        BalloonError::NotActive
    );
    assert_eq!(
        BalloonError::NotActive.to_string(),
        "No balloon device has been activated"
    );
    match layer.serve(BalloonRequest::QueryMemdev) {
        Ok(Some(BalloonData::Memdevs(m))) => {
            assert_eq!(
                (m.len(), m[0].id.as_str(), m[0].size),
                (1, "pc.ram", 16 * MIB)
            )
        }
        other => panic!("{other:?}"),
    }
}
