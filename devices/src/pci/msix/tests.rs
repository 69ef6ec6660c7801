//! Vector table access, masking and pending bits.

use std::sync::Mutex;

use super::*;

/// An [`MsiInterrupt`] that records what it is asked to do.
#[derive(Debug, Default)]
pub(crate) struct RecordingMsi {
    /// Vectors triggered, in order.
    pub triggered: Mutex<Vec<u16>>,
    /// Last route per vector: (address, data, masked).
    pub routes: Mutex<std::collections::BTreeMap<u16, (u64, u32, bool)>>,
}

impl RecordingMsi {
    pub(crate) fn take_triggered(&self) -> Vec<u16> {
        std::mem::take(&mut *self.triggered.lock().unwrap())
    }

    pub(crate) fn route(&self, vector: u16) -> Option<(u64, u32, bool)> {
        self.routes.lock().unwrap().get(&vector).copied()
    }
}

impl MsiInterrupt for RecordingMsi {
    fn trigger(&self, vector: u16) -> io::Result<()> {
        self.triggered.lock().unwrap().push(vector);
        Ok(())
    }

    fn update_route(&self, vector: u16, address: u64, data: u32, masked: bool) -> io::Result<()> {
        self.routes
            .lock()
            .unwrap()
            .insert(vector, (address, data, masked));
        Ok(())
    }
}

fn msix(vectors: u16) -> (MsixConfig, Arc<RecordingMsi>) {
    let msi = Arc::new(RecordingMsi::default());
    (MsixConfig::new(vectors, msi.clone()).unwrap(), msi)
}

fn write32(m: &mut MsixConfig, offset: u64, value: u32) {
    m.table_write(offset, &value.to_le_bytes());
}

fn read32(m: &MsixConfig, offset: u64) -> u32 {
    let mut b = [0u8; 4];
    m.table_read(offset, &mut b);
    u32::from_le_bytes(b)
}

fn program(m: &mut MsixConfig, vector: u64, address: u64, data: u32) {
    let base = vector * MSIX_TABLE_ENTRY_SIZE;
    m.table_write(base, &address.to_le_bytes());
    write32(m, base + 8, data);
    write32(m, base + 12, 0);
}

#[test]
fn vector_count_is_checked() {
    let msi: Arc<dyn MsiInterrupt> = Arc::new(RecordingMsi::default());
    assert_eq!(
        MsixConfig::new(0, msi.clone()).unwrap_err(),
        MsixError::VectorCount(0)
    );
    assert_eq!(
        MsixConfig::new(2049, msi).unwrap_err(),
        MsixError::VectorCount(2049)
    );
}

#[test]
fn capability_body_layout() {
    let (m, _) = msix(3);
    let body = m.capability_body(0, 0x4000, 0, 0x6000);
    assert_eq!(body, [2, 0, 0x00, 0x40, 0, 0, 0x00, 0x60, 0, 0]);
    let body = m.capability_body(2, 0x0, 2, 0x800);
    assert_eq!(&body[2..], &[2, 0, 0, 0, 2, 8, 0, 0]);
    assert_eq!(m.table_size(), 48);
    assert_eq!(m.pba_size(), 8);
}

