//! VMM events as QMP events.

use petrel_devices::virtio::block::ErrorOutcome;
use petrel_qmp::schema::events;
use petrel_qmp::schema::types::{BlockErrorAction, IoOperationType, ShutdownCause};
use petrel_qmp::server::ServerHandle;

use crate::api::{EventSink, VmEvent};

/// Emits [`VmEvent`]s on every negotiated monitor.
pub struct QmpEvents {
    server: ServerHandle,
    rtc_qom_path: String,
}

impl QmpEvents {
    /// Events through `server`; `rtc_qom_path` identifies the RTC in RTC_CHANGE.
    pub fn new(server: ServerHandle, rtc_qom_path: String) -> QmpEvents {
        QmpEvents {
            server,
            rtc_qom_path,
        }
    }
}

fn cause(reason: &str) -> ShutdownCause {
    ShutdownCause::ALL
        .iter()
        .copied()
        .find(|c| c.as_str() == reason)
        .unwrap_or_else(|| {
            log::error!("no ShutdownCause named '{reason}'");
            ShutdownCause::None
        })
}

impl EventSink for QmpEvents {
    fn emit(&self, event: VmEvent) {
        let s = &self.server;
        match event {
            VmEvent::Stop => s.emit(&events::Stop {}),
            VmEvent::Resume => s.emit(&events::Resume {}),
            VmEvent::Reset { guest, reason } => s.emit(&events::Reset {
                guest,
                reason: cause(reason),
            }),
            VmEvent::Shutdown { guest, reason } => s.emit(&events::Shutdown {
                guest,
                reason: cause(reason),
            }),
            VmEvent::Powerdown => s.emit(&events::Powerdown {}),
            VmEvent::Suspend => s.emit(&events::Suspend {}),
            VmEvent::Wakeup => s.emit(&events::Wakeup {}),
            VmEvent::RtcChange { offset } => s.emit(&events::RtcChange {
                offset,
                qom_path: self.rtc_qom_path.clone(),
            }),
            VmEvent::BalloonChange { actual } => s.emit(&events::BalloonChange { actual }),
            VmEvent::BlockIoError(r) => s.emit(&events::BlockIoError {
                device: r.device,
                node_name: Some(r.node_name),
                operation: if r.write {
                    IoOperationType::Write
                } else {
                    IoOperationType::Read
                },
                action: match r.action {
                    ErrorOutcome::Report => BlockErrorAction::Report,
                    ErrorOutcome::Ignore => BlockErrorAction::Ignore,
                    ErrorOutcome::Stop => BlockErrorAction::Stop,
                },
                nospace: Some(r.nospace),
                reason: r.reason,
            }),
            VmEvent::NicRxFilterChanged { name, path } => {
                s.emit(&events::NicRxFilterChanged { name, path })
            }
            VmEvent::DumpCompleted { result, error } => s.emit(&events::DumpCompleted {
                result: super::dump::query_result(result),
                error,
            }),
            VmEvent::BlockWriteThreshold {
                node_name,
                amount_exceeded,
                threshold,
            } => s.emit(&events::BlockWriteThreshold {
                node_name,
                amount_exceeded,
                write_threshold: threshold,
            }),
        }
    }
}
