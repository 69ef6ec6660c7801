//! How a network device is configured (QEMU's `-device virtio-net-pci`
//! properties), and why a configuration is refused.

/// QEMU's first default MAC address (the VMM adds the NIC's index).
pub const DEFAULT_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
/// Default size of the receive and transmit queues.
pub const DEFAULT_QUEUE_SIZE: u16 = 256;
/// Largest `rx_queue_size`/`tx_queue_size` (QEMU's `VIRTQUEUE_MAX_SIZE`).
pub const MAX_QUEUE_SIZE: u16 = 1024;
/// Size of the control queue.
pub const CTRL_QUEUE_SIZE: u16 = 64;
/// Index of the receive queue.
pub const RX_QUEUE: usize = 0;
/// Index of the transmit queue.
pub const TX_QUEUE: usize = 1;
/// Index of the control queue.
pub const CTRL_QUEUE: usize = 2;

/// Why a network device could not be created.
#[derive(Debug, thiserror::Error)]
pub enum VirtioNetError {
    /// `rx_queue_size` out of range.
    #[error(
        "Invalid rx_queue_size (= {0}), must be a power of 2 between {DEFAULT_QUEUE_SIZE} and {MAX_QUEUE_SIZE}."
    )]
    RxQueueSize(u16),
    /// `tx_queue_size` out of range.
    #[error(
        "Invalid tx_queue_size (= {0}), must be a power of 2 between {DEFAULT_QUEUE_SIZE} and {MAX_QUEUE_SIZE}"
    )]
    TxQueueSize(u16),
    /// The device's eventfd could not be created.
    #[error("cannot create an eventfd")]
    EventFd(#[source] std::io::Error),
}

/// How to create a [`super::VirtioNet`] (QEMU's `-device virtio-net-pci`
/// properties).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetParams {
    /// `mac`.
    pub mac: [u8; 6],
    /// `rx_queue_size`.
    pub rx_queue_size: u16,
    /// `tx_queue_size`: checked as QEMU 7.2 checks it, then 256 whatever it
    /// was, as in QEMU 7.2 without vhost-user or vDPA (which petrel has not).
    pub tx_queue_size: u16,
    /// `host_mtu`: offered with `VIRTIO_NET_F_MTU`, in the configuration
    /// space's `mtu`, when set and not 0.
    pub host_mtu: Option<u16>,
}

impl Default for NetParams {
    fn default() -> Self {
        NetParams {
            mac: DEFAULT_MAC,
            rx_queue_size: DEFAULT_QUEUE_SIZE,
            tx_queue_size: DEFAULT_QUEUE_SIZE,
            host_mtu: None,
        }
    }
}

impl NetParams {
    /// Checks the queue sizes as QEMU does.
    pub fn check(&self) -> Result<(), VirtioNetError> {
        let ok = |size: u16| {
            (DEFAULT_QUEUE_SIZE..=MAX_QUEUE_SIZE).contains(&size) && size.is_power_of_two()
        };
        if !ok(self.rx_queue_size) {
            return Err(VirtioNetError::RxQueueSize(self.rx_queue_size));
        }
        if !ok(self.tx_queue_size) {
            return Err(VirtioNetError::TxQueueSize(self.tx_queue_size));
        }
        Ok(())
    }
}