#[test]
fn table_access() {
    let (mut m, msi) = msix(2);
    // Power-on: masked.
    assert_eq!(read32(&m, 12), 1);
    assert_eq!(read32(&m, 16 + 12), 1);
    program(&mut m, 1, 0xfee0_1000, 0x4021);
    assert_eq!(read32(&m, 16), 0xfee0_1000);
    assert_eq!(read32(&m, 20), 0);
    assert_eq!(read32(&m, 24), 0x4021);
    assert_eq!(read32(&m, 28), 0);
    let mut q = [0u8; 8];
    m.table_read(16, &mut q);
    assert_eq!(u64::from_le_bytes(q), 0xfee0_1000);
    // Reserved vector control bits are read-only.
    write32(&mut m, 28, 0xffff_fffe);
    assert_eq!(read32(&m, 28), 0);
    // Misaligned, narrow and out-of-range accesses.
    let mut w = [0u8; 2];
    m.table_read(16, &mut w);
    assert_eq!(w, [0xff, 0xff]);
    assert_eq!(read32(&m, 18), u32::MAX);
    assert_eq!(read32(&m, 32), u32::MAX);
    m.table_write(16, &[0, 0]);
    assert_eq!(read32(&m, 16), 0xfee0_1000);
    // Routes follow the table; disabled MSI-X counts as masked.
    assert_eq!(msi.route(1), Some((0xfee0_1000, 0x4021, true)));
    m.set_message_control(MSIX_CONTROL_ENABLE);
    assert_eq!(msi.route(1), Some((0xfee0_1000, 0x4021, false)));
    assert_eq!(msi.route(0), Some((0, 0, true)));
}

#[test]
fn disabled_does_not_deliver() {
    let (mut m, msi) = msix(1);
    program(&mut m, 0, 0xfee0_0000, 0x30);
    assert!(!m.trigger(0).unwrap());
    assert!(!m.pending(0));
    m.set_message_control(MSIX_CONTROL_ENABLE);
    assert!(m.trigger(0).unwrap());
    assert!(!m.trigger(1).unwrap());
    assert_eq!(msi.take_triggered(), [0]);
}

#[test]
fn entry_mask_sets_pending_and_unmask_delivers() {
    let (mut m, msi) = msix(2);
    m.set_message_control(MSIX_CONTROL_ENABLE);
    program(&mut m, 1, 0xfee0_0000, 0x31);
    write32(&mut m, 16 + 12, 1);
    assert!(m.trigger(1).unwrap());
    assert!(m.pending(1));
    assert!(msi.take_triggered().is_empty());
    let mut pba = [0u8; 8];
    m.pba_read(0, &mut pba);
    assert_eq!(u64::from_le_bytes(pba), 0b10);
    // The PBA is read-only and only qword/dword readable.
    let mut narrow = [0u8; 2];
    m.pba_read(0, &mut narrow);
    assert_eq!(narrow, [0xff, 0xff]);

    write32(&mut m, 16 + 12, 0);
    assert!(!m.pending(1));
    assert_eq!(msi.take_triggered(), [1]);
}

#[test]
fn function_mask_sets_pending() {
    let (mut m, msi) = msix(2);
    program(&mut m, 0, 0xfee0_0000, 0x30);
    program(&mut m, 1, 0xfee0_0000, 0x31);
    m.set_message_control(MSIX_CONTROL_ENABLE | MSIX_CONTROL_MASKALL);
    assert_eq!(msi.route(0), Some((0xfee0_0000, 0x30, true)));
    m.trigger(0).unwrap();
    m.trigger(1).unwrap();
    assert!(m.pending(0) && m.pending(1));
    assert!(msi.take_triggered().is_empty());
    m.set_message_control(MSIX_CONTROL_ENABLE);
    assert_eq!(msi.take_triggered(), [0, 1]);
    assert!(!m.pending(0) && !m.pending(1));
}

#[test]
fn reset_and_state() {
    let (mut m, _) = msix(65);
    assert_eq!(m.pba_size(), 16);
    m.set_message_control(MSIX_CONTROL_ENABLE | MSIX_CONTROL_MASKALL);
    program(&mut m, 64, 0xfee0_0000, 0x55);
    m.trigger(64).unwrap();
    assert!(m.pending(64));
    let state = m.save_state();

    m.reset();
    assert!(!m.enabled() && !m.pending(64));
    assert!(m.entry(64).unwrap().masked());

    m.restore_state(&state).unwrap();
    assert_eq!(m.save_state(), state);
    assert_eq!(m.entry(64).unwrap().data, 0x55);

    let (mut small, _) = msix(2);
    assert_eq!(
        small.restore_state(&state),
        Err(MsixError::StateSize {
            expected: 2,
            got: 65
        })
    );
}
