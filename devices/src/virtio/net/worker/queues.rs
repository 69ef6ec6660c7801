//! The control queue, and interrupts for a queue's used entries.

use log::{error, warn};
use virtio_queue::{DescriptorChain, QueueT};
use vm_memory::GuestMemoryMmap;

use super::Worker;
use crate::virtio::io_thread::signal_used;
use crate::virtio::net::control::Shared;
use crate::virtio::net::ctrl::{self, Effects};

impl Worker {
    /// Answers the control queue's commands.
    pub(super) fn process_ctrl(&mut self) {
        let mem = self.mem.clone();
        let mem = mem.as_ref();
        let Some(q) = self.ctrl.as_mut() else {
            return;
        };
        loop {
            if let Err(e) = q.queue.disable_notification(mem) {
                error!("virtio-net {}: control queue: {e}", self.shared.name);
                return;
            }
            let mut used_any = false;
            while let Some(chain) = q.queue.pop_descriptor_chain(mem) {
                let head = chain.head_index();
                let (written, effects) = command(&self.shared, mem, chain);
                if let Err(e) = q.queue.add_used(mem, head, written) {
                    error!(
                        "virtio-net {}: control queue: add_used: {e}",
                        self.shared.name
                    );
                }
                used_any = true;
                if effects.offloads_changed {
                    if let Some(b) = self.backend.as_mut() {
                        self.shared.apply_offloads(b.as_mut());
                    }
                }
                if effects.filter_changed {
                    self.shared.filter_changed();
                }
            }
            if used_any {
                let who = format_args!("virtio-net {}", self.shared.name);
                signal_used(mem, self.interrupt.as_ref(), q, who);
            }
            match q.queue.enable_notification(mem) {
                Ok(true) => continue,
                Ok(false) => return,
                Err(e) => {
                    error!("virtio-net {}: control queue: {e}", self.shared.name);
                    return;
                }
            }
        }
    }
}

/// Executes one control command chain; returns the bytes written to it and
/// what the command changed.
fn command(
    shared: &Shared,
    mem: &GuestMemoryMmap<()>,
    chain: DescriptorChain<&GuestMemoryMmap<()>>,
) -> (u32, Effects) {
    let parts = chain
        .clone()
        .reader(mem)
        .and_then(|r| chain.writer(mem).map(|w| (r, w)));
    let (mut reader, mut writer) = match parts {
        Ok(parts) => parts,
        Err(e) => {
            warn!("virtio-net {}: unusable control command: {e}", shared.name);
            return (0, Effects::default());
        }
    };
    let mut hdr = [0u8; 2];
    if writer.available_bytes() < 1 || std::io::Read::read_exact(&mut reader, &mut hdr).is_err() {
        warn!(
            "virtio-net {}: control command missing headers",
            shared.name
        );
        return (0, Effects::default());
    }
    let (ack, effects) = ctrl::execute(shared, hdr[0], hdr[1], &mut reader);
    match std::io::Write::write_all(&mut writer, &[ack]) {
        Ok(()) => (1, effects),
        Err(e) => {
            warn!(
                "virtio-net {}: cannot answer a control command: {e}",
                shared.name
            );
            (0, effects)
        }
    }
}
