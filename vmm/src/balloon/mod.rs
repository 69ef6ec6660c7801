//! The memory balloon: the `virtio-balloon-pci` function of `-device virtio-balloon-pci`
//! (at most one, as in QEMU), the `balloon` and `query-balloon` requests on it, and
//! `query-memdev` on the machine's RAM.

pub mod attach;
pub mod memdev;

#[cfg(test)]
mod tests;

use std::sync::{Arc, Mutex, PoisonError};

use petrel_arch::GuestMemoryMmap;
use petrel_devices::virtio::balloon::{VirtioBalloon, PAGE_SHIFT};
use petrel_devices::virtio::VirtioPciDevice;
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};

use crate::api::balloon::{BalloonData, BalloonRequest};

/// Why a balloon request failed; the messages are QEMU 7.2's.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BalloonError {
    /// The machine has no balloon device (QMP class `DeviceNotActive`).
    #[error("No balloon device has been activated")]
    NotActive,
    /// `balloon` with a value that is not a positive size.
    #[error("Parameter 'target' expects a size")]
    BadTarget,
    /// The function does not hold a balloon model (cannot happen: petrel builds it).
    #[error("the balloon function holds another device model")]
    WrongModel,
    /// `query-memdev`: the kernel did not tell the flags of guest RAM's mappings.
    #[error("cannot read the guest RAM mapping's flags: {0}")]
    MemdevFlags(String),
}

/// The balloon function on bus 0.
pub struct AttachedBalloon {
    /// `id=`.
    pub id: Option<String>,
    /// Device and function number.
    pub devfn: u8,
    pci: Arc<Mutex<VirtioPciDevice>>,
}

/// The guest's RAM and the balloon device, if there is one.
pub struct BalloonLayer {
    mem: Arc<GuestMemoryMmap>,
    device: Option<AttachedBalloon>,
}

/// The guest's memory in bytes with `pages` balloon pages deducted, as QEMU computes it for
/// `query-balloon` and BALLOON_CHANGE (a guest claiming more pages than there is RAM gets a
/// negative number, as in QEMU).
pub fn memory_left(ram_size: u64, pages: u32) -> i64 {
    (ram_size as i64).wrapping_sub(i64::from(pages) << PAGE_SHIFT)
}

/// The `num_pages` for a `balloon` target of `target` bytes (positive), as QEMU's
/// `virtio_balloon_to_target` computes it: a target above the RAM size means the whole RAM.
pub fn target_pages(ram_size: u64, target: u64) -> u32 {
    let target = target.min(ram_size);
    u32::try_from((ram_size - target) >> PAGE_SHIFT).unwrap_or(u32::MAX)
}

impl BalloonLayer {
    /// The RAM `mem`, with the balloon `device` if the machine has one.
    pub fn new(mem: Arc<GuestMemoryMmap>, device: Option<AttachedBalloon>) -> BalloonLayer {
        BalloonLayer { mem, device }
    }

    /// The balloon function, if any.
    pub fn device(&self) -> Option<&AttachedBalloon> {
        self.device.as_ref()
    }

    /// The guest's RAM size in bytes (QEMU's `get_current_ram_size`: petrel has no memory
    /// hot-plug).
    pub fn ram_size(&self) -> u64 {
        self.mem.iter().map(|r| r.len()).sum()
    }

    /// Runs `f` on the balloon model.
    fn with_model<T>(&self, f: impl FnOnce(&mut VirtioBalloon) -> T) -> Result<T, BalloonError> {
        let dev = self.device.as_ref().ok_or(BalloonError::NotActive)?;
        let mut pci = dev.pci.lock().unwrap_or_else(PoisonError::into_inner);
        let model = pci
            .device_mut()
            .as_any_mut()
            .downcast_mut::<VirtioBalloon>()
            .ok_or(BalloonError::WrongModel)?;
        Ok(f(model))
    }

    /// Serves one request; `None` is a plain success.
    pub fn serve(&mut self, req: BalloonRequest) -> Result<Option<BalloonData>, BalloonError> {
        let ram_size = self.ram_size();
        match req {
            BalloonRequest::SetTarget { value } => {
                // As QEMU: the device is checked first, then the value.
                if self.device.is_none() {
                    return Err(BalloonError::NotActive);
                }
                let target = u64::try_from(value)
                    .ok()
                    .filter(|v| *v > 0)
                    .ok_or(BalloonError::BadTarget)?;
                let pages = target_pages(ram_size, target);
                self.with_model(|b| b.set_target(pages))?;
                Ok(None)
            }
            BalloonRequest::Query => {
                let actual = self.with_model(|b| b.actual())?;
                Ok(Some(BalloonData::Actual(memory_left(ram_size, actual))))
            }
            BalloonRequest::QueryMemdev => {
                Ok(Some(BalloonData::Memdevs(vec![memdev::ram(&self.mem)?])))
            }
        }
    }
}
